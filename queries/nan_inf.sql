-- name: nan_inf
-- Where NaN or Inf first appeared in what training computed: one row per place (source, name), at
-- the first step it held a non-finite value, earliest first; within one step in the order things
-- are computed: logits (predictions), per-sample loss (predictions.loss), logged scalars (the loss),
-- gradients (params.grad_absmax not finite: the largest |element|, which a finite tensor never
-- overflows), weights and buffers (params nan_count / inf_count), optimizer state (its norm, the
-- one summary logged for it: accumulated in float64, it is finite for finite values, so Adam's
-- exp_avg_sq overflowing to Inf while the gradients are finite is found). Scalars that are norms
-- (grad_norm*, weight_norm*, update_norm*, update_ratio*, as the telemetry or clip_grad_norm_
-- log them) come last, as source 'derived norms': a norm of finite values can overflow, so it is
-- not an origin.
-- is_first marks where to look (a derived norm only when nothing else is non-finite). Written with
-- NOT isfinite(...) (not isnan), which also finds NaN in Parquet files whose statistics leave NaN out.
-- param run: the run to check
WITH
pred AS (
    SELECT step, 'predictions' AS source, 1 AS ord, 'logits' AS name, count(*) AS count,
        format('{} sample(s) with NaN/Inf logits', count(*)) AS detail
    FROM predictions
    WHERE run = $run AND list_bool_or(list_transform(logits, lambda x: NOT isfinite(x)))
    GROUP BY step
),
sample_loss AS (
    SELECT step, 'predictions' AS source, 2 AS ord, 'loss (per sample)' AS name, count(*) AS count,
        format('{} sample(s) with a NaN/Inf loss', count(*)) AS detail
    FROM predictions WHERE run = $run AND loss IS NOT NULL AND NOT isfinite(loss)
    GROUP BY step
),
scal AS (
    SELECT step,
        CASE WHEN derived THEN 'derived norms' ELSE 'scalars' END AS source,
        CASE WHEN derived THEN 9 ELSE 3 END AS ord,
        name, 1 AS count, format('{} = {}', name, value) AS detail
    FROM (
        SELECT *, regexp_matches(name, '^(grad_norm|weight_norm|update_norm|update_ratio)(/|$)') AS derived
        FROM scalars WHERE run = $run AND NOT isfinite(value)
    )
),
grads AS (
    SELECT step, 'gradients' AS source, 4 AS ord, name, 1 AS count,
        format('gradient |max| = {} (norm {})', grad_absmax, grad_norm) AS detail
    FROM params
    WHERE run = $run AND coalesce(kind, 'param') = 'param' AND NOT isfinite(grad_absmax)
),
tensors AS (
    SELECT step,
        CASE WHEN coalesce(kind, 'param') = 'param' THEN 'weights' ELSE 'buffers' END AS source,
        CASE WHEN coalesce(kind, 'param') = 'param' THEN 5 ELSE 6 END AS ord,
        name, coalesce(nan_count, 0) + coalesce(inf_count, 0) AS count,
        format('{} NaN, {} Inf of {} elements', coalesce(nan_count, 0), coalesce(inf_count, 0), numel) AS detail
    FROM params
    WHERE run = $run AND coalesce(kind, 'param') IN ('param', 'buffer') AND (nan_count > 0 OR inf_count > 0)
),
optim AS (
    SELECT step, 'optimizer' AS source, 7 AS ord, name || ' (' || kind || ')' AS name, 1 AS count,
        format('norm = {}', norm) AS detail
    FROM params
    WHERE run = $run AND starts_with(kind, 'optim:') AND NOT isfinite(norm)
),
all_ AS (
    SELECT * FROM pred UNION ALL SELECT * FROM sample_loss UNION ALL SELECT * FROM scal
    UNION ALL SELECT * FROM grads UNION ALL SELECT * FROM tensors UNION ALL SELECT * FROM optim
),
firsts AS (
    SELECT source, name, min(ord) AS ord, min(step) AS first_step,
        arg_min(count, step) AS count, arg_min(detail, step) AS detail, count(*) AS n_steps
    FROM all_ GROUP BY source, name
)
SELECT first_step AS step, source, name, count, detail, n_steps,
    row_number() OVER (ORDER BY source = 'derived norms', first_step, ord, name) = 1 AS is_first
FROM firsts
ORDER BY first_step, ord, name
