-- name: plot_runs_overview
-- One row per run for the top of a report: status, seed, ranks, training time, last step and epoch,
-- and the config and summary as JSON text.
-- param runs = []: run names to include (empty: every run in the connection)
SELECT run, status, seed, world_size, created, duration_s,
       TRY_CAST(json_extract_string(summary, '$.last_step') AS BIGINT) AS last_step,
       TRY_CAST(json_extract_string(summary, '$.last_epoch') AS BIGINT) AS last_epoch,
       config, summary
FROM runs
WHERE (len($runs) = 0 OR list_contains($runs, run))
ORDER BY run
