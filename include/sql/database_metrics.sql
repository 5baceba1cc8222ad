-- Seed, "Horas 3-8", staging-health-check.sh part 3 ("Database Metrics").
-- total_users is context, not a criterion: the planner's estimate (pg_class.reltuples from
-- the last VACUUM/ANALYZE, scaled to the table's pages now, as the planner does: 0.05 ms
-- instead of a 0.7 s COUNT(*) at 10 M users), the exact COUNT(*) only when the table was
-- never analyzed (reltuples < 0). total_users_estimated says which one it is.
-- users_without_auth_id stays exact (an index-only scan of the IS NULL rows).
SELECT
  CASE WHEN c.reltuples < 0 THEN (SELECT COUNT(*) FROM public.users)
       WHEN c.relpages = 0 THEN round(c.reltuples)::bigint
       ELSE round(c.reltuples / c.relpages
                  * (pg_relation_size(c.oid) / current_setting('block_size')::bigint))::bigint
  END as total_users,
  c.reltuples >= 0 as total_users_estimated,
  (SELECT COUNT(*) FROM public.users WHERE "authorizerId" IS NULL) as users_without_auth_id,
  (SELECT COUNT(*) FROM public.execution_logs WHERE "createdAt" > NOW() - INTERVAL '1 hour') as executions_last_hour,
  (SELECT COUNT(*) FROM public.execution_logs WHERE status = 'ERROR' AND "createdAt" > NOW() - INTERVAL '1 hour') as errors_last_hour
FROM pg_class c
WHERE c.oid = 'public.users'::regclass;
