-- name: frozen_layers
-- Parameters that never move although they get gradients: per parameter of kind 'param', over the
-- captured steps with a known update (params.update_norm: the change since the previous capture)
-- where the group's learning rate (the scalar lr/<group>, when logged) is not 0, how many had
-- update_norm = 0 while grad_norm > 0. too_small is true when, on every such step, the gradient
-- times 10 x the LR is below the weights' rounding step (|max weight| x the dtype's epsilon): then
-- the update rounds away (a vanishing gradient, or a bias right before a normalization layer, whose
-- gradient is zero but for rounding), whatever the optimizer does. A tensor that moved on some
-- captures is in the optimizer and stepped: its zero updates are rounding.
-- status: frozen (every such step) | partly frozen (some) | no gradient (never a non-zero gradient
-- nor update: requires_grad off or unused, often on purpose) | lr 0 (the group's LR is 0 on every
-- captured step) | ok. Falls back to the scalars update_norm/<group> and grad_norm/<group> when
-- params has no update norms (then name is the group).
-- param run: the run to check
WITH
lr AS (
    SELECT step, substr(name, length('lr/') + 1) AS grp, value AS lr
    FROM scalars WHERE run = $run AND starts_with(name, 'lr/')
),
p AS (
    SELECT step, name, coalesce("group", '(no group)') AS grp, grad_norm, update_norm, grad_absmax, absmax, shape,
        CASE dtype WHEN 'float64' THEN 2.2e-16 WHEN 'bfloat16' THEN 7.8e-3 WHEN 'float16' THEN 9.8e-4
                   ELSE 1.2e-7 END AS eps
    FROM params WHERE run = $run AND coalesce(kind, 'param') = 'param' AND update_norm IS NOT NULL
),
s AS (
    SELECT u.step, substr(u.name, length('update_norm/') + 1) AS name,
        substr(u.name, length('update_norm/') + 1) AS grp, g.value AS grad_norm, u.value AS update_norm,
        NULL::DOUBLE AS grad_absmax, NULL::DOUBLE AS absmax, NULL::VARCHAR AS shape, 1.2e-7 AS eps
    FROM scalars u
    LEFT JOIN scalars g ON g.run = u.run AND g.step = u.step
        AND g.name = 'grad_norm/' || substr(u.name, length('update_norm/') + 1)
    WHERE u.run = $run AND starts_with(u.name, 'update_norm/') AND NOT EXISTS (SELECT 1 FROM p)
),
rows_ AS (
    SELECT r.*, l.lr
    FROM (SELECT *, 'params' AS source FROM p UNION ALL SELECT *, 'scalars' FROM s) r
    LEFT JOIN lr l ON l.step = r.step AND l.grp = r.grp
),
per AS (
    SELECT name, grp, any_value(source) AS source, any_value(shape) AS shape,
        count(*) FILTER (WHERE coalesce(lr, 1) <> 0) AS n_steps,
        count(*) FILTER (WHERE lr = 0) AS n_lr_zero,
        count(*) FILTER (WHERE update_norm = 0 AND grad_norm > 0 AND coalesce(lr, 1) <> 0) AS n_frozen,
        count(*) FILTER (WHERE coalesce(grad_norm, 0) = 0 AND update_norm = 0) AS n_still,
        min(step) FILTER (WHERE update_norm = 0 AND grad_norm > 0 AND coalesce(lr, 1) <> 0) AS first_frozen_step,
        bool_and(grad_absmax * 10 * lr < absmax * eps)
            FILTER (WHERE update_norm = 0 AND grad_norm > 0 AND coalesce(lr, 1) <> 0) AS too_small,
        max(lr) AS max_lr, max(grad_norm) AS max_grad_norm, max(update_norm) AS max_update_norm,
        count(*) AS n_captures
    FROM rows_ GROUP BY name, grp
)
SELECT name, grp AS "group",
    CASE WHEN n_steps = 0 AND n_lr_zero > 0 THEN 'lr 0'
         WHEN n_frozen = n_steps THEN 'frozen'
         WHEN n_frozen > 0 THEN 'partly frozen'
         WHEN n_still = n_captures THEN 'no gradient'
         ELSE 'ok' END AS status,
    shape, n_steps, n_frozen, first_frozen_step, coalesce(too_small, false) AS too_small, max_lr, max_grad_norm,
    max_update_norm, n_lr_zero, source
FROM per
ORDER BY CASE status WHEN 'frozen' THEN 0 WHEN 'partly frozen' THEN 1 WHEN 'no gradient' THEN 2
                     WHEN 'lr 0' THEN 3 ELSE 4 END, name
