"""``prisma_cli.classify`` on output captured from the real Prisma CLI (prisma 6.19.3).

The fixtures live in ``tests/fixtures/prisma/``: files without the ``synthetic_`` prefix
were written by ``capture.py`` from real runs against the embedded PostgreSQL in each
ledger state; ``synthetic_*`` files hold Prisma's documented texts for states this
offline setup cannot produce (``migrate deploy`` does not run on the JavaScript schema
engine yet, prisma/orm#27403).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migration_soak.prisma_cli import CliOutcome, classify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prisma"
INIT = "20250101000000_init"
DROP = "20251202020032_update_user_schema_final"
FOREIGN = "20251120000000_hotfix_from_another_branch"


def load(name: str) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of a fixture file."""
    text = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
    code = int(re.search(r"^# exit code: (\d+)$", text, re.MULTILINE).group(1))
    stdout = text.split("--- stdout ---\n", 1)[1].split("--- stderr ---\n", 1)[0]
    stderr = text.split("--- stderr ---\n", 1)[1]
    return code, stdout, stderr


CASES = {
    # real CLI, `migrate status`
    "up_to_date": ("up_to_date", None, []),
    "pending": ("pending", None, [DROP]),
    "empty_database": ("pending", None, [INIT, DROP]),
    "failed_migration": ("failed_migration", "P3009", [DROP]),
    "unreachable": ("unreachable", "P1001", []),
    "diverged": ("diverged", None, [DROP, FOREIGN]),
    # A non-empty schema without a ledger: prisma 6.19.3 (JavaScript schema engine)
    # reports every migration as pending, not "not managed by Prisma Migrate".
    "not_managed": ("pending", None, [INIT, DROP]),
    # Prisma's `migrate status` ignores rolled_back_at: after mark_rolled_back it still
    # says "up to date" (deploy would apply the migration again). See the integration test.
    "pending_after_rollback": ("up_to_date", None, []),
    # real CLI, other commands this setup cannot run
    "deploy_js_engine": ("error", None, []),
    "resolve_rolled_back_finished": ("error", None, []),
    # documented texts
    "synthetic_status_not_managed": ("not_managed", "P3005", []),
    "synthetic_deploy_p3009": ("failed_migration", "P3009", [DROP]),
    "synthetic_deploy_p3018": ("failed_to_apply", "P3018", [DROP]),
    "synthetic_deploy_p1002": ("lock_timeout", "P1002", []),
    "synthetic_deploy_applied": ("up_to_date", None, [DROP]),
    "synthetic_deploy_nothing": ("up_to_date", None, []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_classify_captured_output(name):
    kind, code, migrations = CASES[name]
    outcome = classify(*load(name))
    assert isinstance(outcome, CliOutcome)
    assert (outcome.kind, outcome.code, outcome.migrations) == (kind, code, migrations), outcome.message
    assert outcome.message  # something to log


def test_every_fixture_is_classified_by_a_case():
    files = {p.stem for p in FIXTURES.glob("*.txt")}
    assert files == set(CASES)


def test_fixtures_hold_no_real_host_port_or_database_password():
    for path in FIXTURES.glob("*.txt"):
        text = path.read_text(encoding="utf-8")
        assert "127.0.0.1" not in text, path.name
        assert "postgresql://" not in text, path.name
        for port in re.findall(r"db\.example:(\d+)", text):
            assert port == "5432", path.name


def test_messages_drop_the_cli_banner():
    outcome = classify(*load("unreachable"))
    assert outcome.message.startswith("Error: Can't reach database server at `db.example:5432`")
    assert "Loaded Prisma config" not in outcome.message


def test_ansi_colours_are_ignored():
    code, stdout, stderr = load("pending")
    coloured = stdout.replace(DROP, f"\x1b[1m{DROP}\x1b[22m").replace("prisma migrate deploy",
                                                                      "\x1b[32mprisma migrate deploy\x1b[39m")
    assert classify(code, coloured, stderr).migrations == [DROP]


def test_up_to_date_needs_exit_code_zero():
    _, stdout, stderr = load("up_to_date")
    assert classify(1, stdout, stderr).kind == "error"


def test_unknown_text_is_an_error_with_its_code():
    outcome = classify(1, "", "Error: P1000\n\nAuthentication failed against database server at `db.example`")
    assert (outcome.kind, outcome.code) == ("error", "P1000")
    assert classify(None, "", "").message == "exit code None, no output"


# --- rules the captured outputs do not isolate (each recogniser, and their order) -------

LOCK_CONTEXT = ("Context: Timed out trying to acquire a postgres advisory lock "
                "(SELECT pg_advisory_lock(72707369)). Timeout: 10000ms.")


def kind_code_names(returncode, stdout, stderr):
    outcome = classify(returncode, stdout, stderr)
    return outcome.kind, outcome.code, outcome.migrations


@pytest.mark.parametrize("stderr, expected", [
    # the text alone names the state, without an error code
    (f"Error: {LOCK_CONTEXT}", ("lock_timeout", "P1002", [])),
    ("Error: Can't reach database server at `db.example:5432`", ("unreachable", "P1001", [])),
    ("Error: The current database is not managed by Prisma Migrate.", ("not_managed", "P3005", [])),
    ("A migration failed to apply. New migrations cannot be applied before the error is recovered from.\n\n"
     f"Migration name: {DROP}\n", ("failed_to_apply", "P3018", [DROP])),
    # the code alone names the state, whatever the text
    ("Error: P3018\n\nsomething new", ("failed_to_apply", "P3018", [])),
    ("Error: P1002\n\nsomething new", ("lock_timeout", "P1002", [])),
    # a bare code (no "Error:") counts in stderr
    ("the schema engine stopped with P1001 while connecting", ("unreachable", "P1001", [])),
])
def test_each_error_is_recognised_by_its_code_or_its_text(stderr, expected):
    assert kind_code_names(1, "", stderr) == expected


def test_a_bare_code_in_stdout_is_not_read():
    assert kind_code_names(1, "the schema engine stopped with P1001", "") == ("error", None, [])


def test_failed_migrations_are_listed_once_from_the_heading_else_from_p3009_lines():
    listed = f"Following migrations have failed:\n{DROP}\n{DROP}\n{INIT}\n\nDuring development..."
    assert kind_code_names(1, listed, "") == ("failed_migration", "P3009", [DROP, INIT])
    started = f"Error: P3009\n\nThe `{DROP}` migration started at 2025-12-02 02:15:11 UTC failed\n"
    assert kind_code_names(1, "", started + started) == ("failed_migration", "P3009", [DROP])


def test_errors_win_over_states_and_over_each_other_in_order():
    pending = f"Following migration have not yet been applied:\n{DROP}\n\n"
    failed = f"Following migration have failed:\n{INIT}\n\n"
    # a failed migration before a failed apply, before unreachable, before a lock timeout
    assert classify(1, pending + failed, "Error: P3018\nCan't reach database server").kind == "failed_migration"
    assert classify(1, "", "Error: P3018\nCan't reach database server\n" + LOCK_CONTEXT).kind == "failed_to_apply"
    assert classify(1, "", "Error: P1001\n" + LOCK_CONTEXT).kind == "unreachable"
    # a diverged history quotes "have not yet been applied" and keeps whatever code it has
    diverged = ("Error: P3006\nYour local migration history and the migrations table from your database are "
                f"different:\n\nThe migrations have not yet been applied:\n{DROP}\n\n"
                "The migrations from the database are not found locally in prisma/migrations:\n"
                f"{INIT}\n{DROP}\n\nnot managed by Prisma Migrate")
    assert kind_code_names(1, "", diverged) == ("diverged", "P3006", [DROP, INIT])


def test_pending_and_up_to_date_need_no_error_code():
    pending = f"Following migration have not yet been applied:\n{DROP}\n\n"
    assert kind_code_names(1, pending, "") == ("pending", None, [DROP])
    assert kind_code_names(1, pending, "Error: P1000 authentication failed") == ("error", "P1000", [])
    assert kind_code_names(0, "No pending migrations to apply.", "Error: P1000") == ("error", "P1000", [])


def test_applied_migrations_are_the_tree_folders_and_need_exit_code_zero():
    code, stdout, stderr = load("synthetic_deploy_applied")
    assert kind_code_names(0, stdout + f"  └─ {DROP}/\n", stderr) == ("up_to_date", None, [DROP])
    assert kind_code_names(1, stdout, stderr) == ("error", None, [])


def test_the_plans_lock_timeout_reaches_the_clis_connections_as_a_startup_option(tmp_path):
    from migration_soak import runbook
    from migration_soak.pgconn import PgTarget
    from migration_soak.plan import load_plan

    target = PgTarget(host="db", port=5432, database="app", user="soak", password="s3cret")
    plan = load_plan("default")
    m = plan.migration.model_copy(update={"backend": "prisma_cli", "prisma_project": str(tmp_path),
                                          "lock_timeout_s": 2.5})
    backend = runbook.backend(plan.model_copy(update={"migration": m}), target)
    env = backend.child_env({"PGOPTIONS": "-c lock_timeout=0", "PATH": "/bin"})
    assert env["DATABASE_URL"] == ("postgresql://soak:s3cret@db:5432/app?schema=public"
                                   "&options=-c%20lock_timeout%3D2500")
    assert env["PGOPTIONS"] == "-c lock_timeout=2500"
    # Without one (a bare backend), an inherited PGOPTIONS does not reach the CLI either.
    bare = type(backend)(target, tmp_path)
    assert "options=" not in bare.database_url() and "PGOPTIONS" not in bare.child_env({"PGOPTIONS": "-c x=1"})
