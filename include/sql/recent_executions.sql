-- Seed, "Horas 1-2", validation query 4: executions in the last hour and their mean duration.
SELECT COUNT(*) as total_executions,
       AVG(EXTRACT(EPOCH FROM ("endedAt" - "startedAt"))) as avg_duration_seconds
FROM public.execution_logs
WHERE "createdAt" > NOW() - INTERVAL '1 hour';
