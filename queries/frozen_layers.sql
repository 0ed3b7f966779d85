-- name: frozen_layers
-- Parameters that never move although they get gradients (left out of the optimizer, LR 0, an
-- optimizer group that is never stepped): per parameter of kind 'param', over the captured steps
-- with a known update (params.update_norm: the change since the previous capture), how many had
-- update_norm = 0 while grad_norm > 0. status: frozen (every such step) | partly frozen (some) |
-- no gradient (never a non-zero gradient nor update: requires_grad off or unused, often on
-- purpose) | ok. Falls back to the scalars update_norm/<group> and grad_norm/<group> when params
-- has no update norms (then name is the group).
-- param run: the run to check
WITH
p AS (
    SELECT step, name, coalesce("group", '(no group)') AS grp, grad_norm, update_norm
    FROM params WHERE run = $run AND coalesce(kind, 'param') = 'param' AND update_norm IS NOT NULL
),
s AS (
    SELECT u.step, substr(u.name, length('update_norm/') + 1) AS name,
        substr(u.name, length('update_norm/') + 1) AS grp, g.value AS grad_norm, u.value AS update_norm
    FROM scalars u
    LEFT JOIN scalars g ON g.run = u.run AND g.step = u.step
        AND g.name = 'grad_norm/' || substr(u.name, length('update_norm/') + 1)
    WHERE u.run = $run AND starts_with(u.name, 'update_norm/') AND NOT EXISTS (SELECT 1 FROM p)
),
rows_ AS (SELECT *, 'params' AS source FROM p UNION ALL SELECT *, 'scalars' FROM s),
per AS (
    SELECT name, grp, any_value(source) AS source, count(*) AS n_steps,
        count(*) FILTER (WHERE update_norm = 0 AND grad_norm > 0) AS n_frozen,
        count(*) FILTER (WHERE coalesce(grad_norm, 0) = 0 AND update_norm = 0) AS n_still,
        min(step) FILTER (WHERE update_norm = 0 AND grad_norm > 0) AS first_frozen_step,
        max(grad_norm) AS max_grad_norm, max(update_norm) AS max_update_norm
    FROM rows_ GROUP BY name, grp
)
SELECT name, grp AS "group",
    CASE WHEN n_frozen = n_steps THEN 'frozen'
         WHEN n_frozen > 0 THEN 'partly frozen'
         WHEN n_still = n_steps THEN 'no gradient'
         ELSE 'ok' END AS status,
    n_steps, n_frozen, first_frozen_step, max_grad_norm, max_update_norm, source
FROM per
ORDER BY CASE status WHEN 'frozen' THEN 0 WHEN 'partly frozen' THEN 1 WHEN 'no gradient' THEN 2 ELSE 3 END, name
