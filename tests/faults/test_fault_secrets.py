"""Secrets (issue 4, item 5): a password made of URL-special characters survives every
path that carries it, and appears in no log, exception, command line or written file."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg2.extensions
import pytest
# Airflow configures logging when first imported: do it at collection, not inside the
# test, so it cannot replace the handler caplog installs for the test.
from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: F401

from migration_soak import sources
from migration_soak.backup import take_backup
from migration_soak.exceptions import SoakError
from migration_soak.migrate import LedgerBackend
from migration_soak.pgconn import PgTarget
from migration_soak.plan import load_plan
from migration_soak.rollback import restore_columns
from migration_soak.sources import sql as sql_source
from tests.integration.conftest import DOWN_SQL, MIGRATIONS, USERS_COLUMNS, seed_users, snapshot

ROLE = "soak_secret_role"
# Every character a URL, a conninfo string, a .pgpass line or a shell would treat
# specially; PostgreSQL accepts any of them in a password.
PASSWORD = "p@ss:w/rd?#%&=+ ;'\"\\$`!~[]{}<>|^*,é-Zq7"


@pytest.mark.timeout(180)
def test_password_with_url_special_characters_never_leaks(pg_server, fresh_db, pg_bin, tmp_path, tmp_path_factory,
                                                          monkeypatch, popen_recorder, caplog, capfd):
    admin = pg_server.connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        # The server gets a SCRAM verifier, never the clear text (not even in its own log).
        verifier = psycopg2.extensions.encrypt_password(PASSWORD, ROLE, admin, "scram-sha-256")
        cur.execute(f'DROP ROLE IF EXISTS "{ROLE}"')
        cur.execute(f'CREATE ROLE "{ROLE}" LOGIN PASSWORD %s', (verifier,))
        cur.execute(f'ALTER DATABASE "{fresh_db}" OWNER TO "{ROLE}"')
    admin.close()
    server_log = Path(pg_server.log_path)
    log_offset = server_log.stat().st_size if server_log.exists() else 0

    # Through an Airflow connection, JSON and URI forms: the password arrives intact.
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING", json.dumps({
        "conn_type": "postgres", "host": pg_server.host, "port": pg_server.port, "login": ROLE,
        "password": PASSWORD, "schema": fresh_db}))
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING_URI",
                       f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@{pg_server.host}:{pg_server.port}/{fresh_db}")
    target = PgTarget.from_airflow("soak_staging")
    assert target == PgTarget(pg_server.host, pg_server.port, fresh_db, ROLE, PASSWORD)
    assert PgTarget.from_airflow("soak_staging_uri") == target

    errors: list[str] = []
    out = tmp_path / "work"
    caplog.set_level(logging.DEBUG)
    try:
        init_dir = out / "migrations_init"
        init_dir.mkdir(parents=True)
        (init_dir / "migration_lock.toml").write_bytes((MIGRATIONS / "migration_lock.toml").read_bytes())
        init = sorted(p for p in MIGRATIONS.iterdir() if p.is_dir())[0]
        (init_dir / init.name).mkdir()
        (init_dir / init.name / "migration.sql").write_bytes((init / "migration.sql").read_bytes())
        LedgerBackend(target, init_dir).deploy()
        seed_users(target, 1, 300)
        before = snapshot(target)

        backup = take_backup(target, out / "backups", pg_bin, "pre")
        LedgerBackend(target, MIGRATIONS).deploy()

        plan = load_plan("default")
        m = sources.measure(plan.check("users_without_authorizer_id"), plan)
        assert m.value == 0
        with pytest.raises(SoakError) as err:
            sql_source.run_readonly("soak_staging", "DELETE FROM users")
        errors.append(str(err.value))

        result = restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
        assert result.mismatches == 0 and snapshot(target) == before

        # Failing paths, each with the real password in play.
        for fail in (
            lambda: take_backup(target, out / "b1", pg_bin, "pre", tables=("no_such_table",)),
            lambda: take_backup(PgTarget(target.host, target.port, "no_such_db", ROLE, PASSWORD), out / "b2", pg_bin, "x"),
            lambda: take_backup(PgTarget(target.host, target.port, fresh_db, ROLE, PASSWORD[::-1]), out / "b3",
                                pg_bin, "x"),
            lambda: LedgerBackend(PgTarget(target.host, target.port, "no_such_db", ROLE, PASSWORD), MIGRATIONS).deploy(),
            lambda: restore_columns(target, backup.__class__(**{**backup.__dict__, "sha256": "0" * 64}), pg_bin,
                                    down_sql=DOWN_SQL, **USERS_COLUMNS),
        ):
            with pytest.raises(SoakError) as err:
                fail()
            errors.append(str(err.value))
            errors.append(repr(err.value))

        # A .pgpass line escapes ':' and '\' (libpq docs): psql logs in with it.
        passdir = tmp_path_factory.mktemp("passfile")
        env = target.child_env(passfile=passdir / "pgpass")
        assert "PGPASSWORD" not in env
        psql = subprocess.run([str(pg_bin / "psql"), "--no-password", "-tAc", "SELECT current_user"],
                              env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert psql.returncode == 0 and psql.stdout.strip() == ROLE, psql.stderr
        (passdir / "pgpass").unlink()
    finally:
        admin = pg_server.connect()
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{fresh_db}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{ROLE}"')
        admin.close()

    forms = {PASSWORD, quote(PASSWORD, safe=""), quote_plus(PASSWORD), quote(PASSWORD)}
    texts: dict[str, str] = {
        "log records": "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records),
        "exceptions": "\n".join(errors),
        "repr": repr(target) + target.describe() + str(backup) + str(result.to_dict()),
    }
    captured = capfd.readouterr()
    texts["stdout/stderr"] = captured.out + captured.err
    for i, (argv, _env) in enumerate(popen_recorder.calls):
        texts[f"argv {i}"] = "\0".join(argv)
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and path.suffix != ".dump":
            texts[f"file {path.relative_to(tmp_path)}"] = path.read_bytes().decode("utf-8", "replace")
    if server_log.exists():
        with open(server_log, "rb") as handle:
            handle.seek(log_offset)
            texts["server log"] = handle.read().decode("utf-8", "replace")

    assert len(caplog.records) >= 5 and len(popen_recorder.calls) >= 6 and len(errors) >= 11
    assert any("no_such_table" in e for e in errors) and any("password authentication failed" in e for e in errors)
    leaks = [where for where, text in texts.items() if any(form in text for form in forms)]
    assert leaks == [], leaks
    print(f"\nchecked {len(caplog.records)} log records, {len(errors)} exception texts, "
          f"{len(popen_recorder.calls)} subprocess argv, {sum(k.startswith('file') for k in texts)} files; "
          f"loggers {sorted({r.name for r in caplog.records})}")
