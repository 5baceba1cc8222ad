-- Seed, "Horas 1-2", validation query 2. Expected: 0 rows (the check's value is the row count).
SELECT column_name
FROM information_schema.columns
WHERE table_name = 'users'
  AND column_name IN ('passwordHash', 'emailVerified');
