-- name: leaderboard
-- flatten: config
-- A sweep's runs ranked by one metric: place, the metric (the run summary's key, i.e. run.summary()
-- or the last value of a logged scalar, or else the last logged value of the scalar $metric), the
-- final training loss (last value of $loss_name), training time (duration_s), last step, status and
-- seed, and the config spread into one column per key (config.lr, config.optimizer.name, ...).
-- param metric = 'loss': what to rank by: a summary key or a scalar name
-- param descending = false: true when higher is better (accuracy, recall)
-- param loss_name = 'loss': the scalar holding the training loss
WITH
last_scalar AS (
    SELECT run, name, arg_max(value, step) AS value, max(step) AS last_step
    FROM scalars WHERE name IN ($metric, $loss_name) GROUP BY run, name
),
board AS (
    SELECT r.run,
        coalesce(TRY_CAST(r.summary::JSON ->> $metric AS DOUBLE),
                 (SELECT value FROM last_scalar s WHERE s.run = r.run AND s.name = $metric)) AS metric_value,
        coalesce((SELECT value FROM last_scalar s WHERE s.run = r.run AND s.name = $loss_name),
                 TRY_CAST(r.summary::JSON ->> $loss_name AS DOUBLE)) AS final_loss,
        r.duration_s AS train_time_s,
        coalesce(TRY_CAST(r.summary::JSON ->> 'last_step' AS BIGINT),
                 (SELECT max(last_step) FROM last_scalar s WHERE s.run = r.run)) AS last_step,
        r.status, r.seed, r.created, r.config
    FROM runs r
)
SELECT rank() OVER (ORDER BY CASE WHEN $descending THEN -metric_value ELSE metric_value END NULLS LAST) AS place,
    run, $metric AS metric, metric_value, final_loss, train_time_s, last_step, status, seed, config
FROM board
ORDER BY place, run
