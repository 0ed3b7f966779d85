-- name: leaderboard
-- flatten: config
-- A sweep's runs ranked by one metric, best first: place, the metric (the run summary's key, i.e.
-- run.summary() or the last value of a logged scalar, or else the last logged value of the scalar
-- $metric), whether higher is better, the final training loss (last value of $loss_name), training
-- time (duration_s), last step, status and seed, and the config spread into one column per key
-- (config.lr, config.optimizer.name, ...). Higher is better unless the metric's name says it goes
-- down (loss, err, fpr, perplexity, time, duration, mse, mae); -p descending true|false overrides.
-- A metric no run has is an error that lists the metrics there are.
-- param metric = 'loss': what to rank by: a summary key or a scalar name
-- param descending = 'auto': true when higher is better, false when lower is; auto decides from the metric's name
-- param loss_name = 'loss': the scalar holding the training loss
WITH
direction AS (
    SELECT CASE lower(CAST($descending AS VARCHAR))
        WHEN 'auto' THEN NOT regexp_matches(lower($metric), 'loss|err|fpr|perplexity|time|duration|mse|mae')
        WHEN 'true' THEN true
        WHEN 'false' THEN false
        ELSE error('parameter ''descending'': expected true, false or auto, got '''
                   || CAST($descending AS VARCHAR) || '''')
    END AS higher
),
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
),
known AS (
    SELECT string_agg(DISTINCT name, ', ' ORDER BY name) AS names FROM (
        SELECT unnest(json_keys(summary::JSON)) AS name FROM runs WHERE summary IS NOT NULL
        UNION SELECT DISTINCT name FROM scalars
    )
),
checked AS (
    SELECT b.*, CASE
        WHEN (SELECT count(metric_value) FROM board) = 0
        THEN error('metric: no run has ' || $metric || ' in its summary nor as a logged scalar; metrics there are: '
                   || coalesce((SELECT names FROM known), 'none'))
        ELSE true END AS ok
    FROM board b
)
SELECT rank() OVER (ORDER BY CASE WHEN (SELECT higher FROM direction) THEN -metric_value ELSE metric_value END NULLS LAST) AS place,
    run, $metric AS metric, metric_value, (SELECT higher FROM direction) AS higher_is_better,
    final_loss, train_time_s, last_step, status, seed, config
FROM checked
WHERE ok
ORDER BY place, run
