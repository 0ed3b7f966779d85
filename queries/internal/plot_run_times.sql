-- name: plot_run_times
-- Training time per run: run.json's duration_s once a run finished, otherwise the span of its
-- scalar timestamps so far; with the last step and status, and the config (JSON text).
-- param runs = []: run names to include (empty: every run in the connection)
WITH spans AS (
    SELECT run, epoch(max(time) - min(time)) AS span_s, max(step) AS max_step
    FROM scalars
    WHERE (len($runs) = 0 OR list_contains($runs, run))
    GROUP BY run
)
SELECT r.run, coalesce(r.duration_s, s.span_s) AS duration_s, r.duration_s IS NOT NULL AS finished,
       coalesce(TRY_CAST(json_extract_string(r.summary, '$.last_step') AS BIGINT), s.max_step) AS last_step,
       r.status, r.config
FROM runs AS r LEFT JOIN spans AS s USING (run)
WHERE (len($runs) = 0 OR list_contains($runs, r.run))
ORDER BY duration_s DESC NULLS LAST, r.run
