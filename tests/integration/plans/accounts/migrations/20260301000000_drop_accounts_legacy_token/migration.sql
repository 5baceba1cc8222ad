-- The second plan's migration (tests/integration/test_second_plan.py): the accounts'
-- legacy tokens and their scopes moved to a token service; drop both columns.
ALTER TABLE "accounts" DROP COLUMN "legacy_token",
DROP COLUMN "legacy_scopes";
