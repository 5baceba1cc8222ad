-- Seed, "Horas 1-2", validation query 1. Expected: 0.
-- public.users, the plan's table (pgconn.split_table), whatever the role's search_path.
SELECT COUNT(*) as users_without_authorizer_id
FROM public.users
WHERE "authorizerId" IS NULL;
