"""The soak plan: one YAML file describing the migration, its phases, checks and rules.

:func:`load_plan` validates a plan into the typed models below; errors are
:class:`~migration_soak.exceptions.PlanError`. Plans come from ``PLANS_DIR``
(``MIGRATION_SOAK_PLANS_DIR``); the default plan encodes the seed runbook.
Plans: docs/plans.md.

Design notes: docs/design.md#planpy
"""

from __future__ import annotations

import operator
import os
import re
import string
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from migration_soak.exceptions import PlanError

#: The repository root: plans name files relative to it (``include/sql``, ``include/prisma``).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where plan files live; ``MIGRATION_SOAK_PLANS_DIR`` overrides it (relative: to REPO_ROOT).
PLANS_DIR = REPO_ROOT / os.environ.get("MIGRATION_SOAK_PLANS_DIR", "include/plans")
SQL_DIR = REPO_ROOT / "include" / "sql"

#: The longest soak a plan may ask for (a phase's ``end_hour``; the baseline's ``minutes``
#: too), in soak hours: 7 days, seven times the runbook's 24 h. A longer one loaded (a
#: phase ``end_hour`` of 10 000: 600 000 guard ticks, every check sensor deferred for 417
#: days at ``time_scale`` 1, a report chart 18 s to draw). Within it: the guard's ticks
#: stay at most 10 080 a check in real time (one a minute), the charts' hour axis a
#: label every 12 h at most (charts._x_step), and at the trigger form's top
#: ``time_scale`` (100 000) the week still lasts 6 wall seconds (docs/plans.md).
MAX_SOAK_HOURS = 168
#: The most readings a check may be asked for by the guard over the soak, or by the
#: baseline: one a minute over the longest soak (``MAX_SOAK_HOURS``), 10 080.
MAX_READINGS = MAX_SOAK_HOURS * 60


def _readings_bound(count: float, every: float, over: str) -> None:
    """``ValueError`` when a cadence of ``every`` minutes asks ``count`` readings (more than
    :data:`MAX_READINGS`) ``over`` a span, naming the field and value."""
    if count > MAX_READINGS + 1e-9:
        raise ValueError(f"every_minutes {every:g} gives {count:,.0f} readings a check over {over}; at most "
                         f"{MAX_READINGS:,} (one a minute over the longest soak, {MAX_SOAK_HOURS} h): a longer "
                         "cadence, please")


#: The smallest ``guard.min_wall_seconds``: a counter reading's window lasts at least
#: ``sources.openmetrics.MIN_WINDOW_S`` (1 s; its reading sleeps until then), so guard ticks
#: closer in wall time cannot all be read: the guard measures the latest due tick and the
#: ones it passed over count as missed readings (``judge.guard_missed``).
MIN_GUARD_WALL_SECONDS = 1.0

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}

Unit = Literal["count", "ratio", "ms", "bytes", "seconds", "up", "rows", "per_minute"]


