-- name: plot_metric_curves
-- Scalar curves (loss, accuracy, …) of several runs over steps, ready to plot: steps are bucketed so
-- that no series has more than max_points points (bucket mean of step and value, plus min and max),
-- so a million-step run still ships a few thousand points to the browser. Ranks are averaged.
-- Non-finite values (nan, inf) are left out; count them with the health checks instead.
-- param names: scalar names to plot, e.g. ['loss', 'acc']
-- param runs = []: run names to include (empty: every run in the connection)
-- param max_points = 2000: most points per (run, name) series
WITH series AS (
    SELECT run, name, step, avg(value) AS value, any_value(epoch) AS epoch
    FROM scalars
    WHERE list_contains($names, name)
      AND (len($runs) = 0 OR list_contains($runs, run))
      AND isfinite(value)
    GROUP BY run, name, step
),
bounds AS (
    SELECT run, name, min(step) AS lo,
           greatest(1, ceil((max(step) - min(step) + 1) / $max_points))::BIGINT AS width
    FROM series
    GROUP BY run, name
)
SELECT s.run, s.name, avg(s.step) AS step, avg(s.value) AS value, min(s.value) AS value_min,
       max(s.value) AS value_max, max(s.epoch) AS epoch, count(*) AS n
FROM series AS s JOIN bounds AS b USING (run, name)
GROUP BY s.run, s.name, (s.step - b.lo) // b.width
ORDER BY s.run, s.name, step
