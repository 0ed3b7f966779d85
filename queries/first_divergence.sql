-- name: first_divergence
-- The first step where runs A and B differ, in each layer of evidence, one row per layer ordered
-- by step; the earliest differing layer (is_first) is the cause to look at first.
-- Layers, in causal order (a tie at one step goes to the earlier layer: layer_rank in _macros.sql):
-- batch_order (batches.ids_hash), inputs (batches.input_fingerprint), rng (batches.rng_* fingerprints
-- at batch start), initial_weights (params of kind 'initial:*', captured by run.watch before
-- training), predictions (pred_digests per batch, then the samples of the first differing batches
-- only), loss (the scalar named $loss_name), gradients (params.grad_fingerprint), buffers (kind
-- 'buffer', e.g. BatchNorm running statistics), weights (params.fingerprint of kind 'param': the
-- weights after that step's update), optimizer (params.fingerprint of kind 'optim:*').
-- status: differs | same | not captured (neither run has it) | missing in A | missing in B |
-- not comparable (fingerprints of different algorithms: x3 on CPU, v1 on accelerators) |
-- no overlap (both have it, at no common step). n_a / n_b: units (batches, steps) in each run,
-- n_compared: units present in both, n_differing: compared units that differ (for predictions:
-- batches whose logits are not bit-identical). last_equal_step: the last compared step before
-- first_step where the layer was equal; placed: first_step is where the layer parted (the step
-- before it was logged equal, or nothing was logged earlier); a sparsely logged layer says in its
-- detail "between step L+1 and F (last equal logged step L)".
-- param run_a: the reference run (its name in the lake)
-- param run_b: the run compared with it
-- param tol = 0.0: largest |logit_a - logit_b| still counted as equal; 0 compares bits
-- param loss_name = 'loss': the scalar holding the training loss
-- param loss_tol = 0.0: largest |loss_a - loss_b| still counted as equal
-- param from_step = 0: ignore earlier steps (e.g. compare only the part after a resume)
WITH
bj AS (
    SELECT *, list_position(list_transform(range(1, greatest(len(ids_a), len(ids_b)) + 1),
        lambda i: ids_a[i] IS DISTINCT FROM ids_b[i]), true) AS first_pos,
        list_filter(['torch', 'cuda', 'numpy', 'python'], lambda g, i: rng_a[i] <> rng_b[i]) AS rng_differ
    FROM paired_batches($run_a, $run_b, $from_step)
),
-- params: with param_digests (one row per capture) in both runs, the tensors are read only at the first
-- capture where each family's digest differs; older runs are compared tensor by tensor
dgj AS (SELECT * FROM paired_param_digests($run_a, $run_b, $from_step)),
dg AS (
    SELECT 'weights' AS family, step, epoch, rank, fp_comparable(wa, wb) AS known, wa IS DISTINCT FROM wb AS differs
    FROM dgj WHERE capture = 'step'
    UNION ALL SELECT 'gradients', step, epoch, rank, fp_comparable(ga, gb), ga IS DISTINCT FROM gb FROM dgj WHERE capture = 'step'
    UNION ALL SELECT 'buffers', step, epoch, rank, fp_comparable(ba, bb), ba IS DISTINCT FROM bb FROM dgj WHERE capture = 'step'
    UNION ALL SELECT 'optimizer', step, epoch, rank, fp_comparable(oa, ob), oa IS DISTINCT FROM ob FROM dgj WHERE capture = 'step'
    UNION ALL SELECT 'initial_weights', step, epoch, rank, fp_comparable(wa, wb),
        wa IS DISTINCT FROM wb OR ba IS DISTINCT FROM bb FROM dgj WHERE capture = 'initial'
),
dg_steps AS (SELECT DISTINCT min(step) FILTER (WHERE known AND differs) AS step FROM dg GROUP BY family),
pj_steps AS (SELECT CASE WHEN count(*) > 0 THEN coalesce(list(DISTINCT step) FILTER (WHERE step IS NOT NULL), [])
                    END AS steps FROM dg_steps),
p_at AS (  -- a join on the digests' steps (its filter reaches the scan), or every step without digests
    SELECT p.* FROM params p JOIN (SELECT DISTINCT unnest(steps) AS at FROM pj_steps) d ON p.step = d.at
    WHERE p.run IN ($run_a, $run_b) AND p.step >= $from_step
    UNION ALL
    SELECT p.* FROM params p JOIN (SELECT 1 FROM pj_steps WHERE steps IS NULL) ON true
    WHERE p.run IN ($run_a, $run_b) AND p.step >= $from_step
),
pj AS (
    SELECT unnest(param_pair(a, b)), param_family(a.kind) AS family
    FROM (SELECT * FROM p_at WHERE run = $run_a) a
    JOIN (SELECT * FROM p_at WHERE run = $run_b) b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
     AND coalesce(a.kind, 'param') = coalesce(b.kind, 'param')
),
per_step AS (
    SELECT step, min(epoch) AS epoch, family, count(*) FILTER (WHERE known) AS n,
        count(*) FILTER (WHERE known AND differ) AS n_diff,
        list(label ORDER BY gap DESC, label) FILTER (WHERE known AND differ) AS names,
        list(DISTINCT coalesce(grp, '(no group)') ORDER BY coalesce(grp, '(no group)'))
            FILTER (WHERE known AND differ) AS groups
    FROM (
        SELECT step, epoch, grp, family, w_known AS known, w_differ AS differ, rel_gap AS gap,
            CASE WHEN family = 'optimizer' THEN name || ' (' || kind || ')' ELSE name END AS label
        FROM pj WHERE family IS NOT NULL
        UNION ALL
        SELECT step, epoch, grp, 'gradients', g_known, g_differ, grad_rel_gap, name FROM pj WHERE family = 'weights'
    )
    GROUP BY step, family
),
dj AS (
    SELECT *, CASE WHEN logits_differ THEN row_number() OVER (PARTITION BY logits_differ ORDER BY step, rank, batch_idx) END AS k
    FROM paired_digests($run_a, $run_b, $from_step)
),
-- predictions: samples are read for the first differing batch only (tol = 0: it is the answer), else for
-- the first 16 candidates, and for the later ones only when none of those differs beyond tol
c1 AS (
    SELECT g.* FROM logit_gaps($run_a, $run_b, $tol, (SELECT min(step) FROM dj WHERE k <= CASE WHEN $tol = 0 THEN 1 ELSE 16 END),
                               (SELECT max(step) FROM dj WHERE k <= CASE WHEN $tol = 0 THEN 1 ELSE 16 END)) g
    SEMI JOIN dj d ON d.k <= CASE WHEN $tol = 0 THEN 1 ELSE 16 END AND g.step = d.step AND g.rank = d.rank
     AND g.batch_idx IS NOT DISTINCT FROM d.batch_idx
),
c2 AS (
    SELECT g.* FROM logit_gaps($run_a, $run_b, $tol,
        (SELECT min(step) FROM dj WHERE k > 16 AND $tol > 0 AND NOT EXISTS (SELECT 1 FROM c1 WHERE n_diff > 0)),
        (SELECT max(step) FROM dj WHERE k > 16)) g
    SEMI JOIN dj d ON d.k > 16 AND g.step = d.step AND g.rank = d.rank AND g.batch_idx IS NOT DISTINCT FROM d.batch_idx
),
hit AS (SELECT * FROM c1 WHERE n_diff > 0 OR $tol = 0 UNION ALL SELECT * FROM c2 WHERE n_diff > 0),
units_p AS (
    SELECT family, step, epoch, n > 0 AS known, n_diff > 0 AS differs, CASE family
        WHEN 'initial_weights' THEN format('{} of {} tensors differ before training: {}', n_diff, n, name_list(names, n_diff))
        WHEN 'buffers' THEN format('{} of {} buffers differ: {}', n_diff, n, name_list(names, n_diff))
        WHEN 'gradients' THEN format('{} of {} gradients differ: {}', n_diff, n, name_list(names, n_diff))
        WHEN 'optimizer' THEN format('{} of {} optimizer tensors differ: {}', n_diff, n, name_list(names, n_diff))
        ELSE format('{} of {} parameters differ (groups: {}): {}', n_diff, n, array_to_string(groups, ', '),
                    name_list(names, n_diff)) END AS detail
    FROM per_step
),
-- one row per compared unit (a batch, a step) and layer: known (both runs hold it), differs, detail
units AS (
    SELECT 'rng' AS layer, step, epoch, rank, batch_idx, len(list_filter(rng_a, lambda x: x IS NOT NULL)) > 0
        AND len(list_filter(rng_b, lambda x: x IS NOT NULL)) > 0 AS known, len(rng_differ) > 0 AS differs,
        array_to_string(rng_differ, ', ') || ' RNG state differs at the start of the batch' AS detail
    FROM bj
    UNION ALL
    SELECT 'batch_order', step, epoch, rank, batch_idx, true, order_differs,
        CASE WHEN same_set THEN 'same samples in another order'
             ELSE format('different samples: {} of {} shared', len(list_intersect(ids_a, ids_b)), greatest(n_a, n_b)) END
        || format('; first at position {}: A {} vs B {}', first_pos - 1,
                  coalesce(ids_a[first_pos], '(none)'), coalesce(ids_b[first_pos], '(none)'))
    FROM bj
    UNION ALL
    SELECT 'inputs', step, epoch, rank, batch_idx, inputs_known, inputs_differ, CASE
        WHEN shapes_a IS DISTINCT FROM shapes_b THEN format('input shapes differ: A {} vs B {}', shapes_a, shapes_b)
        WHEN order_differs THEN 'input tensors differ (the batches hold other samples or order)'
        ELSE 'same sample ids, different input tensors (a transform, augmentation or data change)' END
    FROM bj
    UNION ALL
    SELECT 'predictions', d.step, d.epoch, d.rank, d.batch_idx, true, d.logits_differ, CASE
        WHEN h.step IS NULL THEN NULL
        WHEN classes_a <> classes_b THEN format('number of classes differs: A {} vs B {}', classes_a, classes_b)
        WHEN n_diff = 0 THEN 'logits differ in their bits only (-0.0 vs 0.0, NaN payloads)'
        ELSE format('{} of {} samples differ (max |dlogit| {:.3g}); first: sample_idx {}', n_diff, n, max_diff, first_sample)
        END || CASE WHEN keys_differ THEN '; the batch holds other samples (keys differ)' ELSE '' END
    FROM dj d LEFT JOIN hit h ON h.step = d.step AND h.rank = d.rank AND h.batch_idx IS NOT DISTINCT FROM d.batch_idx
    UNION ALL
    SELECT 'loss', step, epoch, rank, NULL, true, NOT within_tol(va, vb, $loss_tol),
        format('{} A {:.6g} vs B {:.6g}', $loss_name, va, vb)
    FROM paired_scalar($run_a, $run_b, $loss_name, $from_step)
    UNION ALL
    SELECT family, step, epoch, 0, NULL, known, differs, detail FROM units_p WHERE NOT EXISTS (SELECT 1 FROM dgj)
    UNION ALL
    SELECT d.family, d.step, d.epoch, d.rank, NULL, d.known, d.differs, u.detail
    FROM dg d LEFT JOIN units_p u ON u.family = d.family AND u.step = d.step
),
firsts AS (
    SELECT layer, count(*) FILTER (WHERE known) AS n_compared, min(step) FILTER (WHERE known) AS first_known,
        arg_min({'step': step, 'epoch': epoch, 'batch_idx': batch_idx, 'detail': detail},
                [step, rank, coalesce(batch_idx, -1)]) FILTER (WHERE known AND differs AND detail IS NOT NULL) AS first
    FROM units GROUP BY layer
),
counts AS (
    SELECT run, 'batch_order' AS layer, count(*) AS n FROM batches WHERE run IN ($run_a, $run_b) AND step >= $from_step GROUP BY run
    UNION ALL SELECT run, 'inputs', count(input_fingerprint) FROM batches WHERE run IN ($run_a, $run_b) AND step >= $from_step GROUP BY run
    UNION ALL SELECT run, 'rng', count(coalesce(rng_torch, rng_cuda, rng_numpy, rng_python)) FROM batches WHERE run IN ($run_a, $run_b) AND step >= $from_step GROUP BY run
    UNION ALL SELECT run, 'predictions', count(*) FROM pred_digests WHERE run IN ($run_a, $run_b) AND step >= $from_step GROUP BY run
    UNION ALL SELECT run, 'loss', count(*) FROM scalars WHERE run IN ($run_a, $run_b) AND name = $loss_name AND step >= $from_step GROUP BY run
    UNION ALL SELECT run, param_family(kind), count(DISTINCT step) FROM params WHERE run IN ($run_a, $run_b)
        AND step >= $from_step AND fingerprint IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dgj) GROUP BY run, param_family(kind)
    UNION ALL SELECT run, 'gradients', count(DISTINCT step) FROM params WHERE run IN ($run_a, $run_b)
        AND step >= $from_step AND grad_fingerprint IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dgj) GROUP BY run
    UNION ALL SELECT run, unnest(['weights', 'gradients', 'buffers', 'optimizer', 'initial_weights']), unnest([
        count(DISTINCT step) FILTER (WHERE capture = 'step' AND weights_digest IS NOT NULL),
        count(DISTINCT step) FILTER (WHERE capture = 'step' AND grads_digest IS NOT NULL),
        count(DISTINCT step) FILTER (WHERE capture = 'step' AND buffers_digest IS NOT NULL),
        count(DISTINCT step) FILTER (WHERE capture = 'step' AND optim_digest IS NOT NULL),
        count(DISTINCT step) FILTER (WHERE capture = 'initial' AND weights_digest IS NOT NULL)])
    FROM param_digests WHERE run IN ($run_a, $run_b) AND step >= $from_step AND EXISTS (SELECT 1 FROM dgj) GROUP BY run
),
judged AS (
    SELECT l.layer, layer_rank(l.layer) AS ord, coalesce(a.n, 0) AS n_a, coalesce(b.n, 0) AS n_b,
        coalesce(f.n_compared, 0) AS n_compared, f.first.step AS first_step, f.first.epoch AS epoch,
        f.first.batch_idx AS batch_idx, f.first.detail AS detail, f.first_known,
        (SELECT max(u.step) FROM units u WHERE u.layer = l.layer AND u.known AND NOT u.differs
         AND u.step < f.first.step) AS last_equal_step,
        (SELECT count(*) FROM units u WHERE u.layer = l.layer AND u.known AND u.differs) AS n_differing
    FROM (SELECT unnest(['batch_order', 'inputs', 'rng', 'initial_weights', 'predictions', 'loss', 'gradients',
                         'buffers', 'weights', 'optimizer']) AS layer) l
    LEFT JOIN firsts f USING (layer)
    LEFT JOIN counts a ON a.layer = l.layer AND a.run = $run_a
    LEFT JOIN counts b ON b.layer = l.layer AND b.run = $run_b
)
SELECT layer, CASE WHEN first_step IS NOT NULL THEN 'differs' WHEN n_a = 0 AND n_b = 0 THEN 'not captured'
        WHEN n_b = 0 THEN 'missing in B' WHEN n_a = 0 THEN 'missing in A'
        WHEN n_compared = 0 AND (EXISTS (SELECT 1 FROM pj WHERE pj.w_incomparable
                                         AND (pj.family = judged.layer OR judged.layer = 'gradients'))
                                 OR layer IN ('initial_weights', 'gradients', 'buffers', 'weights', 'optimizer')
                                 AND EXISTS (SELECT 1 FROM dgj WHERE wa IS NOT NULL AND wb IS NOT NULL
                                             AND NOT fp_comparable(wa, wb))
                                 OR layer = 'inputs' AND EXISTS (SELECT 1 FROM bj WHERE bj.inputs_incomparable))
            THEN 'not comparable'
        WHEN n_compared = 0 THEN 'no overlap'
        ELSE 'same' END AS status,
    first_step, epoch, batch_idx, n_a, n_b, n_compared, n_differing,
    detail || CASE WHEN first_step - last_equal_step > 1 THEN format('; between step {} and {} (last equal logged step {})',
        last_equal_step + 1, first_step, last_equal_step) ELSE '' END AS detail,
    last_equal_step,
    first_step IS NOT NULL AND (layer = 'initial_weights' OR first_step - last_equal_step = 1
        OR (last_equal_step IS NULL AND first_step <= (SELECT min(first_known) FROM judged))) AS placed,
    first_step IS NOT NULL AND row_number() OVER (ORDER BY first_step NULLS LAST, ord) = 1 AS is_first
FROM judged
ORDER BY first_step NULLS LAST, ord
