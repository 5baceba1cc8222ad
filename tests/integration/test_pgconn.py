"""pgconn.PgTarget: the password stays out of repr, argv and inherited environments."""

from __future__ import annotations

from migration_soak.pgconn import PgTarget


def test_repr_and_describe_hide_the_password():
    target = PgTarget("db.example", 5432, "staging", "soak", "hunter2-very-secret")
    for text in (repr(target), str(target), target.describe(), f"{target}"):
        assert "hunter2-very-secret" not in text
    assert "password='***'" in repr(target)
    assert "password=None" in repr(PgTarget("h", 1, "d", "u", None))
    assert target.scrub("x hunter2-very-secret y") == "x *** y"


def test_child_env_replaces_inherited_connection_variables():
    base = {"PATH": "/bin", "PGHOST": "other-host", "PGPASSWORD": "other-password", "PGDATABASE": "other"}
    env = PgTarget("db.example", 6543, "staging", "soak", "s3cret-pass").child_env(base)
    assert env == {
        "PATH": "/bin", "PGHOST": "db.example", "PGPORT": "6543", "PGDATABASE": "staging",
        "PGUSER": "soak", "PGAPPNAME": "migration-soak", "PGPASSWORD": "s3cret-pass",
    }
    nopw = PgTarget("db.example", 6543, "staging", "soak", None).child_env(base)
    assert "PGPASSWORD" not in nopw  # an inherited password for another target is not reused


def test_connect_works_over_tcp_with_the_password(pg_server, fresh_db):
    conn = PgTarget(pg_server.host, pg_server.port, fresh_db, "postgres", pg_server.password).connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_setting('application_name')")
            assert cur.fetchone() == (fresh_db, "migration-soak")
    finally:
        conn.close()


def test_from_airflow_reads_a_postgres_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING_DB", "postgresql://soak:p%40ss-w0rd@db.example:6543/staging")
    target = PgTarget.from_airflow("soak_staging_db")
    assert target == PgTarget("db.example", 6543, "staging", "soak", "p@ss-w0rd")
    assert "p@ss-w0rd" not in repr(target)
