-- name: plot_sweep_params
-- One row per run and hyperparameter (every config key that varies between the runs) plus the metric,
-- each scaled to 0..1 along its own axis for a parallel-coordinates chart: numbers linearly, or on a
-- log scale when they are all positive and span 10x or more (learning rates, weight decay), other
-- values (strings, lists) by their sorted order. `raw` keeps the value as written in the config.
-- param metric: the summary key to rank by, e.g. 'holdout/acc'
-- param runs = []: run names to include (empty: every run in the connection)
WITH chosen AS (
    SELECT run, config::JSON AS config,
           TRY_CAST(json_extract_string(summary, '$."' || replace($metric, '"', '\"') || '"') AS DOUBLE) AS score
    FROM runs
    WHERE (len($runs) = 0 OR list_contains($runs, run))
),
pairs AS (
    SELECT run, score, unnest(json_keys(config)) AS key, config FROM chosen
),
cells AS (
    SELECT run, score, key, json_extract(config, '$."' || replace(key, '"', '\"') || '"')::VARCHAR AS raw,
           json_extract_string(config, '$."' || replace(key, '"', '\"') || '"') AS text
    FROM pairs
),
varying AS (
    SELECT key FROM cells GROUP BY key HAVING count(DISTINCT raw) > 1
),
typed AS (
    SELECT c.run, c.score, c.key, c.raw, TRY_CAST(c.text AS DOUBLE) AS num,
           bool_and(TRY_CAST(c.text AS DOUBLE) IS NOT NULL) OVER (PARTITION BY c.key) AS numeric
    FROM cells AS c JOIN varying USING (key)
),
axes AS (
    SELECT *,
           min(num) OVER (PARTITION BY key) AS lo, max(num) OVER (PARTITION BY key) AS hi,
           dense_rank() OVER (PARTITION BY key ORDER BY raw) AS ordinal,
           count(DISTINCT raw) OVER (PARTITION BY key) AS n_values
    FROM typed
),
scaled AS (
    SELECT run, key, raw, score,
           CASE WHEN numeric AND lo > 0 AND hi / lo >= 10 THEN (ln(num) - ln(lo)) / nullif(ln(hi) - ln(lo), 0)
                WHEN numeric THEN (num - lo) / nullif(hi - lo, 0)
                ELSE (ordinal - 1) / nullif(n_values - 1, 0)
           END AS norm,
           CASE WHEN numeric AND lo > 0 AND hi / lo >= 10 THEN 'log' WHEN numeric THEN 'linear' ELSE 'ordinal' END
               AS scale
    FROM axes
),
metric_axis AS (
    SELECT run, $metric AS key, printf('%.4g', score) AS raw, score,
           (score - min(score) OVER ()) / nullif(max(score) OVER () - min(score) OVER (), 0) AS norm,
           'linear' AS scale
    FROM chosen
    WHERE score IS NOT NULL
)
SELECT run, key, raw, coalesce(norm, 0.5) AS norm, scale, score, 0 AS axis_kind FROM scaled
UNION ALL
SELECT run, key, raw, coalesce(norm, 0.5), scale, score, 1 FROM metric_axis
ORDER BY axis_kind, key, run
