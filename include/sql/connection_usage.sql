-- Seed, "Horas 1-2" metrics table: "Database connections < 80% del pool"; alert at > 90%.
-- Ratio 0..1 of server connections in use against max_connections.
SELECT (SELECT COUNT(*) FROM pg_stat_activity)::float
       / current_setting('max_connections')::float AS connection_usage;
