"""``PrismaCliBackend`` against the real Prisma CLI (``include/prisma``, installed by ``make prisma-cli``).

The cross-check of issue 4: after ``LedgerBackend`` deploys, the real ``prisma migrate
status`` says the schema is up to date. The real-CLI tests are skipped only on a
developer machine without ``include/prisma/node_modules``; in CI (``CI`` set) they run, and a
missing install fails them. The timeout test needs no Prisma: a fake ``npx`` sleeps.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from migration_soak.exceptions import MigrationError
from migration_soak.migrate import LedgerBackend
from migration_soak.prisma_cli import PrismaCliBackend, PrismaCliError, confirm_status

from .conftest import DROP, INIT, MIGRATIONS, query

PROJECT = MIGRATIONS.parent
HAVE_CLI = (PROJECT / "node_modules" / ".bin" / "prisma").exists()

real_cli = pytest.mark.skipif(
    not HAVE_CLI and not os.environ.get("CI"),
    reason="include/prisma/node_modules is missing: run make prisma-cli",
)


@pytest.fixture
def cli(target) -> PrismaCliBackend:
    return PrismaCliBackend(target, PROJECT, timeout_s=120)


@real_cli
def test_real_status_agrees_with_ledger_backend(target, init_only_dir, cli, popen_recorder):
    LedgerBackend(target, init_only_dir).deploy()
    outcome = cli.migrate_status()
    assert (outcome.kind, outcome.migrations) == ("pending", [DROP]), outcome.message
    assert [(s.name, s.state) for s in cli.status()] == [(INIT, "applied"), (DROP, "pending")]

    LedgerBackend(target, MIGRATIONS).deploy()
    outcome = cli.migrate_status()
    assert outcome.kind == "up_to_date", outcome.message
    assert [(s.name, s.state) for s in cli.status()] == [(INIT, "applied"), (DROP, "applied")]

    # The password reached the CLI only through DATABASE_URL in its environment.
    argv, env = popen_recorder.calls[-1]
    assert argv[1:] == ["--no-install", "prisma", "migrate", "status"]
    assert target.password not in " ".join(argv)
    assert target.password in env["DATABASE_URL"]
    assert env["PRISMA_CLIENT_ENGINE_TYPE"] == "client"


@real_cli
def test_mark_rolled_back_reopens_the_migration_for_deploy(target, cli):
    LedgerBackend(target, MIGRATIONS).deploy()
    assert cli.mark_rolled_back(DROP) == 1
    assert cli.mark_rolled_back(DROP) == 0  # idempotent, like LedgerBackend's
    rows = query(target, "SELECT count(*) FROM _prisma_migrations WHERE migration_name = %s "
                         "AND rolled_back_at IS NULL", (DROP,))
    assert rows == [(0,)]  # no live row: deploy (Prisma's and ours) applies it again
    assert {s.name: s.is_pending for s in LedgerBackend(target, MIGRATIONS).status()} == {INIT: False, DROP: True}


@real_cli
def test_real_status_lists_rolled_back_migration_as_pending(target, cli):
    LedgerBackend(target, MIGRATIONS).deploy()
    cli.mark_rolled_back(DROP)
    outcome = cli.migrate_status()
    assert (outcome.kind, outcome.migrations) == ("pending", [DROP]), outcome.message


@real_cli
def test_real_status_reports_a_failed_migration(target, init_only_dir, cli):
    LedgerBackend(target, init_only_dir).deploy()
    query(target, "INSERT INTO _prisma_migrations (id, checksum, migration_name, logs) "
                  "VALUES ('00000000-0000-0000-0000-000000000001', %s, %s, 'boom')", ("0" * 64, DROP))
    outcome = cli.migrate_status()
    assert (outcome.kind, outcome.code, outcome.migrations) == ("failed_migration", "P3009", [DROP])
    assert [(s.name, s.state) for s in cli.status()] == [(INIT, "applied"), (DROP, "failed")]


@real_cli
def test_confirm_status_is_the_runbooks_step_3_after_deploy_and_after_rollback(target, init_only_dir, cli):
    """What the DAG's ``verify`` and ``rollback.mark_ledger`` require of the real CLI
    when the plan names a ``prisma_project`` (seed "Hora 0" step 3, rollback step 3)."""
    LedgerBackend(target, init_only_dir).deploy()
    with pytest.raises(PrismaCliError, match=r"does not show the schema up to date: it says pending \(" + DROP):
        confirm_status(cli, DROP, "applied")  # the migration did not happen
    assert confirm_status(cli, DROP, "pending").migrations == [DROP]

    LedgerBackend(target, MIGRATIONS).deploy()
    assert confirm_status(cli, DROP, "applied").kind == "up_to_date"
    with pytest.raises(PrismaCliError, match=f"does not show {DROP} pending: it says up_to_date"):
        confirm_status(cli, DROP, "pending")  # a rollback that left the ledger as it was

    cli.mark_rolled_back(DROP)
    assert len(cli.removed_rows) == 1 and cli.removed_rows[0]["migration_name"] == DROP
    assert confirm_status(cli, DROP, "pending").kind == "pending"


@real_cli
def test_real_status_unreachable_raises_without_secrets(pg_server, tmp_path):
    from demo import postgres
    from migration_soak.pgconn import PgTarget

    closed = PgTarget("127.0.0.1", postgres.free_port(), "nowhere", "postgres", "s3cret-Pass:word/@x")
    with pytest.raises(PrismaCliError) as err:
        PrismaCliBackend(closed, PROJECT, timeout_s=120).status()
    assert (err.value.kind, err.value.code) == ("unreachable", "P1001")
    assert "s3cret" not in str(err.value)


def _fake_npx(tmp_path: Path) -> tuple[Path, Path]:
    """An ``npx`` that starts a grandchild, writes both pids and sleeps."""
    pids = tmp_path / "pids"
    script = tmp_path / "npx"
    script.write_text(
        "#!/bin/sh\n"
        "sleep 300 &\n"
        f"echo \"$$ $!\" > {pids}\n"
        "echo 'still working...'\n"
        "sleep 300\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie is dead, only not reaped yet


def test_timeout_kills_the_whole_process_group(tmp_path):
    from migration_soak.pgconn import PgTarget

    npx, pids = _fake_npx(tmp_path)
    backend = PrismaCliBackend(PgTarget("127.0.0.1", 1, "db", "u", "pw-secret-1"), tmp_path,
                               timeout_s=1.5, npx=str(npx), kill_grace_s=2)
    started = time.monotonic()
    with pytest.raises(PrismaCliError) as err:
        backend.migrate_status()
    elapsed = time.monotonic() - started
    assert err.value.timed_out and err.value.kind == "error"
    assert "timed out after 1.5 s" in str(err.value) and "pw-secret-1" not in str(err.value)
    assert elapsed < 10
    shell, grandchild = (int(x) for x in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(shell) or _alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(shell) and not _alive(grandchild)


def test_missing_npx_raises_migration_error(tmp_path):
    from migration_soak.pgconn import PgTarget

    backend = PrismaCliBackend(PgTarget("127.0.0.1", 1, "db", "u", "pw"), tmp_path, npx=str(tmp_path / "nope"))
    with pytest.raises(MigrationError, match="cannot run"):
        backend.migrate_status()


@real_cli
@pytest.mark.timeout(120)
def test_the_clis_ddl_waits_at_most_the_plans_lock_timeout_behind_an_app_reader(seeded, tmp_path):
    """The Prisma CLI cannot take the ledger's ``SET LOCAL lock_timeout``; the plan's
    ``lock_timeout_s`` reaches its own connection as a startup option (``options=-c
    lock_timeout=...`` in its DATABASE_URL, also PGOPTIONS), so its DDL stops waiting after
    that long and the application's queries queued behind it wait no longer. On main the
    ALTER waited behind the reader until the CLI's own timeout killed it (15 s here), and
    the application's SELECT queued behind it 20 s, until its own statement_timeout: killing
    the CLI did not end the ALTER, whose server backend kept waiting for the lock. ``prisma db execute`` runs
    the DDL through the same driver as ``migrate deploy``, which the JavaScript engine of
    the test project cannot run yet (prisma/orm#27403)."""
    from migration_soak import runbook
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    m = plan.migration.model_copy(update={"backend": "prisma_cli", "prisma_project": str(PROJECT),
                                          "lock_timeout_s": 1.0, "prisma_timeout_s": 15})
    backend = runbook.backend(plan.model_copy(update={"migration": m}), seeded)
    ddl = tmp_path / "ddl.sql"
    ddl.write_text('ALTER TABLE "users" ADD COLUMN "soak_probe" INTEGER;\n')

    with _cli_behind_a_reader(seeded, backend, ddl) as outcome:
        app = seeded.connect(application_name="app")
        started = time.monotonic()
        with app.cursor() as cur:
            cur.execute("SET statement_timeout = '20s'")
            try:
                cur.execute("SELECT count(*) FROM users")  # queued behind the waiting ALTER
            except Exception as exc:  # noqa: BLE001 - main: still queued after 20 s
                assert "statement timeout" in str(exc)
        app_wait = time.monotonic() - started
        app.close()
    run = outcome["run"]
    assert app_wait < 1.0 + 0.5, app_wait
    assert run.returncode != 0 and "lock timeout" in run.stderr + run.stdout, (run.stdout, run.stderr)
    assert run.duration_s < 10, run.duration_s
    assert query(seeded, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'soak_probe'") == [(0,)]
    # Only the CLI's own connection: the server's default is untouched.
    assert query(seeded, "SELECT current_setting('lock_timeout')") == [("0",)]


@real_cli
def test_a_scripts_own_lock_timeout_replaces_the_startup_option_so_preflight_refuses_it(seeded, tmp_path):
    """The startup option is the CLI session's default only: a script's own ``SET
    lock_timeout = 0`` replaces it, and the CLI's ALTER waits behind the app's reader
    without bound again (here: still waiting after 3 s with a 1 s lock_timeout_s), the
    application's queries queued behind it. So preflight refuses such a script with this
    backend too (``runbook.own_timeouts``; on main it was left alone)."""
    from migration_soak import runbook
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    m = plan.migration.model_copy(update={"backend": "prisma_cli", "prisma_project": str(PROJECT),
                                          "lock_timeout_s": 1.0, "prisma_timeout_s": 15,
                                          "migrations_dir": str(tmp_path / "migrations")})
    cli_plan = plan.model_copy(update={"migration": m})
    backend = runbook.backend(cli_plan, seeded)
    script = 'SET lock_timeout = 0;\nALTER TABLE "users" ADD COLUMN "soak_probe" INTEGER;\n'
    ddl = tmp_path / "ddl.sql"
    ddl.write_text(script)

    with _cli_behind_a_reader(seeded, backend, ddl) as outcome:
        time.sleep(3.0)  # three lock_timeout_s later
        still = query(seeded, "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted")
    assert still == [(1,)], still
    assert outcome["run"].returncode == 0  # it waited and then ran: nothing bounded it
    query(seeded, 'ALTER TABLE "users" DROP COLUMN "soak_probe"')

    folder = tmp_path / "migrations" / DROP
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text(script)
    with pytest.raises(MigrationError, match=rf"{DROP}/migration\.sql sets its own timeout: 'SET lock_timeout = 0'"):
        runbook.own_timeouts(cli_plan, [DROP])


@contextlib.contextmanager
def _cli_behind_a_reader(seeded, backend, ddl):
    """An app reader holds ACCESS SHARE on ``users`` while the real CLI runs ``ddl`` (``prisma
    db execute``) in a thread; yields the dict the CLI's run lands in (``run``) once its
    ALTER waits for its lock; on exit the reader ends (the ALTER may then run) and the CLI
    is joined."""
    reader = seeded.connect(application_name="app-reader")  # a long read: ACCESS SHARE on users
    reader.cursor().execute("SELECT count(*) FROM users")
    outcome: dict = {}
    cli = threading.Thread(target=lambda: outcome.update(run=backend.run_cli(
        "db", "execute", "--file", str(ddl), "--schema", "schema.prisma")))
    try:
        cli.start()
        waiting: list = []
        for _ in range(300):  # node's start-up: until the ALTER waits for its lock
            waiting = query(seeded, "SELECT pid FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted")
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the CLI's ALTER never waited for its lock"
        yield outcome
    finally:
        reader.rollback()
        reader.close()
        cli.join(30)
