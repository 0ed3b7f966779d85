-- name: first_divergence
-- The first step where runs A and B differ, in each layer of evidence, one row per layer ordered
-- by step; the earliest differing layer (is_first) is the cause to look at first.
-- Layers, in the order they happen within one step (ties at a step go to the earlier layer):
-- initial_weights (params of kind 'initial:*', captured by run.watch before training), rng
-- (batches.rng_* fingerprints at batch start), batch_order (batches.ids_hash), inputs
-- (batches.input_fingerprint), predictions (pred_digests per batch, then the samples of the first
-- differing batch only), loss (the scalar named $loss_name), gradients (params.grad_fingerprint),
-- buffers (kind 'buffer', e.g. BatchNorm running statistics), weights (params.fingerprint of kind
-- 'param': the weights after that step's update), optimizer (params.fingerprint of kind 'optim:*').
-- status: differs | same | not captured (neither run has it) | missing in A | missing in B |
-- no overlap (both have it, at no common step). n_a / n_b: units (batches, steps) in each run,
-- n_compared: units present in both, n_differing: compared units that differ (for predictions:
-- batches whose logits are not bit-identical).
-- param run_a: the reference run (its name in the lake)
-- param run_b: the run compared with it
-- param tol = 0.0: largest |logit_a - logit_b| still counted as equal; 0 compares bits
-- param loss_name = 'loss': the scalar holding the training loss
-- param loss_tol = 0.0: largest |loss_a - loss_b| still counted as equal
-- param from_step = 0: ignore earlier steps (e.g. compare only the part after a resume)
WITH
-- batches: order, inputs and RNG states, matched by step, rank and batch index ------------------
-- (each view is read in one CTE: binding a view costs a listing of its files)
b_ab AS (SELECT * FROM batches WHERE run IN ($run_a, $run_b) AND step >= $from_step),
ba AS (SELECT * FROM b_ab WHERE run = $run_a),
bb AS (SELECT * FROM b_ab WHERE run = $run_b),
bj AS (
    SELECT
        a.step, a.epoch, a.rank, a.batch_idx,
        a.ids_hash IS DISTINCT FROM b.ids_hash AS order_differs,
        a.ids_set_hash = b.ids_set_hash AS same_set,
        len(list_intersect(a.sample_ids, b.sample_ids)) AS overlap,
        a.n_samples AS n_a, b.n_samples AS n_b,
        list_position(
            list_transform(range(1, greatest(len(a.sample_ids), len(b.sample_ids)) + 1),
                           lambda i: a.sample_ids[i] IS DISTINCT FROM b.sample_ids[i]),
            true) AS first_pos,
        a.sample_ids AS ids_a, b.sample_ids AS ids_b,
        a.input_fingerprint IS NOT NULL AND b.input_fingerprint IS NOT NULL AS inputs_known,
        a.input_fingerprint IS DISTINCT FROM b.input_fingerprint AS inputs_differ,
        a.input_shapes IS DISTINCT FROM b.input_shapes AS shapes_differ,
        a.input_shapes AS shapes_a, b.input_shapes AS shapes_b,
        coalesce(a.rng_torch, a.rng_cuda, a.rng_numpy, a.rng_python) IS NOT NULL
            AND coalesce(b.rng_torch, b.rng_cuda, b.rng_numpy, b.rng_python) IS NOT NULL AS rng_known,
        list_filter(['torch', 'cuda', 'numpy', 'python'], lambda g, i:
            [a.rng_torch, a.rng_cuda, a.rng_numpy, a.rng_python][i]
                <> [b.rng_torch, b.rng_cuda, b.rng_numpy, b.rng_python][i]) AS rng_differ
    FROM ba a
    JOIN bb b ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
),
layer_rng AS (
    SELECT 'rng' AS layer, 1 AS ord,
        (SELECT count(*) FROM ba WHERE coalesce(rng_torch, rng_cuda, rng_numpy, rng_python) IS NOT NULL) AS n_a,
        (SELECT count(*) FROM bb WHERE coalesce(rng_torch, rng_cuda, rng_numpy, rng_python) IS NOT NULL) AS n_b,
        count(*) FILTER (WHERE rng_known) AS n_compared,
        count(*) FILTER (WHERE len(rng_differ) > 0) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': batch_idx,
                 'detail': array_to_string(rng_differ, ', ') || ' RNG state differs at the start of the batch'},
                [step, rank, batch_idx]) FILTER (WHERE len(rng_differ) > 0) AS first
    FROM bj
),
layer_order AS (
    SELECT 'batch_order' AS layer, 2 AS ord,
        (SELECT count(*) FROM ba) AS n_a, (SELECT count(*) FROM bb) AS n_b,
        count(*) AS n_compared,
        count(*) FILTER (WHERE order_differs) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': batch_idx,
                 'detail': CASE WHEN same_set THEN 'same samples in another order'
                                ELSE format('different samples: {} of {} shared', overlap, greatest(n_a, n_b)) END
                           || format('; first at position {}: A {} vs B {}', first_pos - 1,
                                     coalesce(ids_a[first_pos], '(none)'), coalesce(ids_b[first_pos], '(none)'))},
                [step, rank, batch_idx]) FILTER (WHERE order_differs) AS first
    FROM bj
),
layer_inputs AS (
    SELECT 'inputs' AS layer, 3 AS ord,
        (SELECT count(input_fingerprint) FROM ba) AS n_a, (SELECT count(input_fingerprint) FROM bb) AS n_b,
        count(*) FILTER (WHERE inputs_known) AS n_compared,
        count(*) FILTER (WHERE inputs_known AND inputs_differ) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': batch_idx,
                 'detail': CASE
                     WHEN shapes_differ THEN format('input shapes differ: A {} vs B {}', shapes_a, shapes_b)
                     WHEN order_differs THEN 'input tensors differ (the batches hold other samples or order)'
                     ELSE 'same sample ids, different input tensors (a transform, augmentation or data change)' END},
                [step, rank, batch_idx]) FILTER (WHERE inputs_known AND inputs_differ) AS first
    FROM bj
),
-- predictions: per-batch digests first; samples are read only for the batches that need it --------
d_ab AS (SELECT * FROM pred_digests WHERE run IN ($run_a, $run_b) AND step >= $from_step),
da AS (SELECT * FROM d_ab WHERE run = $run_a),
db AS (SELECT * FROM d_ab WHERE run = $run_b),
dj AS (
    SELECT a.step, a.epoch, a.rank, a.batch_idx,
        a.logits_digest IS DISTINCT FROM b.logits_digest AS logits_differ,
        a.keys_digest IS DISTINCT FROM b.keys_digest AS keys_differ
    FROM da a
    JOIN db b ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
),
cand AS (
    SELECT *, row_number() OVER (ORDER BY step, rank, batch_idx) AS k FROM dj WHERE logits_differ
),
-- stage 1: the first candidate (tol = 0: it is the answer) or the first 16 (tol > 0)
probe1 AS (SELECT step, rank, batch_idx FROM cand WHERE k <= CASE WHEN $tol = 0 THEN 1 ELSE 16 END),
p1 AS (
    SELECT run, step, rank, batch_idx, sample_idx, logits FROM predictions
    WHERE run IN ($run_a, $run_b) AND step IN (SELECT step FROM probe1)
),
s1 AS (
    SELECT a.step, a.rank, a.batch_idx, a.sample_idx, a.logits AS la, b.logits AS lb
    FROM (SELECT * FROM p1 WHERE run = $run_a) a
    JOIN (SELECT * FROM p1 WHERE run = $run_b) b
      ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
     AND a.sample_idx = b.sample_idx
    SEMI JOIN probe1 p ON a.step = p.step AND a.rank = p.rank AND a.batch_idx IS NOT DISTINCT FROM p.batch_idx
),
c1 AS (
    SELECT step, rank, batch_idx, count(*) AS n,
        count(*) FILTER (WHERE NOT coalesce(len(la) = len(lb) AND list_bool_and(list_transform(
            range(1, len(la) + 1), lambda i: la[i] = lb[i] OR abs(la[i] - lb[i]) <= $tol)), false)) AS n_diff,
        max(list_max(list_transform(range(1, least(len(la), len(lb)) + 1),
            lambda i: CASE WHEN la[i] = lb[i] THEN 0 ELSE abs(la[i] - lb[i]) END))) AS max_diff,
        min(sample_idx) FILTER (WHERE NOT coalesce(len(la) = len(lb) AND list_bool_and(list_transform(
            range(1, len(la) + 1), lambda i: la[i] = lb[i] OR abs(la[i] - lb[i]) <= $tol)), false)) AS first_sample,
        max(len(la)) AS classes_a, max(len(lb)) AS classes_b
    FROM s1 GROUP BY step, rank, batch_idx
),
hit1 AS (SELECT * FROM c1 WHERE n_diff > 0 OR $tol = 0),
-- stage 2 (tol > 0 and nothing above tol in stage 1): the remaining candidates
probe2 AS (
    SELECT step, rank, batch_idx FROM cand
    WHERE $tol > 0 AND k > 16 AND NOT EXISTS (SELECT 1 FROM hit1)
),
p2 AS (
    SELECT run, step, rank, batch_idx, sample_idx, logits FROM predictions
    WHERE run IN ($run_a, $run_b) AND step IN (SELECT step FROM probe2)
),
s2 AS (
    SELECT a.step, a.rank, a.batch_idx, a.sample_idx, a.logits AS la, b.logits AS lb
    FROM (SELECT * FROM p2 WHERE run = $run_a) a
    JOIN (SELECT * FROM p2 WHERE run = $run_b) b
      ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
     AND a.sample_idx = b.sample_idx
    SEMI JOIN probe2 p ON a.step = p.step AND a.rank = p.rank AND a.batch_idx IS NOT DISTINCT FROM p.batch_idx
),
c2 AS (
    SELECT step, rank, batch_idx, count(*) AS n,
        count(*) FILTER (WHERE NOT coalesce(len(la) = len(lb) AND list_bool_and(list_transform(
            range(1, len(la) + 1), lambda i: la[i] = lb[i] OR abs(la[i] - lb[i]) <= $tol)), false)) AS n_diff,
        max(list_max(list_transform(range(1, least(len(la), len(lb)) + 1),
            lambda i: CASE WHEN la[i] = lb[i] THEN 0 ELSE abs(la[i] - lb[i]) END))) AS max_diff,
        min(sample_idx) FILTER (WHERE NOT coalesce(len(la) = len(lb) AND list_bool_and(list_transform(
            range(1, len(la) + 1), lambda i: la[i] = lb[i] OR abs(la[i] - lb[i]) <= $tol)), false)) AS first_sample,
        max(len(la)) AS classes_a, max(len(lb)) AS classes_b
    FROM s2 GROUP BY step, rank, batch_idx
),
hit AS (
    SELECT h.*, d.epoch, d.keys_differ FROM (SELECT * FROM hit1 UNION ALL SELECT * FROM c2 WHERE n_diff > 0) h
    JOIN dj d ON h.step = d.step AND h.rank = d.rank AND h.batch_idx IS NOT DISTINCT FROM d.batch_idx
    ORDER BY h.step, h.rank, h.batch_idx LIMIT 1
),
layer_pred AS (
    SELECT 'predictions' AS layer, 4 AS ord,
        (SELECT count(*) FROM da) AS n_a, (SELECT count(*) FROM db) AS n_b,
        (SELECT count(*) FROM dj) AS n_compared,
        (SELECT count(*) FROM cand) AS n_differing,
        (SELECT {'step': step, 'epoch': epoch, 'batch_idx': batch_idx,
                 'detail': CASE
                     WHEN classes_a <> classes_b THEN format('number of classes differs: A {} vs B {}', classes_a, classes_b)
                     WHEN n_diff = 0 THEN 'logits differ in their bits only (-0.0 vs 0.0, NaN payloads)'
                     ELSE format('{} of {} samples differ (max |dlogit| {:.3g}); first: sample_idx {}',
                                 n_diff, n, max_diff, first_sample) END
                     || CASE WHEN keys_differ THEN '; the batch holds other samples (keys differ)' ELSE '' END}
         FROM hit) AS first
),
-- loss -------------------------------------------------------------------------------------------
l_ab AS (SELECT * FROM scalars WHERE run IN ($run_a, $run_b) AND name = $loss_name AND step >= $from_step),
la_ AS (SELECT * FROM l_ab WHERE run = $run_a),
lb_ AS (SELECT * FROM l_ab WHERE run = $run_b),
lj AS (
    SELECT a.step, a.epoch, a.value AS va, b.value AS vb,
        NOT coalesce(a.value = b.value OR abs(a.value - b.value) <= $loss_tol, false) AS differs
    FROM la_ a JOIN lb_ b ON a.step = b.step AND a.rank = b.rank
),
layer_loss AS (
    SELECT 'loss' AS layer, 5 AS ord,
        (SELECT count(*) FROM la_) AS n_a, (SELECT count(*) FROM lb_) AS n_b,
        count(*) AS n_compared, count(*) FILTER (WHERE differs) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': NULL::BIGINT,
                 'detail': format('{} A {:.6g} vs B {:.6g}', $loss_name, va, vb)}, step)
            FILTER (WHERE differs) AS first
    FROM lj
),
-- parameters: weights, gradients and optimizer state, matched by step, rank, name and kind ---------
p_ab AS (SELECT * FROM params WHERE run IN ($run_a, $run_b) AND step >= $from_step),
pa AS (SELECT * FROM p_ab WHERE run = $run_a),
pb AS (SELECT * FROM p_ab WHERE run = $run_b),
pj AS (
    SELECT a.step, a.epoch, a.rank, a.name, coalesce(a.kind, 'param') AS kind, a."group" AS grp,
        a.fingerprint IS NOT NULL AND b.fingerprint IS NOT NULL AS w_known,
        a.fingerprint IS DISTINCT FROM b.fingerprint AS w_differ,
        a.grad_fingerprint IS NOT NULL AND b.grad_fingerprint IS NOT NULL AS g_known,
        a.grad_fingerprint IS DISTINCT FROM b.grad_fingerprint AS g_differ,
        abs(a.norm - b.norm) / greatest(abs(a.norm), 1e-30) AS gap,
        abs(a.grad_norm - b.grad_norm) / greatest(abs(a.grad_norm), 1e-30) AS grad_gap
    FROM pa a
    JOIN pb b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
     AND coalesce(a.kind, 'param') = coalesce(b.kind, 'param')
),
per_step AS (
    SELECT step, min(epoch) AS epoch,
        count(*) FILTER (WHERE kind = 'param' AND w_known) AS w_n,
        count(*) FILTER (WHERE kind = 'param' AND w_known AND w_differ) AS w_diff,
        list(name ORDER BY gap DESC, name) FILTER (WHERE kind = 'param' AND w_known AND w_differ) AS w_names,
        list(DISTINCT coalesce(grp, '(no group)') ORDER BY coalesce(grp, '(no group)'))
            FILTER (WHERE kind = 'param' AND w_known AND w_differ) AS w_groups,
        count(*) FILTER (WHERE kind = 'param' AND g_known) AS g_n,
        count(*) FILTER (WHERE kind = 'param' AND g_known AND g_differ) AS g_diff,
        list(name ORDER BY grad_gap DESC, name) FILTER (WHERE kind = 'param' AND g_known AND g_differ) AS g_names,
        count(*) FILTER (WHERE kind LIKE 'optim:%' AND w_known) AS o_n,
        count(*) FILTER (WHERE kind LIKE 'optim:%' AND w_known AND w_differ) AS o_diff,
        list(name || ' (' || kind || ')' ORDER BY gap DESC, name)
            FILTER (WHERE kind LIKE 'optim:%' AND w_known AND w_differ) AS o_names,
        count(*) FILTER (WHERE kind LIKE 'initial:%' AND w_known) AS i_n,
        count(*) FILTER (WHERE kind LIKE 'initial:%' AND w_known AND w_differ) AS i_diff,
        list(name ORDER BY gap DESC, name) FILTER (WHERE kind LIKE 'initial:%' AND w_known AND w_differ) AS i_names,
        count(*) FILTER (WHERE kind = 'buffer' AND w_known) AS b_n,
        count(*) FILTER (WHERE kind = 'buffer' AND w_known AND w_differ) AS b_diff,
        list(name ORDER BY gap DESC, name) FILTER (WHERE kind = 'buffer' AND w_known AND w_differ) AS b_names
    FROM pj GROUP BY step
),
layer_initial AS (
    SELECT 'initial_weights' AS layer, 0 AS ord,
        (SELECT count(DISTINCT step) FROM pa WHERE fingerprint IS NOT NULL AND kind LIKE 'initial:%') AS n_a,
        (SELECT count(DISTINCT step) FROM pb WHERE fingerprint IS NOT NULL AND kind LIKE 'initial:%') AS n_b,
        count(*) FILTER (WHERE i_n > 0) AS n_compared, count(*) FILTER (WHERE i_diff > 0) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': NULL::BIGINT,
                 'detail': format('{} of {} tensors differ before training: {}', i_diff, i_n,
                                  array_to_string(i_names[1:5], ', ') || CASE WHEN i_diff > 5 THEN ', ...' ELSE '' END)},
                step) FILTER (WHERE i_diff > 0) AS first
    FROM per_step
),
layer_buffers AS (
    SELECT 'buffers' AS layer, 7 AS ord,
        (SELECT count(DISTINCT step) FROM pa WHERE fingerprint IS NOT NULL AND kind = 'buffer') AS n_a,
        (SELECT count(DISTINCT step) FROM pb WHERE fingerprint IS NOT NULL AND kind = 'buffer') AS n_b,
        count(*) FILTER (WHERE b_n > 0) AS n_compared, count(*) FILTER (WHERE b_diff > 0) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': NULL::BIGINT,
                 'detail': format('{} of {} buffers differ: {}', b_diff, b_n,
                                  array_to_string(b_names[1:5], ', ') || CASE WHEN b_diff > 5 THEN ', ...' ELSE '' END)},
                step) FILTER (WHERE b_diff > 0) AS first
    FROM per_step
),
layer_grad AS (
    SELECT 'gradients' AS layer, 6 AS ord,
        (SELECT count(DISTINCT step) FROM pa WHERE grad_fingerprint IS NOT NULL) AS n_a,
        (SELECT count(DISTINCT step) FROM pb WHERE grad_fingerprint IS NOT NULL) AS n_b,
        count(*) FILTER (WHERE g_n > 0) AS n_compared, count(*) FILTER (WHERE g_diff > 0) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': NULL::BIGINT,
                 'detail': format('{} of {} gradients differ: {}', g_diff, g_n,
                                  array_to_string(g_names[1:5], ', ') || CASE WHEN g_diff > 5 THEN ', ...' ELSE '' END)},
                step) FILTER (WHERE g_diff > 0) AS first
    FROM per_step
),
layer_weights AS (
    SELECT 'weights' AS layer, 8 AS ord,
        (SELECT count(DISTINCT step) FROM pa WHERE fingerprint IS NOT NULL AND coalesce(kind, 'param') = 'param') AS n_a,
        (SELECT count(DISTINCT step) FROM pb WHERE fingerprint IS NOT NULL AND coalesce(kind, 'param') = 'param') AS n_b,
        count(*) FILTER (WHERE w_n > 0) AS n_compared, count(*) FILTER (WHERE w_diff > 0) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': NULL::BIGINT,
                 'detail': format('{} of {} parameters differ (groups: {}): {}', w_diff, w_n,
                                  array_to_string(w_groups, ', '),
                                  array_to_string(w_names[1:5], ', ') || CASE WHEN w_diff > 5 THEN ', ...' ELSE '' END)},
                step) FILTER (WHERE w_diff > 0) AS first
    FROM per_step
),
layer_optim AS (
    SELECT 'optimizer' AS layer, 9 AS ord,
        (SELECT count(DISTINCT step) FROM pa WHERE fingerprint IS NOT NULL AND kind LIKE 'optim:%') AS n_a,
        (SELECT count(DISTINCT step) FROM pb WHERE fingerprint IS NOT NULL AND kind LIKE 'optim:%') AS n_b,
        count(*) FILTER (WHERE o_n > 0) AS n_compared, count(*) FILTER (WHERE o_diff > 0) AS n_differing,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': NULL::BIGINT,
                 'detail': format('{} of {} optimizer tensors differ: {}', o_diff, o_n,
                                  array_to_string(o_names[1:5], ', ') || CASE WHEN o_diff > 5 THEN ', ...' ELSE '' END)},
                step) FILTER (WHERE o_diff > 0) AS first
    FROM per_step
),
layers AS (
    SELECT * FROM layer_initial UNION ALL SELECT * FROM layer_rng UNION ALL SELECT * FROM layer_order
    UNION ALL SELECT * FROM layer_inputs UNION ALL SELECT * FROM layer_pred UNION ALL SELECT * FROM layer_loss
    UNION ALL SELECT * FROM layer_grad UNION ALL SELECT * FROM layer_buffers UNION ALL SELECT * FROM layer_weights
    UNION ALL SELECT * FROM layer_optim
),
judged AS (
    SELECT layer, ord,
        CASE
            WHEN first IS NOT NULL THEN 'differs'
            WHEN n_a = 0 AND n_b = 0 THEN 'not captured'
            WHEN n_b = 0 THEN 'missing in B'
            WHEN n_a = 0 THEN 'missing in A'
            WHEN n_compared = 0 THEN 'no overlap'
            ELSE 'same'
        END AS status,
        first.step AS first_step, first.epoch AS epoch, first.batch_idx AS batch_idx,
        n_a, n_b, n_compared, n_differing, first.detail AS detail
    FROM layers
)
SELECT layer, status, first_step, epoch, batch_idx, n_a, n_b, n_compared, n_differing, detail,
    first_step IS NOT NULL
        AND row_number() OVER (ORDER BY first_step NULLS LAST, ord) = 1 AS is_first
FROM judged
ORDER BY first_step NULLS LAST, ord
