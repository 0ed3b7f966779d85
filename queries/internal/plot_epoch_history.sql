-- name: plot_epoch_history
-- Per-epoch history of scalars (the sweep's "loss per epoch"): mean, min, max and last value of each
-- scalar over the steps of every epoch, per run. Ranks are averaged first.
-- param names: scalar names, e.g. ['loss']
-- param runs = []: run names to include (empty: every run in the connection)
WITH per_step AS (
    SELECT run, name, epoch, step, avg(value) AS value
    FROM scalars
    WHERE list_contains($names, name)
      AND (len($runs) = 0 OR list_contains($runs, run))
      AND isfinite(value)
    GROUP BY run, name, epoch, step
)
SELECT run, name, epoch, avg(value) AS value, min(value) AS value_min, max(value) AS value_max,
       arg_max(value, step) AS last_value, count(*) AS n_steps
FROM per_step
GROUP BY run, name, epoch
ORDER BY run, name, epoch
