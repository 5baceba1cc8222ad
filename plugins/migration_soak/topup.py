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

What it does not capture: values written between the top-up's snapshot and the moment the
DDL holds its lock (the DDL's own wait: at most ``lock_timeout_s`` per try). The ``topup``
event records the snapshot time so the restore can say so.

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
from migration_soak.pgconn import PgTarget, split_table

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


def open_file(topup: TopUp) -> Any:
    """The kept top-up file as an ``ObjectStoragePath`` (read it with ``.open("rb")``)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(topup.location, conn_id=topup.storage_conn_id)
