-- name: run_list
-- The runs of a lake: status (running, finished, failed, exited, or crashed when its writer died),
-- when created, seed, world size, training time, last step (the committed step of a crashed or running
-- run: every table holds every row up to it), final loss (summary key $loss_name, else its last value).
-- param loss_name = 'loss': the scalar holding the training loss
WITH
last_loss AS (SELECT run, arg_max(value, step) AS value FROM scalars WHERE name = $loss_name GROUP BY run)
SELECT r.run, r.status, r.created, r.seed, r.world_size, r.duration_s,
    CASE WHEN r.status IN ('running', 'crashed')
        THEN coalesce(r.committed_step, TRY_CAST(r.summary::JSON ->> 'last_step' AS BIGINT))
        ELSE coalesce(TRY_CAST(r.summary::JSON ->> 'last_step' AS BIGINT), r.committed_step) END AS last_step,
    coalesce(TRY_CAST(r.summary::JSON ->> $loss_name AS DOUBLE), l.value) AS final_loss
FROM runs r LEFT JOIN last_loss l ON l.run = r.run
ORDER BY r.created, r.run
