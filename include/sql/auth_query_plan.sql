-- Seed, "Horas 1-2", validation query 3. Execution time must be < 10 ms.
-- Runs inside a read-only transaction that is rolled back (EXPLAIN ANALYZE executes the query).
EXPLAIN ANALYZE
SELECT u.*, c.name as client_name
FROM public.users u
LEFT JOIN public.clients c ON u."clientId" = c.id
WHERE u."authorizerId" = 'test-auth-id';
