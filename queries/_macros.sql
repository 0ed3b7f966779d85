-- Shared DuckDB macros of the query library: what several queries need, written once.
-- lakelog.connect creates them on every connection (lakelog.read.macros), before the queries run;
-- the Spark translation expands them inline (lakelog.read.sparksql). Not a query: no header.
--
-- Layers of evidence, in causal order: a tie at one step goes to the earlier layer, because the later
-- ones usually differ only because it did (the order of the determinism guide: environment and seeding,
-- sample order, inputs, RNG, initial weights, forward, loss, gradients, update).
CREATE OR REPLACE MACRO layer_rank(layer) AS list_position(
    ['environment', 'batch_order', 'inputs', 'rng', 'initial_weights', 'predictions', 'loss',
     'gradients', 'buffers', 'weights', 'updates', 'optimizer'], layer);

-- "Equal within tol": bit-identical (so NaN payloads and -0.0 aside, equal values always match), or
-- no further apart than tol. NULL on either side is not equal.
CREATE OR REPLACE MACRO within_tol(x, y, tol) AS coalesce(x = y OR abs(x - y) <= tol, false);

-- The same for two lists (logits): same length and every element within tol.
CREATE OR REPLACE MACRO lists_within_tol(xs, ys, tol) AS coalesce(len(xs) = len(ys) AND list_bool_and(
    list_transform(range(1, len(xs) + 1), lambda i: xs[i] = ys[i] OR abs(xs[i] - ys[i]) <= tol)), false);

-- The largest |x - y| over the common positions of two lists (equal elements count 0, so infinities match).
CREATE OR REPLACE MACRO lists_max_gap(xs, ys) AS list_max(list_transform(range(1, least(len(xs), len(ys)) + 1),
    lambda i: CASE WHEN xs[i] = ys[i] THEN 0 ELSE abs(xs[i] - ys[i]) END));

-- The first five names of a list and "..." when there are more (n of them).
CREATE OR REPLACE MACRO name_list(names, n) AS
    array_to_string(names[1:5], ', ') || CASE WHEN n > 5 THEN ', ...' ELSE '' END;

-- The family of a params row's kind, as the layer it is evidence for (NULL: a resume-point capture).
-- Parameters come before optimizer state wherever tensors are listed.
CREATE OR REPLACE MACRO param_family(kind) AS CASE
    WHEN coalesce(kind, 'param') = 'param' THEN 'weights' WHEN kind = 'buffer' THEN 'buffers'
    WHEN starts_with(kind, 'initial:') THEN 'initial_weights' WHEN starts_with(kind, 'optim:') THEN 'optimizer' END;

-- Fingerprints carry their algorithm (lakelog.write.fingerprint): 'x3:' + 32 hex digits, or the bare 32
-- digits of 'v1'. Two of them say anything about equality only when the algorithms match:
-- fp_algorithm names it, fp_comparable says whether two can be compared, fp_equal is NULL when not.
CREATE OR REPLACE MACRO fp_algorithm(fp) AS
    CASE WHEN length(fp) > 33 THEN substr(fp, 1, length(fp) - 33) WHEN fp IS NOT NULL THEN 'v1' END;
CREATE OR REPLACE MACRO fp_comparable(x, y) AS
    coalesce(substr(x, 1, length(x) - 32) = substr(y, 1, length(y) - 32), false);
CREATE OR REPLACE MACRO fp_equal(x, y) AS CASE WHEN fp_comparable(x, y) THEN x = y END;

-- Runs A and B side by side: their batches matched by step, rank and batch index (from from_step on).
CREATE OR REPLACE MACRO paired_batches(run_a, run_b, from_step) AS TABLE
    SELECT a.step, a.epoch, a.rank, a.batch_idx,
        a.ids_hash IS DISTINCT FROM b.ids_hash AS order_differs,
        a.ids_set_hash = b.ids_set_hash AS same_set,
        a.sample_ids AS ids_a, b.sample_ids AS ids_b, a.n_samples AS n_a, b.n_samples AS n_b,
        fp_comparable(a.input_fingerprint, b.input_fingerprint) AS inputs_known,
        a.input_fingerprint IS NOT NULL AND b.input_fingerprint IS NOT NULL
            AND NOT fp_comparable(a.input_fingerprint, b.input_fingerprint) AS inputs_incomparable,
        a.input_fingerprint IS DISTINCT FROM b.input_fingerprint AS inputs_differ,
        a.input_shapes AS shapes_a, b.input_shapes AS shapes_b,
        [a.rng_torch, a.rng_cuda, a.rng_numpy, a.rng_python] AS rng_a,
        [b.rng_torch, b.rng_cuda, b.rng_numpy, b.rng_python] AS rng_b
    FROM batches a
    JOIN batches b ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
    WHERE a.run = run_a AND b.run = run_b AND a.step >= from_step AND b.step >= from_step;

