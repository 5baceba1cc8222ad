-- Down migration of 20260301000000_drop_accounts_legacy_token: re-add the columns, empty,
-- with their original definitions. Re-runnable (a rollback may run twice); the values come
-- back from the pre-migration backup (rollback.restore_columns), joined on account_id.
ALTER TABLE "accounts" ADD COLUMN IF NOT EXISTS "legacy_token" TEXT,
ADD COLUMN IF NOT EXISTS "legacy_scopes" TEXT[];
