-- Down migration of 20251202020032_update_user_schema_final: re-add the dropped columns
-- with their original definitions (see the init migration). DROP COLUMN data cannot be
-- recovered by SQL: the rollback copies the values back from the pre-migration backup
-- afterwards, joined on the primary key.
ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "passwordHash" TEXT,
ADD COLUMN IF NOT EXISTS "emailVerified" BOOLEAN NOT NULL DEFAULT false;
