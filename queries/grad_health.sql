-- name: grad_health
-- Vanishing or exploding gradients, per parameter group: the group's gradient norm at each captured
-- step (params.grad_norm of kind 'param', combined as sqrt(sum of squares); the scalars
-- grad_norm/<group> when params has no gradient norms), summarised per group: min / median / max /
-- last, the first step below $vanish, the first step above $explode or NaN/Inf, and the share of
-- steps above $explode. status: exploding (not finite on a step, or above $explode on at least
-- $explode_share of the steps while growing to 10x the median of the first fifth: one spike, or a
-- norm that is large but steady, is not an explosion) | vanishing (median below $vanish) | ok.
-- param run: the run to check
-- param vanish = 1e-07: a group gradient norm below this counts as vanishing
-- param explode = 1000.0: a group gradient norm above this (or NaN/Inf) counts as exploding
-- param explode_share = 0.1: the share of steps above $explode before a group counts as exploding
WITH
from_params AS (
    SELECT step, coalesce("group", '(no group)') AS grp, sqrt(sum(grad_norm * grad_norm)) AS gnorm
    FROM params
    WHERE run = $run AND coalesce(kind, 'param') = 'param' AND grad_norm IS NOT NULL
    GROUP BY step, grp
),
from_scalars AS (
    SELECT step, substr(name, length('grad_norm/') + 1) AS grp, value AS gnorm
    FROM scalars
    WHERE run = $run AND starts_with(name, 'grad_norm/') AND NOT EXISTS (SELECT 1 FROM from_params)
),
g AS (SELECT *, 'params' AS source FROM from_params UNION ALL SELECT *, 'scalars' FROM from_scalars),
fifths AS (SELECT *, ntile(5) OVER (PARTITION BY grp ORDER BY step) AS fifth FROM g),
summary AS (
    SELECT grp AS "group", median(gnorm) FILTER (WHERE fifth = 1) AS early_median, any_value(source) AS source, count(*) AS n_steps,
        min(gnorm) AS min_norm, median(gnorm) AS median_norm, max(gnorm) AS max_norm,
        arg_max(gnorm, step) AS last_norm,
        min(step) FILTER (WHERE gnorm < $vanish) AS first_vanishing_step,
        min(step) FILTER (WHERE gnorm > $explode OR NOT isfinite(gnorm)) AS first_exploding_step,
        count(*) FILTER (WHERE gnorm > $explode) / count(*) AS share_above,
        count(*) FILTER (WHERE NOT isfinite(gnorm)) AS n_not_finite
    FROM fifths GROUP BY grp
)
SELECT "group",
    CASE WHEN n_not_finite > 0 OR (share_above >= $explode_share AND max_norm >= 10 * early_median) THEN 'exploding'
         WHEN median_norm < $vanish THEN 'vanishing'
         ELSE 'ok' END AS status,
    n_steps, min_norm, median_norm, max_norm, last_norm, first_vanishing_step, first_exploding_step,
    share_above, source
FROM summary
ORDER BY status = 'ok', "group"
