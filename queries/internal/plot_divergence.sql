-- name: plot_divergence
-- How far two runs are apart at every step they both logged, per layer of evidence, in the order a
-- training step produces them (the layers and names of first_divergence): rng, batch_order and
-- inputs (batches: number of batches whose RNG fingerprints / sample order / input fingerprint
-- differ), predictions (largest |logit_a - logit_b| over samples), loss (|loss_a - loss_b|),
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
WITH batch_cmp AS (
    SELECT a.step,
           count(*) FILTER (WHERE coalesce(a.rng_torch, a.rng_cuda, a.rng_numpy, a.rng_python) IS NOT NULL
                              AND coalesce(b.rng_torch, b.rng_cuda, b.rng_numpy, b.rng_python) IS NOT NULL)
               AS rng_known,
           count(*) FILTER (WHERE [a.rng_torch, a.rng_cuda, a.rng_numpy, a.rng_python]
                              IS DISTINCT FROM [b.rng_torch, b.rng_cuda, b.rng_numpy, b.rng_python])::DOUBLE
               AS rng_diff,
           count(*) FILTER (WHERE a.ids_hash IS DISTINCT FROM b.ids_hash)::DOUBLE AS order_diff,
           count(*) FILTER (WHERE a.input_fingerprint IS DISTINCT FROM b.input_fingerprint)::DOUBLE AS input_diff
    FROM batches AS a
    JOIN batches AS b ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
    WHERE a.run = $run_a AND b.run = $run_b
    GROUP BY a.step
),
param_cmp AS (
    SELECT a.step,
           max(abs(a.norm - b.norm)) AS weight_diff,
           bool_or(a.fingerprint <> b.fingerprint) AS weight_hash,
           max(abs(a.grad_norm - b.grad_norm)) AS grad_diff,
           bool_or(a.grad_fingerprint <> b.grad_fingerprint) AS grad_hash,
           max(abs(a.update_norm - b.update_norm)) AS update_diff
    FROM params AS a
    JOIN params AS b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
                     AND a.kind IS NOT DISTINCT FROM b.kind
    WHERE a.run = $run_a AND b.run = $run_b AND coalesce(a.kind, 'param') = 'param'
    GROUP BY a.step
),
logit_cmp AS (
    SELECT a.step,
           max(CASE WHEN len(a.logits) = len(b.logits)
                    THEN list_max(list_transform(list_zip(a.logits, b.logits), lambda x: abs(x[1] - x[2])))
                    ELSE 'inf'::DOUBLE END) AS logit_diff
    FROM predictions AS a
    JOIN predictions AS b ON a.step = b.step AND a.rank = b.rank AND a.sample_idx = b.sample_idx
                          AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
    WHERE a.run = $run_a AND b.run = $run_b
    GROUP BY a.step
),
loss_cmp AS (
    SELECT a.step, max(abs(a.value - b.value)) AS loss_diff
    FROM scalars AS a
    JOIN scalars AS b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
    WHERE a.run = $run_a AND b.run = $run_b AND a.name = $metric
    GROUP BY a.step
),
layers AS (
    SELECT 1 AS layer_order, 'rng' AS layer, step, rng_diff AS value, rng_diff > 0 AS differs
    FROM batch_cmp WHERE rng_known > 0
    UNION ALL
    SELECT 2, 'batch_order', step, order_diff, order_diff > 0 FROM batch_cmp
    UNION ALL
    SELECT 3, 'inputs', step, input_diff, input_diff > 0 FROM batch_cmp
    UNION ALL
    SELECT 4, 'predictions', step, logit_diff, coalesce(logit_diff > $tol, false) FROM logit_cmp
    UNION ALL
    SELECT 5, 'loss', step, loss_diff, coalesce(loss_diff > $tol, false) FROM loss_cmp
    UNION ALL
    SELECT 6, 'gradients', step, grad_diff, coalesce(grad_hash, false) OR coalesce(grad_diff > $tol, false)
    FROM param_cmp WHERE grad_diff IS NOT NULL OR grad_hash IS NOT NULL
    UNION ALL
    SELECT 7, 'weights', step, weight_diff, coalesce(weight_hash, false) OR coalesce(weight_diff > $tol, false)
    FROM param_cmp
    UNION ALL
    SELECT 8, 'updates', step, update_diff, coalesce(update_diff > $tol, false)
    FROM param_cmp WHERE update_diff IS NOT NULL
),
bounds AS (
    SELECT layer, min(step) FILTER (WHERE differs) AS first_step, min(step) AS lo,
           greatest(1, ceil((max(step) - min(step) + 1) / $max_points))::BIGINT AS width
    FROM layers
    GROUP BY layer
)
SELECT any_value(l.layer_order) AS layer_order, l.layer,
       coalesce(min(l.step) FILTER (WHERE l.differs), min(l.step)) AS step,
       max(l.value) AS value, bool_or(l.differs) AS differs, any_value(b.first_step) AS first_step,
       count(*) AS n
FROM layers AS l JOIN bounds AS b USING (layer)
GROUP BY l.layer, (l.step - b.lo) // b.width
ORDER BY layer_order, step
