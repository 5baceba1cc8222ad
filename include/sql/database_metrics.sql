-- Seed, "Horas 3-8", staging-health-check.sh part 3 ("Database Metrics").
SELECT
  (SELECT COUNT(*) FROM users) as total_users,
  (SELECT COUNT(*) FROM users WHERE "authorizerId" IS NULL) as users_without_auth_id,
  (SELECT COUNT(*) FROM execution_logs WHERE "createdAt" > NOW() - INTERVAL '1 hour') as executions_last_hour,
  (SELECT COUNT(*) FROM execution_logs WHERE status = 'ERROR' AND "createdAt" > NOW() - INTERVAL '1 hour') as errors_last_hour;
