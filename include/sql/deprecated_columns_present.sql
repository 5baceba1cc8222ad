-- Seed, "Horas 1-2", validation query 2. Expected: 0 rows (the check's value is the row count).
-- The plan's table is public.users (pgconn.split_table): information_schema lists every
-- schema's users, so the seed's query (no table_schema) also counted another schema's.
SELECT column_name
FROM information_schema.columns
WHERE table_schema = 'public'
  AND table_name = 'users'
  AND column_name IN ('passwordHash', 'emailVerified');
