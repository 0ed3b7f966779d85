-- name: plot_divergence
-- How far two runs are apart at every step they both logged, per layer of evidence, in causal order
-- (layer_order: layer_rank of _macros.sql, as in first_divergence): batch_order, inputs and rng
-- (batches: number of batches whose sample order / input fingerprint / RNG fingerprints differ),
-- predictions (largest |logit_a - logit_b| over samples), loss (|loss_a - loss_b|),
-- gradients, weights and updates (params: largest difference of a tensor's gradient / weight /
-- update norm; a differing exact fingerprint counts as differing too). `differs` is true where a
-- layer differs by more than tol (any hash mismatch counts); `first_step` is the layer's first
-- differing step, exact (taken before bucketing). Steps are bucketed to at most max_points per
-- layer, keeping the largest difference of each bucket.
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param metric = 'loss': the scalar compared as the loss layer
-- param tol = 0.0: largest absolute difference still counted as equal
-- param max_points = 2000: most points per layer
WITH
batch_cmp AS (
    SELECT step,
        count(*) FILTER (WHERE len(list_filter(rng_a, lambda x: x IS NOT NULL)) > 0
                           AND len(list_filter(rng_b, lambda x: x IS NOT NULL)) > 0) AS rng_known,
        count(*) FILTER (WHERE rng_a IS DISTINCT FROM rng_b)::DOUBLE AS rng_diff,
        count(*) FILTER (WHERE order_differs)::DOUBLE AS order_diff,
        count(*) FILTER (WHERE inputs_differ)::DOUBLE AS input_diff
    FROM paired_batches($run_a, $run_b, 0)
    GROUP BY step
),
param_cmp AS (
    SELECT step, max(norm_gap) AS weight_diff, bool_or(w_known AND w_differ) AS weight_hash,
        max(grad_gap) AS grad_diff, bool_or(g_known AND g_differ) AS grad_hash, max(update_gap) AS update_diff
    FROM paired_params($run_a, $run_b, 0)
    WHERE kind = 'param'
    GROUP BY step
),
logit_cmp AS (
    SELECT step, max(CASE WHEN len(la) = len(lb) THEN lists_max_gap(la, lb) ELSE 'inf'::DOUBLE END) AS logit_diff
    FROM paired_predictions($run_a, $run_b, 0, 9223372036854775807)
    GROUP BY step
),
loss_cmp AS (
    SELECT step, max(abs(va - vb)) AS loss_diff FROM paired_scalar($run_a, $run_b, $metric, 0) GROUP BY step
),
layers AS (
    SELECT 'rng' AS layer, step, rng_diff AS value, rng_diff > 0 AS differs FROM batch_cmp WHERE rng_known > 0
    UNION ALL SELECT 'batch_order', step, order_diff, order_diff > 0 FROM batch_cmp
    UNION ALL SELECT 'inputs', step, input_diff, input_diff > 0 FROM batch_cmp
    UNION ALL SELECT 'predictions', step, logit_diff, coalesce(logit_diff > $tol, false) FROM logit_cmp
    UNION ALL SELECT 'loss', step, loss_diff, coalesce(loss_diff > $tol, false) FROM loss_cmp
    UNION ALL SELECT 'gradients', step, grad_diff, coalesce(grad_hash, false) OR coalesce(grad_diff > $tol, false)
    FROM param_cmp WHERE grad_diff IS NOT NULL OR grad_hash IS NOT NULL
    UNION ALL SELECT 'weights', step, weight_diff, coalesce(weight_hash, false) OR coalesce(weight_diff > $tol, false)
    FROM param_cmp
    UNION ALL SELECT 'updates', step, update_diff, coalesce(update_diff > $tol, false)
    FROM param_cmp WHERE update_diff IS NOT NULL
),
bounds AS (
    SELECT layer, min(step) FILTER (WHERE differs) AS first_step, min(step) AS lo,
           greatest(1, ceil((max(step) - min(step) + 1) / $max_points))::BIGINT AS width
    FROM layers
    GROUP BY layer
)
SELECT layer_rank(l.layer) AS layer_order, l.layer,
       coalesce(min(l.step) FILTER (WHERE l.differs), min(l.step)) AS step,
       max(l.value) AS value, bool_or(l.differs) AS differs, any_value(b.first_step) AS first_step,
       count(*) AS n
FROM layers AS l JOIN bounds AS b USING (layer)
GROUP BY l.layer, (l.step - b.lo) // b.width
ORDER BY layer_order, step
