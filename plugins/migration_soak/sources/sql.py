"""``sql`` source: the seed's validation queries, run read-only on the staging database.

Each query runs in a read-only transaction with a ``statement_timeout`` and is rolled
back, so a plan query can neither write nor hold locks for long (``EXPLAIN ANALYZE``
executes its statement: the rollback undoes anything it did).
"""

from __future__ import annotations

import re

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import SQL_DIR, Check
from migration_soak.sources import Measurement

STATEMENT_TIMEOUT_MS = 30_000
_EXEC_TIME = re.compile(r"Execution Time: ([0-9.]+) ms")


def run_readonly(conn_id: str, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` read-only on the Postgres connection ``conn_id``; returns (columns, rows).

    Uses ``PostgresHook``; the transaction is always rolled back.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        with conn.cursor() as cur:
            # First statement of the implicit transaction (psycopg2 and psycopg 3 alike).
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            # Name ourselves, so the database log's slow-query checks can leave the soak's own
            # queries out (the same name as PgTarget and the pg_dump/pg_restore children).
            cur.execute("SET LOCAL application_name = 'migration-soak'")
            cur.execute(sql)
            columns = [d.name for d in cur.description] if cur.description else []
            rows = cur.fetchall() if cur.description else []
        return columns, rows
    finally:
        conn.rollback()
        conn.close()


def measure(check: Check, conn_id: str) -> Measurement:
    """Run the check's ``.sql`` file and take its value (see ``SqlSource``).

    Raises ``MeasurementError`` for an empty result or a NULL cell.
    """
    src = check.source
    sql = (SQL_DIR / src.sql).read_text(encoding="utf-8")
    columns, rows = run_readonly(conn_id, sql)
    evidence = {"sql": src.sql, "columns": columns, "rows": [[_jsonable(v) for v in r] for r in rows[:20]]}
    if src.measure == "rows":
        return Measurement(float(len(rows)), evidence)
    if src.measure == "explain_ms":
        plan_text = "\n".join(r[0] for r in rows)
        found = _EXEC_TIME.search(plan_text)
        if not found:
            raise MeasurementError(f"{check.id}: no 'Execution Time' in the EXPLAIN ANALYZE output")
        return Measurement(float(found.group(1)), {"sql": src.sql, "plan": plan_text[-2000:]})
    if not rows:
        raise MeasurementError(f"{check.id}: {src.sql} returned no row")
    row = dict(zip(columns, rows[0]))
    if src.measure == "ratio":
        num, den = row.get(src.numerator), row.get(src.denominator)
        if num is None or den is None:
            raise MeasurementError(f"{check.id}: columns {src.numerator!r}/{src.denominator!r} not in {columns}")
        if den == 0:
            raise MeasurementError(f"{check.id}: {src.denominator} is 0, the ratio is undefined")
        return Measurement(float(num) / float(den), evidence)
    column = src.column or columns[0]
    if column not in row:
        raise MeasurementError(f"{check.id}: column {column!r} not in {columns}")
    if row[column] is None:
        raise MeasurementError(f"{check.id}: {column} is NULL")
    return Measurement(float(row[column]), evidence)


def _jsonable(v):
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
