"""What ``make demo`` shows while a soak runs: phase, soak hour, readings, the verdict and what decided it.

``soak_state`` turns what the store holds for a run (its events and the count of its
readings by status), the time now and the run's ``time_scale`` into a ``SoakState``: a
pure function, so it is tested without Airflow or a database. ``read_store`` reads those
rows; ``make_reporter`` shows the states: a live ``rich`` progress bar over the soak on a
terminal, plain one-line updates at most every ``interval`` seconds otherwise (CI, pipes).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, TextIO

#: The default plan's soak phases: (name, start hour, end hour) of the soak clock.
DEFAULT_PHASES: tuple[tuple[str, float, float], ...] = (("intensive", 0, 2), ("regular", 2, 8), ("passive", 8, 24))
#: Plain lines: at most one per this many wall seconds.
PLAIN_INTERVAL_S = 10.0


def _shown(outcome: str | None) -> str | None:
    return outcome.replace("NO_GO", "NO-GO") if outcome else outcome


@dataclass(frozen=True)
class SoakState:
    """Where a soak run is, as the demo shows it.

    ``phase``: ``starting``, ``setup: <last step>``, a soak phase (``intensive``),
    ``judging``, ``NO-GO: stopping``, ``deciding``, ``rollback``, ``rolled back``,
    ``report``, ``done``. ``soak_hour``: soak-clock hours since hour 0 (``None`` before
    hour 0), frozen when the soak stopped (NO-GO or verdict). ``soak_hours``: the soak's
    length (h). ``readings``: observations recorded; ``breaches``: readings at a check's own
    NO-GO level (status ``fail``), shown as such ("at a check's NO-GO level"), never as the
    verdict's breaches: a relative criterion (``no_go_performance``) decides a NO-GO with none;
    ``warnings``: readings that missed their expectation;
    ``missing``: ``error`` readings (counted as missing by the judge); ``alerts``: alerts
    notified. ``stopped_by``: the NO-GO criterion that stopped the soak. ``verdict``: the
    judge's (``GO`` / ``NO-GO`` / ``INCONCLUSIVE``); ``decided_by``: the NO-GO criteria its
    NO-GO found breached (the verdict event's criteria); ``decision``: ``"<outcome>, <action>"``
    of the run's final decision. ``run_state``: the DAG run's, when known.
    """

    phase: str
    soak_hour: float | None
    soak_hours: float
    readings: int = 0
    breaches: int = 0
    warnings: int = 0
    missing: int = 0
    alerts: int = 0
    stopped_by: str | None = None
    verdict: str | None = None
    decided_by: tuple[str, ...] = ()
    decision: str | None = None
    run_state: str | None = None

    @property
    def fraction(self) -> float:
        """Share of the soak clock elapsed, 0..1."""
        if self.soak_hour is None or self.soak_hours <= 0:
            return 0.0
        return max(0.0, min(1.0, self.soak_hour / self.soak_hours))

    @property
    def hour_text(self) -> str:
        if self.soak_hour is None:
            return f"hour -/{self.soak_hours:g}"
        return f"hour {self.soak_hour:.1f}/{self.soak_hours:g}"

    def detail(self) -> str:
        """Readings by status, the verdict and what decided it, one short line (no phase, no
        hour): ``1200 readings (0 at a check's NO-GO level), verdict NO-GO by
        no_go_performance``. The readings at a check's own level are not the verdict's
        breaches (a relative criterion breaches with none), so they are not called that."""
        kinds = [f"{self.breaches} at a check's NO-GO level"]
        if self.warnings:
            kinds.append(f"{self.warnings} warn")
        if self.missing:
            kinds.append(f"{self.missing} missing")
        parts = [f"{self.readings} readings ({', '.join(kinds)})" if self.readings else "0 readings"]
        if self.alerts:
            parts.append(f"{self.alerts} alerts")
        if self.stopped_by:
            parts.append(f"NO-GO {self.stopped_by}")
        by = [c for c in self.decided_by if c != self.stopped_by]
        parts.append(f"verdict {self.verdict or '-'}" + (f" by {', '.join(by)}" if by else ""))
        if self.decision:
            parts.append(f"decision {self.decision}")
        return ", ".join(parts)

    def line(self) -> str:
        """The plain one-line form: ``soak: intensive, hour 1.5/24 (6%); 40 readings, ...``."""
        return f"soak: {self.phase}, {self.hour_text} ({self.fraction:.0%}); {self.detail()}"


def _hour(at: datetime, hour0: datetime, time_scale: float) -> float:
    return (at - hour0).total_seconds() * time_scale / 3600.0


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def soak_state(events: Iterable[Mapping[str, Any]], readings: Mapping[str, int], now: datetime, time_scale: float,
               phases: Iterable[tuple[str, float, float]] = DEFAULT_PHASES,
               run_state: str | None = None) -> SoakState:
    """The state to show. ``events``: the run's store events in order (``kind``, ``at``
    (aware datetime), ``payload``); ``readings``: its observation count per status
    (``pass`` / ``warn`` / ``fail`` / ``error``); ``now``: aware datetime; ``time_scale``:
    the run's soak-clock speed-up; ``phases``: (name, start h, end h) of the plan's soak
    phases; ``run_state``: the DAG run's state, if known."""
    phases = list(phases)
    soak_hours = max((end for _, _, end in phases), default=24.0)
    first: dict[str, Mapping[str, Any]] = {}
    last_kind = None
    alerts = 0
    decision = None
    for e in events:
        first.setdefault(e["kind"], e)
        last_kind = e["kind"]
        if e["kind"] == "alert":
            alerts += 1
        elif e["kind"] == "decision":
            decision = e["payload"]  # the last one is the run's
    hour0 = _when(first["hour0"]["payload"].get("hour0")) if "hour0" in first else None
    stops = [_when(first[k]["at"]) for k in ("no_go", "verdict") if k in first]
    stops = [s for s in stops if s is not None]
    soak_hour = None
    if hour0 is not None:
        upto = min([now, *stops])
        soak_hour = max(0.0, min(soak_hours, _hour(upto, hour0, time_scale)))
    verdict = _shown(first["verdict"]["payload"].get("decision")) if "verdict" in first else None
    decided_by = tuple(str(c.get("id")) for c in (first["verdict"]["payload"].get("criteria") or [])
                       if verdict == "NO-GO" and c.get("kind") == "no_go" and c.get("outcome") == "breached") \
        if "verdict" in first else ()
    stopped_by = first["no_go"]["payload"].get("criterion") if "no_go" in first else None

    if run_state in ("success", "failed"):
        phase = "done"
    elif decision is not None:
        if "rollback_completed" in first:
            phase = "rolled back"
        elif "rollback_started" in first:
            phase = "rollback"
        else:
            phase = "report"
    elif verdict is not None:
        phase = "deciding"
    elif stopped_by is not None:
        phase = "NO-GO: stopping"
    elif soak_hour is not None:
        phase = "judging" if soak_hour >= soak_hours else next(
            (name for name, start, end in phases if start <= soak_hour < end), "soak")
    elif last_kind is not None:
        phase = "setup: " + last_kind.replace("_", " ")
    else:
        phase = "starting"
    return SoakState(
        phase=phase, soak_hour=soak_hour, soak_hours=soak_hours,
        readings=sum(int(n) for n in readings.values()), breaches=int(readings.get("fail", 0)),
        warnings=int(readings.get("warn", 0)), missing=int(readings.get("error", 0)), alerts=alerts,
        stopped_by=stopped_by, verdict=verdict, decided_by=decided_by,
        decision=f"{_shown(decision.get('outcome'))}, {decision.get('action')}" if decision else None,
        run_state=run_state)


def read_store(engine, run_id: str) -> tuple[list[dict], dict[str, int]]:
    """The run's events (in order) and its observation count per status, from the store's
    tables (empty before the run's ``load`` task created them)."""
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            events = [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT kind, at, payload FROM soak_events WHERE run_id = :r ORDER BY id"), {"r": run_id})]
            counts = {status: n for status, n in conn.execute(sa.text(
                "SELECT status, count(*) FROM soak_observations WHERE run_id = :r GROUP BY status"), {"r": run_id})}
    except sa.exc.ProgrammingError:  # no tables yet
        return [], {}
    return events, counts


# --- showing it -------------------------------------------------------------------------------

class PlainReporter:
    """One line per update, at most every ``interval`` wall seconds (the final state is
    always written by ``close``). ``write``: where a line goes (default: stdout)."""

    def __init__(self, write: Callable[[str], None] | None = None, interval: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, prefix: str = "demo: "):
        self.write = write or (lambda line: print(line, flush=True))
        self.interval, self.clock, self.prefix = interval, clock, prefix
        self.lines: list[str] = []  # every progress line written
        self._last_at: float | None = None
        self._last: SoakState | None = None
        self._written: str | None = None

    def say(self, line: str) -> None:
        """A step line (stack up, Airflow up...), written at once."""
        self.write(self.prefix + line)

    def update(self, state: SoakState) -> None:
        self._last = state
        now = self.clock()
        line = state.line()
        if line != self._written and (self._last_at is None or now - self._last_at >= self.interval):
            self._emit(line, now)

    def _emit(self, line: str, now: float) -> None:
        self._written, self._last_at = line, now
        self.lines.append(line)
        self.write(self.prefix + line)

    def close(self, final: bool = True) -> None:
        """Write the last state if it was not written (``final``: the run ended; an
        interrupted demo writes nothing more)."""
        if final and self._last is not None and self._last.line() != self._written:
            self._emit(self._last.line(), self.clock())


class LiveReporter:
    """A live ``rich`` progress bar over the soak clock (0 to the soak's hours), with the
    phase, the soak hour, the readings, the verdict and what decided it; step lines print
    above it."""

    def __init__(self, stream: TextIO | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream or sys.stdout)
        from rich.text import Text

        class TwoLines(Progress):
            """The bar, then the detail (readings, the NO-GO, the verdict) on a line of its own,
            folded at the terminal's width: in one row an 80-column terminal cut it all to
            "passive … hour 9.9… 491 readings, ..., verdict…", the bar and the verdict gone."""

            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                for task in self.tasks:
                    yield Text("  " + str(task.fields.get("detail", "")), overflow="fold")

        self.progress = TwoLines(TextColumn("[bold]{task.description:<16}"), BarColumn(bar_width=30),
                                 TextColumn("{task.fields[hour]}"), TimeElapsedColumn(), console=self.console,
                                 refresh_per_second=4)
        self.task = None
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.console.print("demo: " + line, highlight=False, markup=False)

    def update(self, state: SoakState) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(state.phase, total=state.soak_hours, hour="", detail="")
        self.progress.update(self.task, description=state.phase, total=state.soak_hours,
                             completed=state.soak_hour or 0.0, hour=state.hour_text, detail=state.detail())
        self.lines.append(state.line())

    def close(self, final: bool = True) -> None:
        """Stop the live display (it stays on the screen as it last was)."""
        if self.task is not None:
            self.progress.stop()
            self.task = None


def make_reporter(stream: TextIO | None = None) -> PlainReporter | LiveReporter:
    """A live bar when ``stream`` (default stdout) is a terminal, plain lines otherwise."""
    stream = stream or sys.stdout
    if stream.isatty():
        return LiveReporter(stream)
    return PlainReporter(write=lambda line: print(line, file=stream, flush=True))
