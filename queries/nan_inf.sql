-- name: nan_inf
-- Where NaN or Inf first appeared: one row per place (source, name), at the first step it held a
-- non-finite value, earliest first (within one step in the order things happen: predictions, scalars,
-- gradients, weights, optimizer state). is_first marks where to look. Sources: predictions (logits,
-- name = 'logits', count = samples), scalars (name = the scalar), gradients (params.grad_norm not
-- finite), weights and optimizer (params nan_count / inf_count, kind 'param' / 'optim:*').
-- param run: the run to check
WITH
pred AS (
    SELECT step, 'predictions' AS source, 1 AS ord, 'logits' AS name, count(*) AS count,
        format('{} samples with NaN/Inf logits', count(*)) AS detail
    FROM predictions
    WHERE run = $run AND list_bool_or(list_transform(logits, lambda x: isnan(x) OR isinf(x)))
    GROUP BY step
),
scal AS (
    SELECT step, 'scalars' AS source, 2 AS ord, name, 1 AS count, format('{} = {}', name, value) AS detail
    FROM scalars WHERE run = $run AND (isnan(value) OR isinf(value))
),
grads AS (
    SELECT step, 'gradients' AS source, 3 AS ord, name, 1 AS count, format('grad_norm = {}', grad_norm) AS detail
    FROM params
    WHERE run = $run AND coalesce(kind, 'param') = 'param' AND (isnan(grad_norm) OR isinf(grad_norm))
),
tensors AS (
    SELECT step, CASE WHEN coalesce(kind, 'param') = 'param' THEN 'weights' ELSE 'optimizer' END AS source,
        CASE WHEN coalesce(kind, 'param') = 'param' THEN 4 ELSE 5 END AS ord,
        name || CASE WHEN coalesce(kind, 'param') = 'param' THEN '' ELSE ' (' || kind || ')' END AS name,
        coalesce(nan_count, 0) + coalesce(inf_count, 0) AS count,
        format('{} NaN, {} Inf of {} elements', coalesce(nan_count, 0), coalesce(inf_count, 0), numel) AS detail
    FROM params WHERE run = $run AND (nan_count > 0 OR inf_count > 0)
),
all_ AS (
    SELECT * FROM pred UNION ALL SELECT * FROM scal UNION ALL SELECT * FROM grads UNION ALL SELECT * FROM tensors
),
firsts AS (
    SELECT source, name, min(ord) AS ord, min(step) AS first_step,
        arg_min(count, step) AS count, arg_min(detail, step) AS detail, count(*) AS n_steps
    FROM all_ GROUP BY source, name
)
SELECT first_step AS step, source, name, count, detail, n_steps,
    row_number() OVER (ORDER BY first_step, ord, name) = 1 AS is_first
FROM firsts
ORDER BY first_step, ord, name
