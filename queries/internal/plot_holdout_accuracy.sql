-- name: plot_holdout_accuracy
-- Accuracy on the fixed holdout set over steps, per run: the mean of `correct` in the holdout table,
-- or the holdout/acc scalar for runs that have no holdout rows. Bucketed to max_points per run.
-- param runs = []: run names to include (empty: every run in the connection)
-- param max_points = 2000: most points per run
WITH from_table AS (
    SELECT run, step, avg(correct::DOUBLE) AS value, count(*) AS n_samples
    FROM holdout
    WHERE (len($runs) = 0 OR list_contains($runs, run))
    GROUP BY run, step
),
from_scalars AS (
    SELECT run, step, avg(value) AS value, NULL::BIGINT AS n_samples
    FROM scalars
    WHERE name = 'holdout/acc' AND (len($runs) = 0 OR list_contains($runs, run)) AND isfinite(value)
      AND run NOT IN (SELECT run FROM from_table)
    GROUP BY run, step
),
series AS (SELECT * FROM from_table UNION ALL SELECT * FROM from_scalars),
bounds AS (
    SELECT run, min(step) AS lo, greatest(1, ceil((max(step) - min(step) + 1) / $max_points))::BIGINT AS width
    FROM series
    GROUP BY run
)
SELECT s.run, avg(s.step) AS step, avg(s.value) AS value, min(s.value) AS value_min, max(s.value) AS value_max,
       max(s.n_samples) AS n_samples, count(*) AS n
FROM series AS s JOIN bounds AS b USING (run)
GROUP BY s.run, (s.step - b.lo) // b.width
ORDER BY s.run, step
