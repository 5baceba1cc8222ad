-- The second plan's schema before its migration (tests/integration/test_second_plan.py).
CREATE TABLE "accounts" (
    "account_id" BIGINT NOT NULL,
    "owner" TEXT,
    "legacy_token" TEXT,
    "legacy_scopes" TEXT[],

    CONSTRAINT "accounts_pkey" PRIMARY KEY ("account_id")
);
