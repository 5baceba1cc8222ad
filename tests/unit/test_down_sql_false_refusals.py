"""Preflight (runbook.down_sql -> migrate.check_down_sql) refuses valid down SQL:
a DO block whose comment or notice mentions "rollback" or "lock_timeout" (text search of
the body, comments and strings included), and a constant array DEFAULT."""

from __future__ import annotations

import pytest

from migration_soak.migrate import check_down_sql

COLUMNS = ["passwordHash", "emailVerified"]

VALID = {
    "do_block_comment_says_rollback": '''
DO $$
BEGIN
  -- rollback of 20251202020032: re-add only what is missing
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_name = 'users' AND column_name = 'passwordHash') THEN
    ALTER TABLE "users" ADD COLUMN "passwordHash" TEXT;
  END IF;
END $$;
ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "emailVerified" BOOLEAN NOT NULL DEFAULT false;
''',
    "do_block_comment_says_lock_timeout": '''
DO $$
BEGIN
  -- runs under the soak's lock_timeout (migration.lock_timeout_s)
  ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "passwordHash" TEXT;
END $$;
ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "emailVerified" BOOLEAN NOT NULL DEFAULT false;
''',
    "constant_array_default": '''
ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "passwordHash" TEXT[] DEFAULT ARRAY[]::text[],
ADD COLUMN IF NOT EXISTS "emailVerified" BOOLEAN NOT NULL DEFAULT false;
''',
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_down_sql_passes_preflight(name):
    check_down_sql(VALID[name], f"down SQL {name}", "users", COLUMNS)
