-- Seed, "Horas 1-2", validation query 1. Expected: 0.
SELECT COUNT(*) as users_without_authorizer_id
FROM users
WHERE "authorizerId" IS NULL;
