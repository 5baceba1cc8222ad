"""Migration lint with the real squawk binary (lint.py): accepted vs unaccepted findings,
the plan's lint section, and clear errors when squawk cannot run."""

from __future__ import annotations

import json
import sys

import pytest

from migration_soak import lint
from migration_soak.exceptions import LintError, PlanError
from migration_soak.plan import load_plan, parse_plan

DEFAULT_MIGRATION = "20251202020032_update_user_schema_final"


def plan_with(**changes):
    """The default plan with top-level sections replaced/merged (``migration`` and ``lint`` merge)."""
    data = load_plan("default").model_dump(mode="json")
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return parse_plan(data, "<test>")


@pytest.fixture
def migrations(tmp_path):
    """A temporary migrations folder; ``add(name, sql)`` writes ``<name>/migration.sql``."""
    root = tmp_path / "migrations"
    root.mkdir()

    def add(name: str, sql: str) -> str:
        (root / name).mkdir()
        (root / name / "migration.sql").write_text(sql)
        return name

    add.root = root
    return add


def test_squawk_is_the_pinned_binary_next_to_the_venv_python():
    from pathlib import Path

    assert lint.squawk_binary() == Path(sys.executable).parent / "squawk"
    pinned = [line for line in (Path(__file__).parents[2] / "requirements.txt").read_text().splitlines()
              if line.startswith("squawk-cli==")]
    assert pinned == [f"squawk-cli=={lint.squawk_version()}"]


def test_default_migration_lints_with_only_accepted_findings():
    plan = load_plan("default")
    result = lint.check(plan)  # no names: the plan's migration
    assert result.ok and result.migrations == (DEFAULT_MIGRATION,)
    assert sorted((f.rule, f.line) for f in result.findings) == [
        ("ban-drop-column", 9), ("ban-drop-column", 10), ("require-lock-timeout", 9), ("require-statement-timeout", 9)]
    whys = {a.finding.rule: a.why for a in result.accepted}
    assert "purpose of this migration" in whys["ban-drop-column"]
    assert "lock_timeout = 3 s" in whys["require-lock-timeout"]  # the ledger's own setting
    assert result.unused == ()
    event = json.loads(json.dumps(result.to_dict()))
    assert event["ok"] is True and event["unaccepted"] == []
    assert {"rule", "line", "message", "why"} <= set(event["accepted"][0])
    assert event["text"].startswith("squawk ") and "4 accepted, 0 not accepted" in event["text"]


def test_unaccepted_findings_fail_with_rule_line_and_message(migrations):
    name = migrations("20260101000000_add_index", (
        "-- CreateIndex\n"
        'CREATE INDEX "users_email_idx" ON "users"("email");\n'
        "\n"
        'ALTER TABLE "users" ALTER COLUMN "clientId" TYPE BIGINT;\n'
    ))
    plan = plan_with(migration={"name": name, "migrations_dir": str(migrations.root)}, lint={"accept": []})
    with pytest.raises(LintError) as info:
        lint.check(plan, [name])
    message = str(info.value)
    assert f"{name}/migration.sql:2: During normal index creation" in message
    assert "require-concurrent-index-creation" in message
    assert f"changing-column-type at {migrations.root}/{name}/migration.sql:4" in message
    unaccepted = {(f.rule, f.line) for f in info.value.result.unaccepted}
    assert {("require-concurrent-index-creation", 2), ("changing-column-type", 4)} <= unaccepted
    assert info.value.result.to_dict()["ok"] is False


def test_accept_is_scoped_to_its_migration_and_unused_entries_are_noted(migrations):
    mine = migrations("20260101000000_drop_a", 'ALTER TABLE "users" DROP COLUMN "a";\n')
    other = migrations("20260102000000_drop_b", 'ALTER TABLE "users" DROP COLUMN "b";\n')
    plan = plan_with(
        migration={"name": mine, "migrations_dir": str(migrations.root)},
        lint={"accept": [{"rule": "ban-drop-column", "migration": mine, "why": "the purpose of this migration"},
                         {"rule": "require-statement-timeout", "why": "catalog-only drops"},
                         {"rule": "changing-column-type", "why": "stale"}]},
    )
    result = lint.lint_migrations(plan, [other, mine])
    assert result.migrations == (other, mine)
    assert [(f.rule, f.migration) for f in result.unaccepted] == [("ban-drop-column", other)]
    assert result.unused == ("{rule: changing-column-type}",)
    assert "NOT ACCEPTED ban-drop-column" in result.text


def test_lock_timeout_counts_only_while_session_settings_count():
    plan = plan_with(lint={"session_settings_count": False})
    with pytest.raises(LintError, match=r"require-lock-timeout at .*migration\.sql:9: Missing `set lock_timeout`"):
        lint.check(plan)


def test_the_prisma_clis_startup_option_counts_as_its_lock_timeout():
    """The CLI's connections get lock_timeout_s as a startup option (prisma_cli.py), and
    preflight refuses a script's own SET lock_timeout with either backend: lint must not
    ask for one (on main it did, with prisma_cli, for the SET preflight now refuses)."""
    plan = plan_with(migration={"backend": "prisma_cli"})
    found = [a for a in lint.check(plan).accepted if a.finding.rule == "require-lock-timeout"]
    assert found and all("startup option" in a.why for a in found), found


def test_accept_entries_need_a_why_and_a_real_rule():
    accept = [{"rule": "ban-drop-column"}]
    with pytest.raises(PlanError, match=r"<test>: lint\.accept\[0\]\.why: required field is missing"):
        plan_with(lint={"accept": accept})
    with pytest.raises(PlanError, match=r"lint\.accept\[0\]\.why: an accepted finding needs a reason"):
        plan_with(lint={"accept": [{"rule": "ban-drop-column", "why": "  "}]})
    with pytest.raises(PlanError, match=r"lint\.accept\[0\]\.rule: unknown squawk rule 'ban-drop-colum'"):
        plan_with(lint={"accept": [{"rule": "ban-drop-colum", "why": "typo"}]})
    with pytest.raises(PlanError, match=r"lint\.accept\[0\]\.rule: 'syntax-error' cannot be accepted"):
        plan_with(lint={"accept": [{"rule": "syntax-error", "why": "no"}]})


def test_sql_squawk_cannot_parse_is_an_unaccepted_finding(migrations):
    name = migrations("20260101000000_typo", "ALTER TABL users DROP x;\n")
    plan = plan_with(migration={"name": name, "migrations_dir": str(migrations.root)})
    with pytest.raises(LintError, match=r"syntax-error at .*migration\.sql:1"):
        lint.check(plan, [name])


def test_missing_sql_squawk_missing_or_failing_are_lint_errors(migrations, monkeypatch, tmp_path):
    # the plan refuses a migration its folder does not hold at load (test_plan.py); a file
    # gone since the plan loaded (a worker's own copy of include/) is lint's to say
    default = load_plan("default")
    plan = default.model_copy(update={"migration": default.migration.model_copy(
        update={"migrations_dir": str(migrations.root)})})
    with pytest.raises(LintError, match=rf"migration {DEFAULT_MIGRATION}: cannot read .*migration\.sql"):
        lint.check(plan)
    # squawk itself refuses the arguments (exit 2): its message, not a silent pass
    plan = plan_with(lint={"pg_version": "99999999999999999999"})
    with pytest.raises(LintError, match=r"squawk exited 2 on .*migration\.sql: .*pg-version"):
        lint.check(plan)
    # no squawk next to the interpreter nor on PATH
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LintError, match="squawk is not installed"):
        lint.check(load_plan("default"))