-- The comparison columns of a params row of A (a) against one of B (b), for paired_params and the
-- queries that pair params rows themselves (first_divergence reads only some captures).
CREATE OR REPLACE MACRO param_pair(a, b) AS {
    'step': a.step, 'epoch': a.epoch, 'rank': a.rank, 'name': a.name, 'kind': coalesce(a.kind, 'param'),
    'grp': a."group", 'w_known': fp_comparable(a.fingerprint, b.fingerprint),
    'w_differ': a.fingerprint IS DISTINCT FROM b.fingerprint,
    'g_known': fp_comparable(a.grad_fingerprint, b.grad_fingerprint),
    'g_differ': a.grad_fingerprint IS DISTINCT FROM b.grad_fingerprint,
    'w_incomparable': a.fingerprint IS NOT NULL AND b.fingerprint IS NOT NULL
        AND NOT fp_comparable(a.fingerprint, b.fingerprint),
    'norm_gap': abs(a.norm - b.norm), 'grad_gap': abs(a.grad_norm - b.grad_norm),
    'update_gap': abs(a.update_norm - b.update_norm),
    'rel_gap': abs(a.norm - b.norm) / greatest(abs(a.norm), 1e-30),
    'grad_rel_gap': abs(a.grad_norm - b.grad_norm) / greatest(abs(a.grad_norm), 1e-30)};

-- Runs A and B side by side: their params rows matched by step, rank, name and kind.
CREATE OR REPLACE MACRO paired_params(run_a, run_b, from_step) AS TABLE
    SELECT unnest(param_pair(a, b))
    FROM params a
    JOIN params b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
     AND coalesce(a.kind, 'param') = coalesce(b.kind, 'param')
    WHERE a.run = run_a AND b.run = run_b AND a.step >= from_step AND b.step >= from_step;

-- Runs A and B side by side: one scalar, matched by step and rank.
CREATE OR REPLACE MACRO paired_scalar(run_a, run_b, scalar, from_step) AS TABLE
    SELECT a.step, a.epoch, a.rank, a.value AS va, b.value AS vb
    FROM scalars a JOIN scalars b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
    WHERE a.run = run_a AND b.run = run_b AND a.name = scalar AND a.step >= from_step AND b.step >= from_step;

-- Runs A and B side by side: the per-batch prediction digests, matched by step, rank and batch index.
CREATE OR REPLACE MACRO paired_digests(run_a, run_b, from_step) AS TABLE
    SELECT a.step, a.epoch, a.rank, a.batch_idx,
        a.logits_digest IS DISTINCT FROM b.logits_digest AS logits_differ,
        a.keys_digest IS DISTINCT FROM b.keys_digest AS keys_differ
    FROM pred_digests a
    JOIN pred_digests b ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
    WHERE a.run = run_a AND b.run = run_b AND a.step >= from_step AND b.step >= from_step;

-- Runs A and B side by side: the predictions of steps lo..hi, matched sample by sample.
CREATE OR REPLACE MACRO paired_predictions(run_a, run_b, lo, hi) AS TABLE
    SELECT a.step, a.epoch, a.rank, a.batch_idx, a.sample_idx, a.logits AS la, b.logits AS lb
    FROM predictions a
    JOIN predictions b ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
     AND a.sample_idx = b.sample_idx
    WHERE a.run = run_a AND b.run = run_b AND a.step BETWEEN lo AND hi AND b.step BETWEEN lo AND hi;

-- Per batch of steps lo..hi, how the logits of runs A and B compare: samples, samples beyond tol, the
-- largest gap, the number of classes on each side and the first sample beyond tol.
CREATE OR REPLACE MACRO logit_gaps(run_a, run_b, tol, lo, hi) AS TABLE
    SELECT step, rank, batch_idx, count(*) AS n, count(*) FILTER (WHERE NOT lists_within_tol(la, lb, tol)) AS n_diff,
        max(lists_max_gap(la, lb)) AS max_diff, max(len(la)) AS classes_a, max(len(lb)) AS classes_b,
        min(sample_idx) FILTER (WHERE NOT lists_within_tol(la, lb, tol)) AS first_sample
    FROM paired_predictions(run_a, run_b, lo, hi)
    GROUP BY step, rank, batch_idx;

-- A logit by its 0-based class index, as numpy and torch count (DuckDB lists count from 1, and
-- logits[0] is NULL): SELECT logit(logits, 0) AS logit0, logit(logits, 1) AS logit1,
-- prediction AS winner FROM predictions keeps a notebook's own column names.
CREATE OR REPLACE MACRO logit(logits, class_index) AS logits[class_index + 1];

-- Runs A and B side by side: the per-capture param digests, matched by step, rank and capture kind.
CREATE OR REPLACE MACRO paired_param_digests(run_a, run_b, from_step) AS TABLE
    SELECT a.step, a.epoch, a.rank, a.capture,
        a.weights_digest AS wa, b.weights_digest AS wb, a.grads_digest AS ga, b.grads_digest AS gb,
        a.buffers_digest AS ba, b.buffers_digest AS bb, a.optim_digest AS oa, b.optim_digest AS ob
    FROM param_digests a
    JOIN param_digests b ON a.step = b.step AND a.rank = b.rank AND a.capture = b.capture
    WHERE a.run = run_a AND b.run = run_b AND a.step >= from_step AND b.step >= from_step;
