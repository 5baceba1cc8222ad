"""The top-up: the dropped columns of the rows written since the pre-migration backup,
copied just before the DDL, so that the rollback gives back values written meanwhile.

Between the backup (Hora 0 step 1) and the DDL (step 2) the DAG rehearses the rollback on
a scratch copy and fingerprints the table: minutes at scale, while the application keeps
writing. A value of a dropped column written then is in neither the backup nor the table
after the DDL. The ``migrate`` task therefore copies, just before it deploys, ``key`` and
the dropped ``columns`` of every row whose ``xmin`` is at or after the backup's watermark
(``increment.changed_since``: one read-only REPEATABLE READ transaction, a seq scan with
that filter, no lock beyond ACCESS SHARE), into one zstd file kept next to the backup and
read back whole. The rollback overlays it on the staged backup (``rollback._stage``): those
rows' values are the top-up's, rows inserted since the backup are added.

What the first top-up does not capture: values written between its snapshot and the
moment the DDL holds its lock (0.23 s on the embedded server, plus any lock-timeout
retries). With the ledger backend the gap is closed by :class:`Closing`: inside the
migration's own transaction, under ``LOCK ... IN ACCESS EXCLUSIVE MODE``, the lock the
DDL takes anyway, taken first (a weaker lock upgraded by the DDL would deadlock with an
application transaction that read the table and then writes it), the same rows are
copied again, and that top-up, kept after the DDL committed, is the one the rollback
overlays. The lock's wait and the copy share one ``lock_timeout_s`` (the copy at most half
of what is left), so the application queues no longer than behind the DDL alone; a copy that does not fit, a
copy whose local file cannot be written, or the Prisma CLI backend (its transaction is
not ours), leaves the first top-up standing and a ``topup_gap`` event says so: the first
top-up is kept and read back already, and the gap it leaves (values written in the seconds
before the DDL's lock) is named in the report and the restore, not worth failing the
migration for (which, on the ledger backend, also left a failed P3018 ledger row).

Design notes: docs/design.md#topuppy
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass
from datetime import timezone
from typing import Any, Sequence

from psycopg2 import sql

from migration_soak.exceptions import BackupError
from migration_soak.increment import (STATEMENT_TIMEOUT_MS, _age_limit, _connect, _copy_to, _read_back, _rollback,
                                      changed_since, snapshot_read)
from migration_soak.pgconn import STABLE_TEXT_OUTPUT, PgTarget, split_table

log = logging.getLogger(__name__)

FILE = "topup.copy.zst"


@dataclass(frozen=True)
class TopUp:
    """What :func:`take` kept: ``location`` (the file, an ``ObjectStoragePath`` URL) and
    ``storage_conn_id``; ``table`` (``schema.table``), ``key``, ``columns`` (the dropped
    ones, in order: the file's COPY text columns are ``key, *columns``); ``since`` (the
    backup's watermark, ``None``: every row copied), ``watermark`` (this snapshot's);
    ``rows`` (lines in the file), ``bytes`` (compressed), ``sha256`` (hex); ``taken_at``
    (ISO-8601 UTC, the snapshot's ``now()``); ``duration_s`` (wall seconds); ``encoding``
    (the client encoding the COPY text was written in)."""

    location: str
    storage_conn_id: str | None
    table: str
    key: str
    columns: tuple[str, ...]
    since: str | None
    watermark: str
    rows: int
    bytes: int
    sha256: str
    taken_at: str
    duration_s: float
    encoding: str = "UTF8"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "columns": list(self.columns)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TopUp":
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**fields, "columns": tuple(fields["columns"])})


def take(target: PgTarget, root: Any, label: str, table: str, key: str, columns: Sequence[str], since: str | None,
         *, conn_id: str | None = None, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> TopUp | None:
    """Copy ``key`` and ``columns`` of ``table``'s rows written since ``since`` into
    ``root / label / topup.copy.zst``, kept and read back whole.

    ``root``: an ``ObjectStoragePath`` (``backup_storage.plan_root(plan)``); ``since``: the
    pre-migration backup's watermark (``None``, or one that cannot select rows: every row).
    Returns ``None`` when ``table`` no longer has one of ``columns`` (the DDL already ran:
    a retried ``migrate`` task). Raises ``BackupError`` naming the step: the table missing,
    a failed statement, a storage failure, a file that does not read back.
    """
    from migration_soak.backup_storage import keep, working_folder

    started = time.monotonic()
    if not re.fullmatch(r"[A-Za-z0-9._-]+", label) or label.startswith("."):
        raise BackupError(f"top-up label {label!r} is not a plain file name (letters, digits, '._-')")
    schema, name = split_table(table)
    dest = root / label / FILE
    with working_folder() as work:
        conn = _connect(target)
        encoding = conn.encoding
        try:
            with conn.cursor() as cur:
                watermark, taken_at = snapshot_read(cur, statement_timeout_ms)
                cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                            "AND NOT attisdropped", (sql.Identifier(schema, name).as_string(cur),))
                present = {r[0] for r in cur.fetchall()}
                if not present:
                    raise BackupError(f"top-up: table {schema}.{name} does not exist")
                if key not in present:
                    raise BackupError(f"top-up: table {schema}.{name} has no column {key!r}")
                if any(c not in present for c in columns):
                    log.info("top-up of %s.%s skipped: %s already dropped", schema, name,
                             ", ".join(c for c in columns if c not in present))
                    return None
                limit = _age_limit(cur, since, int(watermark))
                select = sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, (key, *columns))), sql.Identifier(schema, name))
                if limit is not None:
                    select = sql.SQL("{} WHERE {}").format(select, changed_since(limit))
                sink = _copy_to(cur, select, work / FILE)
        except BackupError:
            raise
        except Exception as exc:
            raise BackupError(f"top-up of {schema}.{name} on {target.describe()} failed: "
                              f"{target.scrub(str(exc)).strip()}") from None
        finally:
            _rollback(conn)
            conn.close()
        digest = sink.digest.hexdigest()
        keep(work / FILE, dest, digest)
    got_sha, got_rows = _read_back(dest)
    if got_sha != digest or got_rows != sink.lines:
        raise BackupError(f"top-up file {dest} reads back as sha256 {got_sha} with {got_rows} lines, not "
                          f"{digest} with {sink.lines}")
    out = TopUp(location=str(dest), storage_conn_id=conn_id, table=f"{schema}.{name}", key=key,
                columns=tuple(columns), since=since if limit is not None else None, watermark=str(watermark),
                rows=sink.lines, bytes=sink.size, sha256=digest,
                taken_at=taken_at.astimezone(timezone.utc).isoformat(),
                duration_s=round(time.monotonic() - started, 3), encoding=encoding)
    log.info("top-up of %s: %d rows written since watermark %s, %d bytes, %.2f s", out.table, out.rows, since,
             out.bytes, out.duration_s)
    return out


class Closing:
    """The last top-up, taken inside the migration's transaction (``LedgerBackend.before_script``):
    ``LOCK <table> IN ACCESS EXCLUSIVE MODE``, the DDL's own lock taken first (under the
    script's ``lock_timeout``: a timeout is retried as the DDL's own; never a weaker lock
    the DDL would upgrade: an application transaction that read the table, then writes it,
    would deadlock with that upgrade, and PostgreSQL would abort one of them), then, in a savepoint rolled back afterwards (its
    ``SET LOCAL`` settings end there; the lock, taken before it, stays), the ``key`` and
    ``columns`` of the rows written since ``since`` copied to ``work / FILE``.

    ``timeout_ms`` (the migration's ``lock_timeout``) is the whole time the application
    may queue behind this transaction: the lock's wait, then the copy (bounded by half of
    what is left, ``statement_timeout``); the DDL, its lock held already, does not wait
    (``lock_timeout`` set to the rest all the same, for any other table it locks). A copy that does not fit, or
    whose local file cannot be written (``OSError``: the disk full, the folder gone), is given up: the
    transaction goes on to the DDL without it and the gap is recorded. ``taken``: ``(watermark, taken_at, rows, bytes, sha256, encoding)``
    once copied; ``None`` when not, ``skipped`` says why."""

    def __init__(self, table: str, key: str, columns: Sequence[str], since: str | None, work: Any, timeout_ms: int):
        self.schema, self.name = split_table(table)
        self.key, self.columns, self.since, self.work = key, tuple(columns), since, work
        self.timeout_ms = max(1, int(timeout_ms))
        self.taken: tuple[str, str, int, int, str, str] | None = None
        self.skipped: str | None = None
        #: the migration's transaction committed after this top-up ran (``on_commit``)
        self.committed = False

    def on_commit(self) -> None:
        """Called by ``LedgerBackend`` once the migration's transaction committed: the copy
        (or the gap) is the run's, even if a later migration of the deploy fails."""
        self.committed = True

    def __call__(self, cur: Any) -> None:
        import psycopg2

        self.taken, self.skipped, self.committed = None, None, False
        ident = sql.Identifier(self.schema, self.name)
        started = time.monotonic()
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(ident))
        left_ms = self.timeout_ms - int((time.monotonic() - started) * 1000)
        if left_ms < 2:
            self.skipped = f"the lock took the whole {self.timeout_ms} ms the application's writes may wait"
            log.warning("closing top-up of %s.%s skipped: %s", self.schema, self.name, self.skipped)
            # the DDL's wait gets what is left too, not a whole lock_timeout again
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, left_ms)}ms",))
            return
        cur.execute("SAVEPOINT soak_closing_topup")
        try:
            cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(max(1, left_ms // 2))))
            for stmt in STABLE_TEXT_OUTPUT:
                cur.execute(stmt)
            cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text, now()")
            watermark, taken_at = cur.fetchone()
            limit = _age_limit(cur, self.since, int(watermark))
            select = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, (self.key, *self.columns))), ident)
            if limit is not None:
                select = sql.SQL("{} WHERE {}").format(select, changed_since(limit))
            sink = _copy_to(cur, select, self.work / FILE)
            self.taken = (str(watermark), taken_at.astimezone(timezone.utc).isoformat(), sink.lines, sink.size,
                          sink.digest.hexdigest(), cur.connection.encoding)
        except psycopg2.errors.QueryCanceled as exc:
            self.skipped = f"the copy under the lock did not finish within {self.timeout_ms} ms ({exc.pgerror or exc})"
            log.warning("closing top-up of %s.%s skipped: %s", self.schema, self.name, self.skipped)
        except OSError as exc:
            # the local file (disk full, folder gone): the first top-up is kept already, so give
            # the copy up like one that does not fit; the savepoint's rollback below leaves the
            # migration's transaction as it was, and the gap is recorded (runbook._keep_closing)
            self.skipped = (f"the copy under the lock could not be written to the local working folder "
                            f"({type(exc).__name__}: {exc})")
            log.warning("closing top-up of %s.%s skipped: %s", self.schema, self.name, self.skipped)
            try:
                (self.work / FILE).unlink(missing_ok=True)
            except OSError:
                pass
        finally:
            cur.execute("ROLLBACK TO SAVEPOINT soak_closing_topup")
            cur.execute("RELEASE SAVEPOINT soak_closing_topup")
            rest = max(1, self.timeout_ms - int((time.monotonic() - started) * 1000))
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{rest}ms",))

    def keep(self, root: Any, label: str, conn_id: str | None, started: float) -> "TopUp | None":
        """After the migration committed: keep what :meth:`__call__` copied at
        ``root / label / FILE`` and read it back whole; its ``TopUp`` (``None`` when
        nothing was copied). Raises ``BackupError``."""
        from migration_soak.backup_storage import keep

        if self.taken is None:
            return None
        watermark, taken_at, rows, size, digest, encoding = self.taken
        dest = root / label / FILE
        keep(self.work / FILE, dest, digest)
        got_sha, got_rows = _read_back(dest)
        if got_sha != digest or got_rows != rows:
            raise BackupError(f"top-up file {dest} reads back as sha256 {got_sha} with {got_rows} lines, not "
                              f"{digest} with {rows}")
        return TopUp(location=str(dest), storage_conn_id=conn_id, table=f"{self.schema}.{self.name}", key=self.key,
                     columns=self.columns, since=self.since, watermark=watermark, rows=rows, bytes=size,
                     sha256=digest, taken_at=taken_at, duration_s=round(time.monotonic() - started, 3),
                     encoding=encoding)


def open_file(topup: TopUp) -> Any:
    """The kept top-up file as an ``ObjectStoragePath`` (read it with ``.open("rb")``)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(topup.location, conn_id=topup.storage_conn_id)