class _Model(BaseModel):
    # .inf / .nan in YAML are floats: a level of .inf never breaches, .nan compares false
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """YAML's ``true`` is not a number: pydantic would read ``lock_timeout_s: true`` as 1 s."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                    raise ValueError(f"{name} must be a number, got {str(value).lower()}")
        return data


def _numeric(annotation: Any) -> bool:
    """``int``, ``float`` or a union holding one of them (``float | None``, ``float | dict``)."""
    return annotation in (int, float) or any(a in (int, float) for a in getattr(annotation, "__args__", ()))


class Condition(_Model):
    """A comparison of an observed value with a constant, e.g. ``{op: "<", value: 0.001}``.

    ``value`` is in the check's unit (a ratio is 0..1, not a percentage).
    """

    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float

    def holds(self, observed: float) -> bool:
        """True when ``observed <op> value``."""
        return _OPS[self.op](observed, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def _checked_sql(text: str, where: str) -> str:
    """``text`` parsed by PostgreSQL's grammar (pglast): SQL that would end the soak's
    read-only transaction (COMMIT...), change its settings or leave session state on a
    pooled connection is refused, naming ``where`` and the statement (sources/sql_guard.py
    says what and why; run_readonly refuses it again before running it); so is SQL that
    is not a read (``sql_guard.check_reads``: a write, DDL, ``FOR UPDATE``, ``nextval()``...,
    which loaded and made every reading an ``error``). ``ValueError``."""
    from migration_soak.sources.sql_guard import UnsafeSql, check, check_reads

    try:
        found = check(text)
        check_reads(text)
    except UnsafeSql as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not found:
        raise ValueError(f"{where}: holds no SQL statement")
    return text


def _checked_sql_file(name: str) -> str:
    """``name``, a file under ``include/sql/`` that exists, reads and passes ``_checked_sql``;
    else ``ValueError`` naming the file."""
    path = SQL_DIR / name
    if not path.is_file():
        raise ValueError(f"no such file include/sql/{name}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"include/sql/{name}: cannot be read: {exc}") from None
    _checked_sql(text, f"include/sql/{name}")
    return name


def _require_explain_analyze(name: str) -> None:
    """``measure: explain_ms`` reads the "Execution Time" line of an ``EXPLAIN ANALYZE`` in
    text format (sources/sql.py): on a file whose last statement is anything else every
    reading was an error, and a GO on the check could never be met. ``ValueError`` naming the
    file, the statement and what it lacks (``name`` already passed ``_checked_sql_file``)."""
    from migration_soak.sources.sql_guard import statements

    found = statements((SQL_DIR / name).read_text(encoding="utf-8"))
    last = found[-1]
    where = f"include/sql/{name}'s last {last.describe(len(found))}"
    if type(last.node).__name__ != "ExplainStmt":
        why = "is no EXPLAIN"
    else:
        options = {o.defname.lower(): o.arg for o in (last.node.options or [])}

        def value(arg: Any) -> str:  # an option's argument as written: none is "true"
            return "true" if arg is None else str(getattr(arg, "sval", getattr(arg, "boolval", arg))).lower()

        if "analyze" not in options or value(options["analyze"]) not in ("true", "on", "1", "yes", "t", "y"):
            why = "does not ANALYZE: a plan without it has no 'Execution Time'"
        elif "format" in options and value(options["format"]) != "text":
            why = f"is in FORMAT {value(options['format']).upper()}: the reading parses the text format"
        else:
            return
    raise ValueError(f"measure 'explain_ms' reads the 'Execution Time' of an EXPLAIN ANALYZE: {where} {why}")


class SqlSource(_Model):
    """A read-only query of the staging database; the value is one cell of the first row.

    ``sql`` is a file under ``include/sql/``. ``column`` picks the cell (default: the
    first column); ``measure: rows`` takes the row count instead (seed query 2 expects
    "0 rows"); ``measure: explain_ms`` runs an ``EXPLAIN ANALYZE`` file and takes its
    "Execution Time" in ms (seed query 3); ``measure: ratio`` divides two cells. With
    ``window_minutes`` both cells count events of the last ``window_minutes`` of wall time
    (e.g. executions in the last hour): the ratio is then a rate estimated from those
    counts and judged by their 95 % limits, like a request ratio (docs/verdict.md); without
    it the ratio is a state taken as exact (e.g. connections in use over the maximum). A
    ``cell`` with ``window_minutes`` counts the events of that window ("executions in the
    last hour"): its readings carry the window, so the report says which soak hours none
    of them read (judge.window_coverage).
    """

    kind: Literal["sql"]
    sql: str
    column: str | None = None
    measure: Literal["cell", "rows", "explain_ms", "ratio"] = "cell"
    numerator: str | None = None
    denominator: str | None = None
    window_minutes: float | None = Field(default=None, gt=0, description="the counted events' window (wall minutes)")

    @field_validator("sql")
    @classmethod
    def _file_exists(cls, name: str) -> str:
        return _checked_sql_file(name)

    @model_validator(mode="after")
    def _ratio_columns(self):
        if self.measure == "explain_ms":
            _require_explain_analyze(self.sql)
        if self.measure == "ratio" and not (self.numerator and self.denominator):
            raise ValueError("measure 'ratio' needs 'numerator' and 'denominator' column names")
        if self.window_minutes is not None and self.measure not in ("ratio", "cell"):
            raise ValueError(f"window_minutes {self.window_minutes:g}: only a count of events (a cell) or a ratio of "
                             f"two has a window (measure is {self.measure!r})")
        return self


class HttpHealthSource(_Model):
    """``GET <endpoint>`` on an HTTP connection; value 1 when the status is ``expect_status``, else 0."""

    kind: Literal["http"]
    connection: str
    endpoint: str = "/health"
    expect_status: int = 200


class OpenMetricsSource(_Model):
    """A scrape of a Prometheus text-format page (``/metrics``), compared with the previous scrape.

    - ``counter_ratio``: increase of ``metric`` samples matching ``numerator`` over the
      increase of all samples matching ``match`` (ratio 0..1), e.g. the share of auth
      requests answered 5xx.
    - ``histogram_quantile``: the ``quantile`` of the histogram ``metric`` (base name) over
      the buckets' increase, like PromQL's ``histogram_quantile``, in ms.
    - ``gauge``: the current value of ``metric`` summed over matching samples.
    - ``counter_rate``: increase of matching ``metric`` samples per minute of wall time
      (the real load, whatever the soak clock's speed).

    ``match`` and ``numerator`` map label names to regular expressions (full match).
    """

    kind: Literal["openmetrics"]
    connection: str
    path: str = "/metrics"
    measure: Literal["counter_ratio", "histogram_quantile", "gauge", "counter_rate"]
    metric: str
    match: dict[str, str] = Field(default_factory=dict)
    numerator: dict[str, str] = Field(default_factory=dict)
    quantile: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("match", "numerator")
    @classmethod
    def _regexes_compile(cls, selectors: dict[str, str]) -> dict[str, str]:
        for label, pattern in selectors.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"label {label!r}: bad regular expression {pattern!r}: {exc}") from None
        return selectors

    @model_validator(mode="after")
    def _measure_fields(self):
        if self.measure == "histogram_quantile" and self.quantile is None:
            raise ValueError("measure 'histogram_quantile' needs 'quantile' (0..1 exclusive)")
        if self.measure == "counter_ratio" and not self.numerator:
            raise ValueError("measure 'counter_ratio' needs a 'numerator' label selector")
        return self


class PrometheusSource(_Model):
    """A PromQL instant query on a Prometheus server's HTTP API (``/api/v1/query``).

    The value is the single series' value (``aggregate`` folds several: ``sum``, ``max``,
    ``min``, ``avg``); an empty result is an error. ``scale`` multiplies the value (e.g.
    1000 to turn seconds into ms).
    """

    kind: Literal["prometheus"]
    connection: str
    query: str
    aggregate: Literal["one", "sum", "max", "min", "avg"] = "one"
    scale: float = 1.0


class HttpLogs(_Model):
    """An HTTP log API: ``GET endpoint`` returns JSON; ``items`` is the dotted path of the
    list of entries, ``where`` keeps entries whose fields equal the given values."""

    connection: str
    endpoint: str
    items: str = "logs"
    where: dict[str, str] = Field(default_factory=dict)
    text_field: str = "message"


class LogsSource(_Model):
    """Lines of a log that match ``patterns`` (case-insensitive regexes), minus ``exclude``.

    Exactly one reader: ``file`` (new lines since the previous observation; a file that
    shrank was rotated and is read from the start), ``command`` (an argv, no shell: its
    stdout is the log, e.g. the last 500 lines), or ``http`` (a JSON log API). The value
    is the count of matching lines (seed "Logs a Revisar"); with ``per_minute`` (a regex
    whose one group captures a line's minute, e.g. ``^(\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d)``)
    it is the most matching lines in one minute (seed Dashboard 2 "Slow Queries Count < 5
    por minuto"), matching lines without a minute added to that busiest minute.
    """

    kind: Literal["logs"]
    file: str | None = None
    command: list[str] | None = None
    http: HttpLogs | None = None
    patterns: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    per_minute: str | None = Field(default=None, description="regex; its one group captures a log line's minute")

    @model_validator(mode="after")
    def _one_reader(self):
        readers = [r for r in (self.file, self.command, self.http) if r]
        if len(readers) != 1:
            raise ValueError("give exactly one of 'file', 'command', 'http'")
        for pattern in self.patterns + self.exclude + ([self.per_minute] if self.per_minute is not None else []):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
        if self.per_minute is not None and re.compile(self.per_minute).groups != 1:
            raise ValueError(f"per_minute {self.per_minute!r} must have exactly one group (the line's minute)")
        return self


#: A PostgreSQL name as the plan may give it: not empty, no NUL, at most 63 characters
#: (NAMEDATALEN - 1); the code quotes it as an identifier (double quotes doubled), so any
#: case and character work and a name never reaches the SQL as SQL.
Identifier = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[^\x00]+$")]


def _table_name(value: str) -> str:
    """A plan's table name as ``pgconn.split_table`` reads it (``table`` or ``schema.table``,
    no empty part): ``migration.table: ''`` was refused by a cross-field rule naming no
    field, and ``public.`` loaded. ``ValueError`` with split_table's message."""
    from migration_soak.pgconn import split_table

    split_table(value)
    return value


#: A table name of the plan (``migration.table``, a ``fingerprint`` check's ``table``, a
#: ``backup`` check's ``tables``), checked at load (:func:`_table_name`).
TableName = Annotated[str, AfterValidator(_table_name)]


class AuthorizerSyncSource(_Model):
    """Sampled ``<table>.<column>`` ids (default ``users."authorizerId"``) that the
    Authorizer does not know.

    ``sample`` ids are drawn from the staging database's ``public.<table>`` (``pgconn.PLAN_SCHEMA``,
    not the role's search path: the table the migration changes): a
    ``TABLESAMPLE SYSTEM`` draw of about two pages per id, or ``ORDER BY random()`` over
    the whole table when that draw yields fewer (small tables); each is looked up with ``GET endpoint`` (``{id}``
    replaced) on the Authorizer's admin API, the connection's password being the admin
    token. The value is the count not found (seed: "Inconsistencias en la sincronización
    con Authorizer").
    """

    kind: Literal["authorizer_sync"]
    connection: str
    endpoint: str = "/admin/users/{id}"
    sample: int = Field(default=50, ge=1, le=10_000)
    table: Identifier = "users"
    column: Identifier = "authorizerId"

    @field_validator("endpoint")
    @classmethod
    def _one_id(cls, v: str) -> str:
        """Exactly one ``{id}`` and no other field: without it every id would be "looked up"
        at the same URL (a list endpoint answers 200: nothing unknown, a GO without one lookup)."""
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"endpoint {v!r} is not a URL template ({exc})") from None
        if fields != ["id"]:
            raise ValueError(f"endpoint {v!r} must hold '{{id}}' exactly once and no other field "
                             f"(it holds {fields or 'none'})")
        return v


class FingerprintSource(_Model):
    """Rows or values of a table lost since the pre-migration fingerprint (data-loss check).

    Compares the table now with the fingerprint taken before the migration: rows that
    existed then (by ``key``) and are gone, and non-null values of ``columns`` that became
    null. The value is the number of lost rows plus lost values.
    """

    kind: Literal["fingerprint"]
    table: TableName
    key: Identifier = "id"
    columns: list[Identifier] = Field(min_length=1)


class BackupSource(_Model):
    """An incremental backup of the affected ``tables`` (seed "Backup incremental creado"):
    the rows changed since the previous backup of the run and the key lists, or the count
    proving nothing was deleted (``increment.py``; each table needs a one-column primary key), read back whole; value 1
    when it verified (a failure is an ``error`` observation)."""

    kind: Literal["backup"]
    tables: list[TableName] = Field(min_length=1)


Source = Annotated[
    Union[SqlSource, HttpHealthSource, OpenMetricsSource, PrometheusSource, LogsSource, AuthorizerSyncSource,
          FingerprintSource, BackupSource],
    Field(discriminator="kind"),
]


class Check(_Model):
    """One measurement taken at every tick of the phases it belongs to.

    ``expect`` is the seed's "valor esperado": met → ``pass``. ``no_go`` is the breach
    that stops the soak and rolls back: met → ``fail``. Neither → ``warn``. A
    measurement that cannot be taken is ``error``, never ``pass``.
    """

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
    title: str
    unit: Unit
    source: Source
    expect: Condition
    no_go: Condition | None = None
    phases: list[str] | Literal["all"] = "all"
    rule: str = Field(description="Where the rule comes from: the seed section and its wording.")

    @model_validator(mode="after")
    def _levels_apart(self):
        # status_of reads no_go first: a reading meeting both would be a NO-GO "as expected".
        if self.no_go is not None:
            e, n = self.expect.value, self.no_go.value
            step = max(abs(e), abs(n), 1.0) * 1e-9
            both = next((v for v in (e, n, (e + n) / 2, e - step, e + step, n - step, n + step, min(e, n) - 1e9,
                                     max(e, n) + 1e9) if self.expect.holds(v) and self.no_go.holds(v)), None)
            if both is not None:
                raise ValueError(f"expect {self.expect} and no_go {self.no_go} both hold for {both:g}: a reading "
                                 "would be as expected and a NO-GO at once")
        return self

    @model_validator(mode="after")
    def _rate_unit(self):
        # A count of lines since the previous reading is not a rate: compared with a
        # "per minute" level it would read hours of log as one minute.
        if isinstance(self.source, LogsSource) and (self.source.per_minute is not None) != (self.unit == "per_minute"):
            raise ValueError(f"unit {self.unit!r}: a logs source gives 'per_minute' only with source.per_minute "
                             "(the most matching lines in one minute), and 'count' or 'rows' without it")
        return self


class Phase(_Model):
    """A window of soak time after hour 0 with a fixed check cadence.

    Ticks fall at ``start + k * every`` for k = 1, 2, ... up to and including ``end``
    (the seed's "Horas 1-2: cada 15 minutos" gives ticks at 0:15 .. 2:00).
    """

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")]
    start_hour: float = Field(ge=0)
    end_hour: float = Field(gt=0)
    # one Airflow check task per check and tick: a faster cadence is the guard's job
    every_minutes: float = Field(ge=1)

    @model_validator(mode="after")
    def _window(self):
        if self.end_hour <= self.start_hour:
            raise ValueError(f"end_hour {self.end_hour:g} must be after start_hour {self.start_hour:g}")
        if self.end_hour > MAX_SOAK_HOURS:
            raise ValueError(f"end_hour {self.end_hour:g} h is past the longest soak a plan may ask for, "
                             f"{MAX_SOAK_HOURS} h ({MAX_SOAK_HOURS // 24} days): end the last phase by then "
                             "(docs/plans.md, 'How long a soak may be')")
        if self.every_minutes > (self.end_hour - self.start_hour) * 60:
            raise ValueError(f"every_minutes {self.every_minutes:g} is longer than the phase")
        return self

    def tick_offsets(self) -> list[timedelta]:
        """Soak-time offsets from hour 0 of this phase's ticks, in order."""
        offsets, k = [], 1
        every = timedelta(minutes=self.every_minutes)
        start, end = timedelta(hours=self.start_hour), timedelta(hours=self.end_hour)
        while start + k * every <= end + timedelta(microseconds=1):
            offsets.append(start + k * every)
            k += 1
        return offsets


class ThresholdRule(_Model):
    """Each observation compared with ``value``. As NO-GO: breached by any observation that
    meets it. As GO: met when every observation meets it."""

    kind: Literal["threshold"]
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


class SustainedRule(_Model):
    """The condition held on consecutive observations spanning at least ``minutes`` of soak
    time, and on at least two of them ("Error rate > 1% sostenido por > 5 minutos")."""

    kind: Literal["sustained"]
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float
    minutes: float = Field(gt=0)


class WindowCountRule(_Model):
    """The sum of the observed counts inside a sliding window of ``minutes`` of soak time
    (``None``: the whole soak) compared with ``value`` ("> 5 errores críticos en cualquier
    hora"; "0 errores críticos durante 24 horas")."""

    kind: Literal["window_count"]
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float
    minutes: float | None = Field(default=None, gt=0)


#: Largest relative level a plan may state (1000 %): a bigger one is a percentage written
#: as a ratio (``value: 30`` meant as 30 %), a rule that would never fire.
_RELATIVE_MAX = 10.0


def _relative_level(value: float) -> float:
    """A change as a ratio (0.3 = +30 %): within -1..``_RELATIVE_MAX``; else ``ValueError``
    naming the value (a reading never falls below -100 %)."""
    if value > _RELATIVE_MAX:
        raise ValueError(f"value {value:g} is a change as a ratio (0.3 = 30 %): write {value / 100:g} for "
                         f"{value:g} %; levels above {_RELATIVE_MAX:g} ({_RELATIVE_MAX:.0%}) are refused")
    if value < -1:
        raise ValueError(f"value {value:g} is a change below -100 %: no reading can fall that far")
    return value


def _can_fall(rule: Any) -> Any:
    """A relative rule ``< -1`` never holds (a reading would have to fall below 0);
    ``ValueError`` naming it."""
    if rule.op == "<" and rule.value <= -1:
        raise ValueError(f"< {rule.value:g} can never hold: a change below -100 % needs a reading below 0")
    return rule


class BaselineRule(_Model):
    """Degradation relative to the baseline measured before the migration: ``(m - b) / b``
    over the last ``window_minutes`` of soak time ("degradación > 10%" / "> 30%"): for
    quantile readings that record their histogram buckets, ``m`` is the quantile of the
    window's requests and ``b`` the baseline's (buckets pooled; no change while ``m`` is in
    ``b``'s bucket), else the medians of the readings (``rules.Baseline``). A change smaller than
    ``min_delta`` (in the check's unit) is noise and never counts as degradation: one
    number for every check, or one per check id (``{login_p95: 50, auth_query_time: 2}``)
    when the criterion reads checks of different scales."""

    kind: Literal["baseline"]
    op: Literal["<", "<=", ">", ">="]
    value: float = Field(description="ratio 0..1 (0.3 = 30 %)")
    window_minutes: float = Field(default=60, gt=0)
    min_window_wall_s: float = Field(
        default=120, ge=0,
        description="wall seconds a window covers at least: on a compressed clock (time_scale 300: 60 "
                    "soak-min are 12 wall s) the window stretches to this many wall seconds (600 soak-min "
                    "at 300), so a few busy seconds of the machine are not a degraded hour; in real time "
                    "window_minutes is longer and this does nothing")
    min_delta: float | dict[str, Annotated[float, Field(ge=0)]] = Field(default=0)

    @field_validator("min_delta", mode="before")
    @classmethod
    def _numbers_per_check(cls, value: Any) -> Any:
        if isinstance(value, dict):
            flags = [k for k, v in value.items() if isinstance(v, bool)]
            if flags:
                raise ValueError(f"the floor of {flags[0]} must be a number, got {str(value[flags[0]]).lower()}")
        return value

    @field_validator("min_delta")
    @classmethod
    def _non_negative(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"must be >= 0, got {value:g}")
        return value

    _relative = field_validator("value")(classmethod(lambda cls, v: _relative_level(v)))
    _falls = model_validator(mode="after")(lambda self: _can_fall(self))

    def floor(self, check_id: str) -> float:
        """The noise floor of ``check_id`` in its unit (0 for a check the mapping lacks)."""
        return self.min_delta.get(check_id, 0.0) if isinstance(self.min_delta, dict) else self.min_delta


class GrowthRule(_Model):
    """Growth rate per ``per_minutes`` of soak time between each observation and the one
    at least ``per_minutes`` before it, as a ratio ("crecimiento > 20% por hora"); with
    ``minutes`` set it must hold on consecutive observations spanning that long
    ("sostenido")."""

    kind: Literal["growth"]
    op: Literal["<", "<=", ">", ">="]
    value: float = Field(description="ratio per per_minutes (0.2 = 20 %)")
    per_minutes: float = Field(default=60, gt=0)
    minutes: float | None = Field(default=None, gt=0)

    _relative = field_validator("value")(classmethod(lambda cls, v: _relative_level(v)))
    _falls = model_validator(mode="after")(lambda self: _can_fall(self))


Rule = Annotated[Union[ThresholdRule, SustainedRule, WindowCountRule, BaselineRule, GrowthRule],
                 Field(discriminator="kind")]


class Criterion(_Model):
    """A GO or NO-GO criterion of the seed's "Criterios de Éxito", stated literally.

    ``checks``: the check(s) whose observations it reads (each judged on its own; a NO-GO
    breached by any, a GO met only when met by all). ``text`` is the seed's wording.
    ``min_coverage``: a GO criterion's own coverage bar, at least ``verdict.min_coverage``
    (one below it, or one on a NO-GO criterion, is refused: ``_require_one_evidence_bar``).
    """

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
    text: str
    checks: list[str] = Field(min_length=1)
    rule: Rule
    min_coverage: float | None = Field(default=None, ge=0.5, le=1)

    @model_validator(mode="after")
    def _floors_per_check(self):
        dup = _repeated(self.checks)
        if dup:
            raise ValueError(f"checks repeat: {dup}")
        _require_floor_per_check(self.rule, self.checks)
        return self


class HumanGate(_Model):
    """A GO criterion only a person can judge (QA sign-off, support tickets): asked in the
    Airflow UI before GO when the run requires sign-off."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
    text: str = Field(min_length=1)
    why: str = Field(min_length=1)


def _distinct_checks(ids: list[str]) -> list[str]:
    """A section's check list without repeats: a check named twice in ``baseline.checks`` made
    building the DAG raise DuplicateTaskIdFound ('baseline.login_p95'), hiding every plan's
    DAG (the guard reads its checks as a set: a repeat there is a typo). ``ValueError``
    naming the repeated ids."""
    dup = _repeated(ids)
    if dup:
        raise ValueError(f"{dup} named twice")
    return ids


class Guard(_Model):
    """Checks measured at a short cadence for the whole soak, in parallel with the phases
    (seed "Alertas Críticas"), by a trigger in Airflow's triggerer (docs/guard.md): every
    reading is judged against the NO-GO criteria and alerts at once, so a breach stops the
    soak within one guard interval of its rule's window.

    ``every_minutes``: the cadence in soak minutes. A ``sustained`` rule is judged only on
    readings at most half its window apart, so keep it at most half the plan's shortest
    alert or NO-GO window (the default, 1 minute, covers the runbook's 2-minute windows).
    ``min_wall_seconds``: the shortest wall-clock interval between two guard readings, a
    floor for compressed clocks (at ``time_scale`` 300 one soak minute is 0.2 s): the
    cadence used is ``max(every_minutes, min_wall_seconds * time_scale / 60)`` soak
    minutes, so a fast clock never floods the store or the sources; windows shorter than
    twice that cadence are then not judged by the guard (docs/guard.md). At ``time_scale``
    1 it changes nothing while it is at most ``every_minutes`` (in seconds); above, it slows
    the real-time guard too, so it is held to half the shortest sustained NO-GO window
    (``_require_judgeable_windows``) and to ``MAX_SOAK_HOURS``. At least ``MIN_GUARD_WALL_SECONDS`` (1 s): 0 loaded and asked,
    at ``time_scale`` 300 with ``every_minutes`` 1, for a reading every 0.2 s of wall time
    (at 100 000, every 0.6 ms), faster than a counter reading can be taken (its window
    lasts at least 1 s), so most of the guard's ticks went unread. ``checks``: cheap checks only (a scrape, an index-only query, a
    log tail): the triggerer measures them every interval.
    """

    every_minutes: float = Field(default=1.0, gt=0)
    min_wall_seconds: float = Field(default=3.0)
    checks: list[str] = Field(min_length=1)

    @field_validator("checks")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return _distinct_checks(value)

    @field_validator("min_wall_seconds")
    @classmethod
    def _readable_floor(cls, value: float) -> float:
        if not value >= MIN_GUARD_WALL_SECONDS:
            raise ValueError(f"min_wall_seconds {value:g} would ask the guard for readings closer in wall time than "
                             f"it can take them (a counter reading's window lasts at least {MIN_GUARD_WALL_SECONDS:g} "
                             f"s; at time_scale 300 and every_minutes 1 it would be a reading every "
                             f"{max(value, 0.2):g} s): at least {MIN_GUARD_WALL_SECONDS:g}")
        if value > MAX_SOAK_HOURS * 3600:
            # 1e12 loaded, and the run's guard and judge then failed on clock.guard_every's
            # timedelta at time_scale 300 ("OverflowError: Python int too large to convert to C int")
            raise ValueError(f"min_wall_seconds {value:g} is longer than the longest soak a plan may ask for, "
                             f"{MAX_SOAK_HOURS} h ({MAX_SOAK_HOURS * 3600:,} s): the guard would not read once; "
                             f"at most {MAX_SOAK_HOURS * 3600:,}")
        return value


class Alert(_Model):
    """An alert of the seed's "Alertas Críticas": a rule on a check that posts to Slack when
    it fires (once until it clears). Alerts inform; NO-GO criteria decide."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
    text: str
    checks: list[str] = Field(min_length=1)
    rule: Rule

    @model_validator(mode="after")
    def _floors_per_check(self):
        _require_floor_per_check(self.rule, self.checks)
        return self


class Baseline(_Model):
    """The checks measured before the migration over ``minutes`` of soak time, one
    observation every ``every_minutes``; relative rules compare against their median."""

    minutes: float = Field(gt=0)
    every_minutes: float = Field(gt=0)
    checks: list[str] = Field(min_length=1)

    @field_validator("checks")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return _distinct_checks(value)

    @model_validator(mode="after")
    def _not_longer_than_a_soak(self):
        if self.minutes > MAX_SOAK_HOURS * 60:
            raise ValueError(f"minutes {self.minutes:g} ({self.minutes / 60:g} h) is longer than the longest soak a "
                             f"plan may ask for, {MAX_SOAK_HOURS} h ({MAX_SOAK_HOURS // 24} days): the migration "
                             "would wait that long behind it")
        return self

    @model_validator(mode="after")
    def _one_reading_at_least(self):
        if self.every_minutes > self.minutes:
            raise ValueError(f"every_minutes {self.every_minutes:g} is longer than minutes {self.minutes:g}: "
                             "no baseline reading would be taken")
        _readings_bound(self.minutes / self.every_minutes, self.every_minutes, f"its {self.minutes:g} minutes")
        return self

    def tick_offsets(self) -> list[timedelta]:
        """Offsets of the baseline ticks from the baseline's start."""
        n = int(self.minutes // self.every_minutes)
        return [timedelta(minutes=self.every_minutes * k) for k in range(1, n + 1)]


class Migration(_Model):
    """The migration under soak and how to deploy and undo it.

    Paths are relative to the repository root unless absolute.

    Lock safety (issue 9): every DDL transaction (the forward script, the rollback's down
    SQL) and every rollback copy batch runs with ``lock_timeout = lock_timeout_s``, so
    while it waits for its lock the application's queries on the table queue behind it
    for at most that long. A try that times out (SQLSTATE 55P03) rolled back whole and is
    retried up to ``lock_retries`` more times, after 0.5, 1, 2, 4, ... s (at most 30 s);
    each try is recorded in the run's events. Only when every try timed out does the
    step fail (the forward migration's ledger row is then failed: P3018, P3009 on rerun).
    """

    name: str
    #: who applies the migration: ``ledger`` (``migrate.LedgerBackend``, Prisma's deploy
    #: semantics in-process) or ``prisma_cli`` (``npx prisma migrate deploy`` in
    #: ``prisma_project``; needs a project whose schema engine supports deploy)
    backend: Literal["ledger", "prisma_cli"] = "ledger"
    migrations_dir: str
    down_sql: str
    table: TableName = "users"
    key: Identifier = "id"
    dropped_columns: list[Identifier] = Field(min_length=1)
    #: at most 2147483 s: PostgreSQL's ``lock_timeout`` is an int of milliseconds (max
    #: 2147483647, PostgreSQL docs "lock_timeout"); a larger value passed validation and
    #: failed at the first ``set_config`` on staging
    lock_timeout_s: float = Field(default=3, gt=0, le=2147483, description="seconds the DDL may wait for a lock")
    #: how many more times a DDL transaction or copy batch that hit ``lock_timeout_s`` is
    #: tried (0: fail at the first lock timeout); the worst case adds
    #: ``(lock_retries + 1) * lock_timeout_s`` plus the backoffs to the step
    lock_retries: int = Field(default=5, ge=0, le=20, description="retries of a DDL transaction after a lock timeout")
    #: how the rollback restores the dropped columns' values (rollback step 2; both re-add
    #: the columns with the down SQL first and keep values written after the re-add):
    #: ``copy`` (``rollback.restore_columns``, the default) updates the rows in place in
    #: batches of row-locked keys, the table stays the same object; ``rebuild``
    #: (``rebuild.rebuild_columns``) writes a new table in one pass, catches up the
    #: application's writes through a trigger and swaps it in under a short ACCESS
    #: EXCLUSIVE (much less WAL and time on a large table, but the table's OID changes and
    #: twice its disk is needed meanwhile); it refuses, before anything changes, a table
    #: with views, rules, row-level security, publications, inheritance or partitions, other
    #: triggers, owned sequences, identity or generated columns, column grants, a
    #: tablespace or UNLOGGED (docs/design.md#rebuildpy)
    rollback_method: Literal["copy", "rebuild"] = Field(
        default="copy", description="copy: batched UPDATE in place; rebuild: new table, trigger catch-up, swap")
    #: the user's Prisma project folder (holds ``prisma.config.ts`` or ``package.json``
    #: with the CLI installed). When set, the real ``npx prisma migrate status`` runs there
    #: after the deploy (it must say the schema is up to date) and after the rollback (it
    #: must list the migration as pending): seed "Hora 0" step 3 and rollback step 3.
    prisma_project: str | None = None
    prisma_timeout_s: float = Field(default=300, gt=0, description="seconds one Prisma CLI run may take")

    @field_validator("dropped_columns")
    @classmethod
    def _distinct_columns(cls, value: list[str]) -> list[str]:
        # check_drops compares membership, so a repeat passed preflight; the rollback's
        # health (runbook.health_ok) then never matched the columns back with the list
        dup = _repeated(value)
        if dup:
            raise ValueError(f"{dup} listed twice: each column is dropped, backed up and restored once")
        return value

    @field_validator("down_sql")
    @classmethod
    def _down_sql_readable(cls, value: str) -> str:
        # Read at plan load: otherwise the first reader can be the NO-GO rollback, after
        # the columns were dropped (preflight then parses it: runbook.down_sql).
        path = Path(value) if Path(value).is_absolute() else REPO_ROOT / value
        if not path.is_file():
            raise ValueError(f"no such file {value!r}")
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{value!r} cannot be read: {exc}") from None
        return value

    @field_validator("migrations_dir")
    @classmethod
    def _migrations_dir_exists(cls, value: str) -> str:
        # First read by preflight, after a trigger ("migrations folder /abs/path does not
        # exist", no field named); the plan's migration in it: _require_migration_in_folder.
        if not (Path(value) if Path(value).is_absolute() else REPO_ROOT / value).is_dir():
            raise ValueError(f"no such folder {value!r}")
        return value

    @field_validator("prisma_project")
    @classmethod
    def _prisma_project_exists(cls, value: str | None) -> str | None:
        # First used by `migrate status` after the deploy: a wrong folder failed after the DDL.
        if value is not None and not (Path(value) if Path(value).is_absolute() else REPO_ROOT / value).is_dir():
            raise ValueError(f"no such folder {value!r}")
        return value

    @model_validator(mode="after")
    def _cli_needs_a_project(self):
        if self.backend == "prisma_cli" and not self.prisma_project:
            raise ValueError("backend 'prisma_cli' needs prisma_project (the folder the CLI runs in)")
        return self


class Connections(_Model):
    """Airflow connection ids the soak uses."""

    #: the staging database for the checks: may go through a transaction pooler
    staging: str = "soak_staging"
    #: the same database reached directly (Prisma's ``directUrl``): backup, migrate,
    #: verify, rollback and the ledger use it; ``None``: ``staging``, which preflight then
    #: requires to be direct (``pooler.require_direct``)
    staging_direct: str | None = None
    store: str = "soak_store"
    gateway: str = "soak_gateway"
    authorizer: str = "soak_authorizer"
    slack: str = "soak_slack"
    #: the object store of ``backup_location`` when it is a URL (e.g. ``aws_default`` for
    #: ``s3://``); ``None``: the filesystem's default credentials. Unused for local paths.
    backup_storage: str | None = None


class Restart(_Model):
    """How to restart the applications (seed "Aplicaciones reiniciadas", rollback step 4).

    An HTTP call on a connection; the demo's gateway reloads itself on ``POST /admin/reload``.
    """

    connection: str
    endpoint: str
    method: Literal["POST", "GET", "PUT"] = "POST"


class Verdict(_Model):
    """How observations become a verdict.

    ``min_coverage``: the share (0..1) of scheduled observations of each check that must
    hold a measured value (``error`` and missing ones do not count) for a GO.
    ``on_inconclusive``: what the DAG does when the verdict is neither GO nor NO-GO:
    ``ask`` a person in the Airflow UI (after ``human_timeout_hours`` without an answer,
    the safe default: roll back), or decide unattended (``rollback`` / ``go``; an
    unattended ``go`` keeps the migration but is never reported as GO). A trigger param
    overrides it per run.
    ``on_sign_off_rejected``: when a required QA sign-off is rejected or not given within
    ``sign_off_timeout_hours``, ``rollback`` (default) or ``keep`` the migration; either way
    the run is not a GO (docs/verdict.md).
    ``sign_off_by``: the Airflow user ids (as the auth manager names them) who may answer
    the QA sign-off ("Equipo de QA aprueba testing manual"); empty: any user who may act on
    the run's tasks. ``decided_by``: the same for the INCONCLUSIVE question.
    """

    # below half the scheduled readings a GO would rest on a fraction of the soak
    min_coverage: float = Field(default=0.9, ge=0.5, le=1)
    on_inconclusive: Literal["ask", "rollback", "go"] = "ask"
    human_timeout_hours: float = Field(default=4, gt=0)
    on_sign_off_rejected: Literal["rollback", "keep"] = "rollback"
    sign_off_timeout_hours: float = Field(default=24, gt=0)
    sign_off_by: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    decided_by: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _answered_within_a_week(self):
        # the HITL tasks wait this long (builder: timedelta(hours=...), which overflows past ~1e11 h)
        for name in ("human_timeout_hours", "sign_off_timeout_hours"):
            hours = getattr(self, name)
            if hours > MAX_SOAK_HOURS:
                raise ValueError(f"{name} {hours:g} h is longer than the longest wait for an answer a plan may ask "
                                 f"for, {MAX_SOAK_HOURS} h ({MAX_SOAK_HOURS // 24} days): the run's "
                                 "Required action would stay open that long")
        return self


class LintAccept(_Model):
    """A squawk finding the plan accepts, and why (``lint.py``, docs/lint.md).

    ``rule``: a squawk rule name (``ban-drop-column``); when the squawk binary is installed
    the name is checked against it, so a typo is a plan error, not a silent miss.
    ``why``: the reason, required and non-empty; the report shows it next to every finding
    it accepts. ``migration``: accept the rule only in that migration's SQL (its folder
    name); ``None``: in every migration linted.
    """

    rule: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    why: str
    migration: str | None = None

    @field_validator("why")
    @classmethod
    def _why_given(cls, why: str) -> str:
        if not why.strip():
            raise ValueError("an accepted finding needs a reason: 'why' is empty")
        return why

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, rule: str) -> str:
        from migration_soak.lint import rule_problem

        problem = rule_problem(rule)
        if problem:
            raise ValueError(problem)
        return rule


class Lint(_Model):
    """Migration lint with squawk at preflight (``lint.py``): findings the plan does not
    accept fail the run before anything touches staging.

    ``accept``: the findings the plan accepts, each with its reason.
    ``session_settings_count``: whether the soak's own session settings count for
    squawk's ``require-lock-timeout``. They do with either backend: ``LedgerBackend``
    sets ``lock_timeout = migration.lock_timeout_s`` on its DDL transaction, and the
    Prisma CLI's connections get it as a startup option (``prisma_cli.py``), so those
    findings are accepted with that reason (and preflight refuses a script's own ``SET
    lock_timeout``, which would replace it). Not when this is false.
    No backend sets ``statement_timeout``: ``require-statement-timeout`` is never covered
    by session settings; accept it with a reason or set it in the migration.
    ``assume_in_transaction``: lint each script as run inside one transaction (squawk's
    ``--assume-in-transaction``): the ledger backend runs a script as one multi-statement
    query, i.e. one implicit transaction, as ``prisma migrate deploy`` does (``migrate.py``).
    ``pg_version``: the staging server's PostgreSQL version for squawk (``"18"``);
    ``None``: squawk's default. ``timeout_s``: seconds one squawk run may take.
    """

    accept: list[LintAccept] = Field(default_factory=list)
    session_settings_count: bool = True
    assume_in_transaction: bool = True
    pg_version: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?$")] | None = None
    timeout_s: float = Field(default=60, gt=0)


class Requirement(_Model):
    """A precondition preflight reads before anything is touched: a read-only query of
    the staging database whose first cell must meet ``expect`` (runbook "Pre-requisitos
    para Staging"). Give the query as ``sql_file`` (a file under ``include/sql/``, checked
    like a ``sql`` check's) or inline as ``sql``, not both. ``why``: the runbook's
    prerequisite, quoted in the error that stops the run.
    """

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
    sql_file: str | None = None
    sql: str | None = None
    expect: Condition
    why: str

    @field_validator("sql_file")
    @classmethod
    def _file_checked(cls, name: str | None) -> str | None:
        return None if name is None else _checked_sql_file(name)

    @field_validator("sql")
    @classmethod
    def _inline_checked(cls, text: str | None) -> str | None:
        return None if text is None else _checked_sql(text, "the query")

    @model_validator(mode="after")
    def _one_query(self):
        if (self.sql_file is None) == (self.sql is None):
            raise ValueError(f"requirement {self.id!r}: give exactly one of 'sql_file', 'sql'")
        if not self.why.strip():
            raise ValueError(f"requirement {self.id!r}: 'why' is empty (quote the runbook's prerequisite)")
        return self

    def query(self) -> str:
        """The SQL text to run (the file's content, or the inline ``sql``)."""
        return (SQL_DIR / self.sql_file).read_text(encoding="utf-8") if self.sql_file else str(self.sql)


class Preflight(_Model):
    """What preflight requires of the staging database besides the migration being
    pending and linted (``runbook.preflight``): ``require``, each checked in order.

    ``allow_address_lease``: admit the run when the soak's role cannot read the server's
    system identifier (``pg_control_system()``), so that the lease keys on the server's
    address (``identity.py``). Off by default: such a key never meets the ``system`` key of
    a plan whose role can read it, so two plans on one database would both soak it; turn
    it on only when every plan that soaks this database keys on its address."""

    require: list[Requirement] = Field(default_factory=list)
    allow_address_lease: bool = False


class RequestCount(_Model):
    """A headline count of the report (final metrics) and the post-mortem (impact): the
    requests a ratio check counted after the migration, summed over its readings.

    ``check``: an ``openmetrics`` ``counter_ratio`` check (its readings carry the counts:
    ``denominator`` requests, ``numerator`` failed). ``label``: what the denominator counts,
    e.g. ``Authentication requests``; ``failed``: what the numerator's requests did, e.g.
    ``answered 5xx``.
    """

    check: str
    label: str = Field(min_length=1)
    failed: str = Field(default="failed", min_length=1)


class Trend(_Model):
    """A check the report's final metrics show as first, last and range of its readings
    after the migration (drift people watch: memory, cache hit rate). ``label``: the
    line's name (default: the check's ``title``)."""

    check: str
    label: str | None = None


class Report(_Model):
    """What the report and the post-mortem headline beyond the checks and criteria:
    ``requests``, counted requests; ``trends``, checks shown first/last/range (default
    none of either)."""

    requests: list[RequestCount] = Field(default_factory=list)
    trends: list[Trend] = Field(default_factory=list)


class Rehearsal(_Model):
    """The rollback rehearsed on a scratch copy after the backup, before the migration
    (``rehearsal.py``, docs/rehearsal.md): a failure stops the run before staging is touched.

    ``enabled``: rehearse (default true). ``max_database_mb``: staging databases larger
    than this (MiB, ``pg_database_size``) are not rehearsed: the run says so in a
    ``rehearsal`` event and the report, and goes on. ``connection``: a Postgres connection
    id of the server that hosts the scratch database (its role needs ``CREATEDB``);
    ``None``: the staging server itself, through ``staging_direct``. ``jobs``:
    ``pg_restore --jobs`` for the copy. ``timeout_s``: bound (seconds) on each tool run.
    """

    enabled: bool = True
    max_database_mb: float = Field(default=4096, gt=0)
    connection: str | None = None
    jobs: int = Field(default=2, ge=1, le=16)
    timeout_s: float = Field(default=3 * 3600, gt=0)


class Plan(_Model):
    """A whole soak. See ``include/plans/default.yaml`` for the seed's plan."""

    name: str
    description: str = ""
    environment: str = Field(default="staging", min_length=1, pattern=r"\S",
                             description="the soaked environment's name (Slack, reports; the lease follows the database)")
    migration: Migration
    connections: Connections = Connections()
    #: where backups are kept (``backup_storage``): a path (relative to the repository
    #: root) or an ``ObjectStoragePath`` URL such as ``s3://bucket/prefix``
    backup_location: str = ".state/backups"
    pg_bin_dir: str | None = None
    report_location: str = "reports"
    restart: Restart
    phases: list[Phase] = Field(min_length=1)
    verdict: Verdict = Verdict()
    checks: list[Check] = Field(min_length=1)
    baseline: Baseline | None = None
    guard: Guard | None = None
    go: list[Criterion] = Field(default_factory=list)
    no_go: list[Criterion] = Field(default_factory=list)
    alerts: list[Alert] = Field(default_factory=list)
    human_gates: list[HumanGate] = Field(default_factory=list)
    #: migration lint with squawk at preflight (``lint.py``)
    lint: Lint = Lint()
    #: the rollback rehearsed on a scratch copy before the migration (``rehearsal.py``)
    rehearsal: Rehearsal = Rehearsal()
    #: the staging database's preconditions preflight checks (``runbook.preflight``)
    preflight: Preflight = Preflight()
    #: the report's headline counts (``report_sections.request_lines``)
    report: Report = Report()

    @model_validator(mode="after")
    def _consistent(self):
        """Cross-field rules, in this order; the first one broken is the error (``ValueError``)."""
        names = _phase_names(self.phases)
        ids = _check_ids(self.checks)
        _require_known_phases(self.checks, names)
        _require_known_checks(self._check_references(), ids)
        _require_distinct_criteria(self.go + self.no_go)
        _require_distinct_alerts(self.alerts)
        _require_sane_levels(self.checks, self.go + self.no_go + self.alerts)
        _require_one_unit(self.checks, self.go + self.no_go + self.alerts)
        _require_failable_go(self.checks, self.go, self.no_go)
        _require_baseline_section(self.go + self.no_go + self.alerts, self.baseline)
        _require_no_go_with_go(self.go, self.no_go)
        _require_one_evidence_bar(self.go, self.no_go, self.verdict)
        _require_cheap_guard(self.guard, self.checks)
        if self.guard is not None:
            try:
                _readings_bound(self.soak_hours() * 60 / self.guard.every_minutes, self.guard.every_minutes,
                                f"the {self.soak_hours():g} h soak")
            except ValueError as exc:
                raise ValueError(f"guard: {exc}") from None
        _require_judgeable_windows(self.no_go, self.guard)
        _require_counted_requests(self.report.requests, self.checks)
        _require_distinct_requirements(self.preflight.require)
        _require_preserved_fingerprint(self.checks, self.migration)
        _require_migration_in_folder(self.migration)
        _require_read_checks(self.checks, self.go, self.no_go, self.guard, self.baseline)
        return self

    def _check_references(self) -> list[tuple[str, list[str]]]:
        """``[(where, check ids)]`` for every section that names checks, ``where`` as the
        errors name it: ``go[<id>]``, ``no_go[<id>]``, ``alerts[<id>]``, ``guard``, ``baseline``."""
        refs = [(f"go[{c.id}]", c.checks) for c in self.go] + [(f"no_go[{c.id}]", c.checks) for c in self.no_go]
        refs += [(f"alerts[{a.id}]", a.checks) for a in self.alerts]
        refs += [("guard", self.guard.checks)] if self.guard else []
        refs += [("baseline", self.baseline.checks)] if self.baseline else []
        refs += [(f"report.requests[{r.check}]", [r.check]) for r in self.report.requests]
        refs += [(f"report.trends[{t.check}]", [t.check]) for t in self.report.trends]
        return refs

    def phase(self, name: str) -> Phase:
        """The phase called ``name``; ``KeyError`` if none."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)

    def check(self, check_id: str) -> Check:
        """The check with id ``check_id``; ``KeyError`` if none."""
        for check in self.checks:
            if check.id == check_id:
                return check
        raise KeyError(check_id)

    def checks_in(self, phase: str) -> list[Check]:
        """Checks measured in ``phase`` (``hour0`` included: the Checklist Hora 0); ``guard``
        and ``baseline`` run the checks their sections name."""
        if phase == "guard":
            return [self.check(c) for c in self.guard.checks] if self.guard else []
        if phase == "baseline":
            return [self.check(c) for c in self.baseline.checks] if self.baseline else []
        return [c for c in self.checks if c.phases == "all" or phase in c.phases]

    def schedule(self) -> list[tuple[str, str]]:
        """Every (phase, check id) pair the soak measures, hour 0 first, in plan order."""
        pairs = [("hour0", c.id) for c in self.checks_in("hour0")]
        for phase in self.phases:
            pairs += [(phase.name, c.id) for c in self.checks_in(phase.name)]
        return pairs

    def soak_hours(self) -> float:
        """Length of the soak in hours: the end of the last phase."""
        return max(p.end_hour for p in self.phases)

    def phase_gaps(self) -> list[tuple[float, float]]:
        """``[(start_hour, end_hour)]`` of soak time no phase covers, in order (the runbook's
        phases follow each other: none). Only hour 0's checks, the guard and readings that
        count since their previous one (logs, counters) see such a stretch."""
        gaps, reached = [], 0.0
        for p in sorted(self.phases, key=lambda p: p.start_hour):
            if p.start_hour > reached:
                gaps.append((reached, p.start_hour))
            reached = max(reached, p.end_hour)
        return gaps

    def path(self, relative: str) -> Path:
        """A plan path resolved against the repository root (absolute paths stay)."""
        p = Path(relative)
        return p if p.is_absolute() else REPO_ROOT / p


def _repeated(ids: list[str]) -> list[str]:
    """The ids that occur more than once in ``ids``, each once, sorted."""
    return sorted({i for i in ids if ids.count(i) > 1})


#: The soak DAG's own top-level tasks and task groups (airflow/builder.py; ``plan_error`` is
#: the stand-in of a broken plan). Each phase is a task group named after it, so a phase of
#: one of these names made building the DAG raise DuplicateTaskIdFound in the soak DAGs'
#: file: every plan's DAG was gone, and the plan itself loaded (no import error named it).
#: ``baseline`` and ``guard`` also label readings that never count as scheduled ones
#: (judge.PHASES_NOT_SCHEDULED). tests/unit/test_plan.py checks this against the built DAG.
DAG_OWN_NAMES = frozenset({
    "load", "preflight", "start_baseline", "baseline", "backup", "rehearse", "fingerprint", "migrate", "verify",
    "restart_apps", "start_clock", "guard", "judge_soak", "human_decision", "ask_sign_off", "sign_off", "decide",
    "report", "rollback", "release", "conclude", "plan_error",
})


def _phase_names(phases: list[Phase]) -> list[str]:
    """The phase names in plan order.

    Raises ``ValueError`` when a name repeats, when one is ``hour0`` (reserved for the
    checks at hour 0) or one of the DAG's own tasks (``DAG_OWN_NAMES``), or when two
    phases overlap (each soak hour has one cadence: the runbook's phases follow each other)."""
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names repeat: {names}")
    if "hour0" in names:
        raise ValueError("'hour0' is reserved for the checks at hour 0")
    for name in names:
        if name in DAG_OWN_NAMES:
            raise ValueError(f"phases[{name}].name: {name!r} names one of the soak DAG's own tasks or task groups: "
                             "the phase's task group would clash with it (no DAG would load); name the phase otherwise")
    ordered = sorted(phases, key=lambda p: p.start_hour)
    for a, b in zip(ordered, ordered[1:]):
        if b.start_hour < a.end_hour:
            raise ValueError(f"phases {a.name!r} (hours {a.start_hour:g}-{a.end_hour:g}) and {b.name!r} (hours "
                             f"{b.start_hour:g}-{b.end_hour:g}) overlap")
    return names


def _check_ids(checks: list[Check]) -> list[str]:
    """The check ids in plan order. Raises ``ValueError`` listing the repeated ones."""
    ids = [c.id for c in checks]
    dup = _repeated(ids)
    if dup:
        raise ValueError(f"check ids repeat: {dup}")
    return ids


def _require_known_phases(checks: list[Check], names: list[str]) -> None:
    """Every phase a check names is one of ``names`` or ``hour0``; else ``ValueError``
    naming the first such check, its unknown phases and the known ones."""
    for check in checks:
        if check.phases != "all":
            unknown = [p for p in check.phases if p not in names + ["hour0"]]
            if unknown:
                raise ValueError(f"check {check.id!r} names unknown phases {unknown} (known: {names})")


def _require_floor_per_check(rule: Rule, checks: list[str]) -> None:
    """A per-check ``min_delta`` gives exactly the rule's checks a floor; else ``ValueError``."""
    floors = getattr(rule, "min_delta", None)
    if isinstance(floors, dict) and set(floors) != set(checks):
        missing, extra = [c for c in checks if c not in floors], [c for c in floors if c not in checks]
        raise ValueError("rule.min_delta must give each of its checks a floor: "
                         + "; ".join(([f"missing {missing}"] if missing else [])
                                     + ([f"not among its checks {extra}"] if extra else [])))


#: Units bounded by 1 (every unit of ``Unit`` is never negative).
_RATIO_UNITS = ("ratio",)


def _require_sane_levels(checks: list[Check], ruled: Sequence[Criterion | Alert]) -> None:
    """Levels in the checks' units: none negative, a ``ratio`` within 0..1 (90 % is 0.9,
    not 90: a level of 90 could never be reached and the rule would never fire). Checks'
    ``expect``/``no_go`` and the ``threshold``/``sustained``/``window_count`` rules of
    criteria and alerts; ``ValueError`` naming the field and value."""
    units: dict[str, str] = {c.id: c.unit for c in checks}
    levels: list[tuple[str, float, set[str]]] = [(f"check {c.id!r} {name}", cond.value, {c.unit})
              for c in checks for name, cond in (("expect", c.expect), ("no_go", c.no_go)) if cond is not None]
    levels += [(f"{type(r).__name__.lower()} {r.id!r} rule", r.rule.value, {units[c] for c in r.checks if c in units})
               for r in ruled if r.rule.kind in ("threshold", "sustained", "window_count")]
    for where, value, used in levels:
        if value < 0:
            raise ValueError(f"{where}: value {value:g} is negative; no {'/'.join(sorted(map(str, used)))} "
                             "reading is")
        if used & set(_RATIO_UNITS) and value > 1:
            raise ValueError(f"{where}: value {value:g} is a ratio 0..1 (write {value / 100:g} for {value:g} %)")
    conditions: list[tuple[str, str, float, set[str]]] = [
        (f"check {c.id!r} {name}", cond.op, cond.value, {c.unit})
        for c in checks for name, cond in (("expect", c.expect), ("no_go", c.no_go)) if cond is not None]
    conditions += [(f"{type(r).__name__.lower()} {r.id!r} rule", r.rule.op, r.rule.value,
                    {units[c] for c in r.checks if c in units})
                   for r in ruled if r.rule.kind in ("threshold", "sustained", "window_count")]
    for where, op, value, used in conditions:
        never = _never_holds(op, value, used)
        if never:
            raise ValueError(f"{where}: {op} {value:g} can never hold ({never}): a rule that cannot fire")


def _require_failable_go(checks: list[Check], go: Sequence[Criterion], no_go: Sequence[Criterion]) -> None:
    """A GO level (a GO criterion's ``threshold``/``sustained``/``window_count`` rule, or,
    in a plan without criteria, a check's ``expect``: its GO) that every reading meets is
    refused, naming the field and value: its GO would be met without the readings saying
    anything. ``>= 0`` (no reading is below 0), ``<= 1`` on a ratio or up/down check, and
    ``< 1`` on a ratio: 1 is 100 %, so "Error rate < 1" written for 1 % was met by any
    error rate short of every request failing. ``ValueError``."""
    units: dict[str, str] = {c.id: c.unit for c in checks}
    levels: list[tuple[str, str, float, set[str]]] = [
        (f"check {c.id!r} expect", c.expect.op, c.expect.value, {c.unit}) for c in checks if not (go or no_go)]
    levels += [(f"criterion {r.id!r} rule", r.rule.op, r.rule.value, {units[c] for c in r.checks if c in units})
               for r in go if r.rule.kind in ("threshold", "sustained", "window_count")]
    for where, op, value, used in levels:
        capped = bool(used) and used <= set(_AT_MOST_ONE)
        if op == ">=" and value <= 0:
            why = "every reading is 0 or more"
        elif op == "<=" and capped and value >= 1:
            why = f"every {'/'.join(sorted(used))} reading is 1 or less"
        elif op == "<" and used == {"ratio"} and value >= 1:
            why = "1 is 100 %: every ratio reading short of all of it meets it"
        else:
            continue
        hint = f" (write {value / 100:g} for {value:g} %)" if used == {"ratio"} and value >= 1 else ""
        raise ValueError(f"{where}: {op} {value:g} always holds ({why}){hint}: a GO no reading can fail")


def _require_one_unit(checks: list[Check], ruled: Sequence[Criterion | Alert]) -> None:
    """A ``threshold``/``sustained``/``window_count`` rule (of a criterion or an alert)
    states one level, in one unit: its checks must share it. ``< 500`` over a p95 in ms
    and one in seconds holds for any second reading below 500 s, so a GO on it could be
    met by a latency of minutes. ``ValueError`` naming the rule and each check's unit.
    (``baseline`` and ``growth`` rules compare changes, which have no unit.)"""
    units: dict[str, str] = {c.id: c.unit for c in checks}
    for r in ruled:
        if r.rule.kind not in ("threshold", "sustained", "window_count"):
            continue
        used = {units[c] for c in r.checks if c in units}
        if len(used) > 1:
            each = ", ".join(f"{c}: {units[c]}" for c in r.checks if c in units)
            raise ValueError(f"{type(r).__name__.lower()} {r.id!r} rule: value {r.rule.value:g} is compared with "
                             f"checks in different units ({each}): one level cannot be in both; split it into "
                             "one rule a unit")


#: Units whose readings are at most 1 (``up`` is 0 or 1).
_AT_MOST_ONE = ("ratio", "up")


def _never_holds(op: str, value: float, units: set[str]) -> str | None:
    """Why ``op value`` holds for no reading in ``units`` (every unit is never negative;
    ratio and up are at most 1, up is 0 or 1), or None."""
    if op == "<" and value <= 0:
        return "no reading is below 0"
    capped = bool(units) and units <= set(_AT_MOST_ONE)
    if capped and (op == ">" and value >= 1 or op == ">=" and value > 1):
        return f"no {'/'.join(sorted(units))} reading is above 1"
    if units == {"up"} and op == "==" and value not in (0, 1):
        return "an up reading is 0 or 1"
    if units and units <= {"count", "rows"} and op == "==" and not float(value).is_integer():
        return f"a {'/'.join(sorted(units))} reading is a whole number"
    return None


def _require_known_checks(refs: list[tuple[str, list[str]]], ids: list[str]) -> None:
    """Every check id in ``refs`` (``[(where, check ids)]``) is one of ``ids``; else
    ``ValueError`` naming the first section (``where``) and its unknown ids."""
    for where, used in refs:
        unknown = [c for c in used if c not in ids]
        if unknown:
            raise ValueError(f"{where} names unknown checks {unknown}")


def _require_distinct_criteria(criteria: list[Criterion]) -> None:
    """GO and NO-GO criteria share one id space; ``ValueError`` listing repeated ids."""
    dup = _repeated([c.id for c in criteria])
    if dup:
        raise ValueError(f"criterion ids repeat: {dup}")


def _require_distinct_alerts(alerts: list[Alert]) -> None:
    """Alert ids are unique: the guard posts each alert id once a run (observe.alerts_settled),
    so a second alert of an id that fired would never reach Slack. ``ValueError`` listing them."""
    dup = _repeated([a.id for a in alerts])
    if dup:
        raise ValueError(f"alert ids repeat: {dup}: Slack hears each alert id once a run, so one of them would never "
                         "be posted")


def _require_baseline_section(ruled: Sequence[Criterion | Alert], baseline: Baseline | None) -> None:
    """A ``baseline`` rule (in a criterion or an alert) compares with the baseline
    measurements, so it needs the plan's ``baseline`` section, measuring each of its
    checks; else ``ValueError`` (such a rule could never be judged)."""
    relative = [r for r in ruled if r.rule.kind == "baseline"]
    if relative and not baseline:
        raise ValueError("a 'baseline' rule needs a 'baseline' section")
    for r in relative:
        missing = [c for c in r.checks if baseline is not None and c not in baseline.checks]
        if missing:
            raise ValueError(f"{type(r).__name__.lower()} {r.id!r}: its 'baseline' rule reads {missing}, which "
                             "baseline.checks does not measure: it could never be judged")


def _require_no_go_with_go(go: list[Criterion], no_go: list[Criterion]) -> None:
    """GO criteria without NO-GO criteria: nothing could stop the soak or roll it back;
    ``ValueError`` (a plan with neither gets each check's levels, ``judge.implicit_criteria``)."""
    if go and not no_go:
        raise ValueError("the plan states GO criteria but no NO-GO criterion (no_go: []): nothing could stop the "
                         "soak or roll it back; state the NO-GO criteria, or neither (each check's levels then)")


def _require_one_evidence_bar(go: list[Criterion], no_go: list[Criterion], verdict: Verdict) -> None:
    """One evidence bar for both sides of the verdict: a GO criterion's ``min_coverage``
    below ``verdict.min_coverage`` is refused (its GO would be "met" on readings the
    verdict calls too few to judge a NO-GO on: "met" next to "not judged" for the same
    readings), and a NO-GO criterion's ``min_coverage`` is refused (NO-GO criteria are
    judged on ``verdict.min_coverage``: it would be ignored). Above the verdict's, a GO
    criterion may ask more. ``ValueError`` naming the field and values."""
    for c in go:
        if c.min_coverage is not None and c.min_coverage < verdict.min_coverage - 1e-9:
            raise ValueError(f"go[{c.id}].min_coverage {c.min_coverage:g} is below verdict.min_coverage "
                             f"{verdict.min_coverage:g}: the GO would be met on readings the verdict calls too few "
                             f"to judge its NO-GO criteria on; give {verdict.min_coverage:g} or more, or leave it out "
                             "(the verdict's then)")
    for c in no_go:
        if c.min_coverage is not None:
            raise ValueError(f"no_go[{c.id}].min_coverage {c.min_coverage:g}: a NO-GO criterion is judged on "
                             f"verdict.min_coverage ({verdict.min_coverage:g}), so this would be ignored; leave it out")


def _require_judgeable_windows(no_go: list[Criterion], guard: Guard | None) -> None:
    """A ``sustained`` NO-GO is judged on readings at most half its window apart: only the
    guard reads that often, so each of its checks must be a guard check read at least
    every ``minutes / 2`` (real time); else ``ValueError`` (every soak, even a real-time
    one, would leave it not judged)."""
    for c in no_go:
        if c.rule.kind != "sustained":
            continue
        half = c.rule.minutes / 2
        outside = [cid for cid in c.checks if guard is None or cid not in guard.checks]
        if outside:
            raise ValueError(f"no_go[{c.id}]: a {c.rule.minutes:g}-minute sustained rule needs readings at most "
                             f"{half:g} min apart, which only the guard takes: add {outside} to guard.checks")
        if guard is not None and guard.every_minutes > half + 1e-9:
            raise ValueError(f"no_go[{c.id}]: a {c.rule.minutes:g}-minute sustained rule needs readings at most "
                             f"{half:g} min apart; guard.every_minutes is {guard.every_minutes:g}")
        # the floor holds in real time too: clock.guard_every(plan, 1) = max(every, min_wall_seconds)
        if guard is not None and guard.min_wall_seconds / 60 > half + 1e-9:
            raise ValueError(f"no_go[{c.id}]: a {c.rule.minutes:g}-minute sustained rule needs readings at most "
                             f"{half:g} min apart; guard.min_wall_seconds {guard.min_wall_seconds:g} holds the guard "
                             f"to one reading every {guard.min_wall_seconds / 60:g} min even in real time "
                             f"(time_scale 1): at most {half * 60:g}")


#: Sources too heavy for the guard, which reads its checks every minute: a full-table
#: fingerprint, a backup.
_HEAVY_SOURCES = ("fingerprint", "backup")


def _require_cheap_guard(guard: Guard | None, checks: list[Check]) -> None:
    """The guard's checks are cheap (``Guard``); ``ValueError`` naming a heavy one."""
    by_id = {c.id: c for c in checks}
    for cid in guard.checks if guard else []:
        kind = by_id[cid].source.kind if cid in by_id else None
        if kind in _HEAVY_SOURCES:
            raise ValueError(f"guard: check {cid!r} reads a {kind} source, too heavy to run every guard interval; "
                             "give it phase ticks instead")


def _require_read_checks(checks: list[Check], go: list[Criterion], no_go: list[Criterion], guard: Guard | None,
                         baseline: Baseline | None) -> None:
    """A check with ``phases: []`` has no scheduled reading: a GO criterion on it (or its own
    ``expect``, in a plan without criteria) could never be met, since guard readings never
    count as coverage (judge.PHASES_NOT_SCHEDULED): every soak would end INCONCLUSIVE after
    its whole length; one that neither the guard nor the baseline reads is never measured.
    ``ValueError`` naming the criterion or the check."""
    for c in checks:
        if c.phases != []:
            continue
        for crit in go:
            if c.id in crit.checks:
                raise ValueError(f"go[{crit.id}]: check {c.id!r} has no scheduled reading (phases: []): the GO "
                                 "criterion could never be met (guard readings never count as its coverage); "
                                 "give it phases")
        if not go and not no_go:
            raise ValueError(f"checks[{c.id}]: no scheduled reading (phases: []) and its expect is a GO criterion "
                             "(the plan states none): it could never be met; give it phases")
        if c.id not in (guard.checks if guard else []) and c.id not in (baseline.checks if baseline else []):
            raise ValueError(f"checks[{c.id}].phases: [] and neither guard nor baseline reads it: the check would "
                             "never be measured")


def _require_migration_in_folder(migration: Migration) -> None:
    """``migration.name`` is a migration of ``migration.migrations_dir`` (its
    ``<name>/migration.sql``, as Prisma lays them out): a typo in the name loaded and was
    first found by preflight after a trigger. ``ValueError`` naming both and the folder's
    migrations."""
    folder = Path(migration.migrations_dir)
    folder = folder if folder.is_absolute() else REPO_ROOT / folder
    if (folder / migration.name / "migration.sql").is_file():
        return
    there = sorted(p.name for p in folder.iterdir() if (p / "migration.sql").is_file())
    raise ValueError(f"migration.name: no migration {migration.name!r} in migration.migrations_dir "
                     f"{migration.migrations_dir!r} (no {migration.name}/migration.sql there; its migrations: "
                     f"{there})")


def _require_preserved_fingerprint(checks: list[Check], migration: Migration) -> None:
    """A ``fingerprint`` check of the migration's table watches columns the migration keeps:
    one that fingerprints a dropped column (or keys rows by one) would read every value of
    it as lost at hour 0, a NO-GO the migration itself causes. ``ValueError`` naming the
    check and the column."""
    from migration_soak.pgconn import split_table

    dropped = set(migration.dropped_columns)
    for c in checks:
        src = c.source
        if isinstance(src, FingerprintSource) and split_table(src.table) == split_table(migration.table):
            hit = [col for col in (src.key, *src.columns) if col in dropped]
            if hit:
                raise ValueError(f"checks[{c.id}].source: fingerprints {', '.join(map(repr, hit))} of "
                                 f"{src.table}, which migration.dropped_columns drops: list only the columns the "
                                 "migration keeps")


def _require_counted_requests(requests: list[RequestCount], checks: list[Check]) -> None:
    """Every ``report.requests`` check (known by now) reads counts: an ``openmetrics``
    source measuring ``counter_ratio``; else ``ValueError`` naming the check and its source."""
    by_id = {c.id: c for c in checks}
    for r in requests:
        src = by_id[r.check].source
        if not (isinstance(src, OpenMetricsSource) and src.measure == "counter_ratio"):
            got = f"{src.kind} {getattr(src, 'measure', '')}".strip()
            raise ValueError(f"report.requests[{r.check}]: check {r.check!r} counts no requests (its source is "
                             f"{got}; needs openmetrics counter_ratio)")


def _require_distinct_requirements(required: list[Requirement]) -> None:
    """``preflight.require`` ids are distinct; ``ValueError`` listing repeated ids."""
    dup = _repeated([r.id for r in required])
    if dup:
        raise ValueError(f"preflight.require ids repeat: {dup}")


#: How pydantic names a plain union's branch in an error's location.
_TYPE_TAG = re.compile(r"(float|int|str|bool|dict\[.*\]|list\[.*\]|function-\w+\[.*\]|literal\[.*\])")


def _field_path(data: Any, loc: tuple) -> tuple[str, Any]:
    """Dotted field path with list items named by their ``id``/``name``, and the value there."""
    parts, node = [], data
    tagged = None  # the node whose branch tag was skipped (its next step is a field)
    for step in loc:
        if isinstance(node, dict) and node.get("kind") == step and tagged is not node:
            tagged = node  # a discriminated union's branch (e.g. 'sql', 'baseline'): no field of its own
            continue
        if isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
            label = node.get("id") or node.get("name") if isinstance(node, dict) else None
            parts.append(f"[{label}]" if label else f"[{step}]")
        elif isinstance(node, dict) and step in node:
            node = node[step]
            parts.append(f".{step}")
        else:
            # a plain union's branch ('float', 'dict[str,...]') names no field either; any
            # other step is a missing field
            if isinstance(step, str) and not _TYPE_TAG.fullmatch(step):
                parts.append(f".{step}")
            node = None if not isinstance(node, dict) else node.get(step, node)
    return "".join(parts).lstrip("."), node


def parse_plan(data: Any, source: str = "<plan>") -> Plan:
    """Validate already-parsed YAML ``data`` into a :class:`Plan`.

    Raises ``PlanError`` naming ``source``, the field path and the value for every problem.
    """
    if not isinstance(data, dict):
        raise PlanError(f"{source}: the plan must be a mapping, got {type(data).__name__}")
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field, value = _field_path(data, err["loc"])
            if err["type"] == "missing":
                lines.append(f"{source}: {field}: required field is missing")
            elif err["type"] == "value_error":
                # A cross-field rule (a validator): its message names the fields and values
                # itself; the input would be the whole section (or the whole plan).
                message = err["msg"].removeprefix("Value error, ")
                lines.append(f"{source}: {field}: {message}" if field else f"{source}: {message}")
            else:
                shown = err.get("input", value)
                lines.append(f"{source}: {field}: {err['msg']} (got {shown!r})")
        raise PlanError("\n".join(lines)) from None


def plan_file(name_or_path: str | Path) -> Path:
    """Resolve a plan name (``default``) or path to the YAML file.

    Raises ``PlanError`` naming the value when no such plan exists.
    """
    candidate = Path(name_or_path)
    by_name = candidate.suffix not in (".yaml", ".yml")
    if by_name:
        candidate = PLANS_DIR / f"{name_or_path}.yaml"
    elif not candidate.is_absolute():
        candidate = REPO_ROOT / candidate
    if not candidate.is_file():
        # the plans of the folder looked in (a path's own, e.g. demo.run --plans-dir), not
        # always PLANS_DIR's: those listed the very plan not found as known
        folder = candidate.parent
        if not folder.is_dir():
            there = f"the folder {folder} does not exist"
        else:
            known = sorted(p.stem for p in folder.glob("*.yaml"))
            there = f"known plans: {known}" if by_name else f"plans in {folder}: {known}"
        raise PlanError(f"plan: no plan {name_or_path!r} (looked for {candidate}; {there})")
    return candidate


_LOADED: dict[tuple[Path, int], Plan] = {}


def load_plan(name_or_path: str | Path = "default") -> Plan:
    """Read and validate a plan by name (``include/plans/<name>.yaml``) or path.

    Plans are immutable; a process keeps each file's plan until the file changes.
    Raises ``PlanError`` (file, field, value) on unreadable YAML or invalid content.
    """
    path = plan_file(name_or_path)
    key = (path, path.stat().st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = _read_plan(path)
    return _LOADED[key]


def _read_plan(path: Path) -> Plan:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PlanError(f"{path}: not valid YAML: {exc}") from None
    return parse_plan(data, str(path))
