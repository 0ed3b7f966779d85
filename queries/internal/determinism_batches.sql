-- name: determinism_batches
-- Where two runs that should be identical first differ in their batches, one row per kind of evidence:
-- sample_ids (the ids in order), sample_set (which samples, in any order), inputs (the input tensors of
-- batches whose ids are the same: a random transform), rng_torch / rng_cuda / rng_numpy / rng_python (the
-- RNG state at batch start). Batches are lined up by step, rank and batch_idx (the last logged one wins).
-- first_step is NULL when the evidence never differs; n_compared counts the batches both runs logged it for;
-- first_common_step: the first step both runs logged a batch for. Input fingerprints of different
-- algorithms (x3 on a CPU, v1 on an accelerator) are not compared: n_incomparable counts them.
-- param run_a: the reference run
-- param run_b: the run compared with it
WITH a AS (
    SELECT * FROM batches WHERE run = $run_a
    QUALIFY row_number() OVER (PARTITION BY step, rank, coalesce(batch_idx, -1) ORDER BY time DESC) = 1
), b AS (
    SELECT * FROM batches WHERE run = $run_b
    QUALIFY row_number() OVER (PARTITION BY step, rank, coalesce(batch_idx, -1) ORDER BY time DESC) = 1
), j AS (
    SELECT a.step, a.rank, a.batch_idx, a.sample_ids AS ids_a, b.sample_ids AS ids_b,
           a.ids_hash AS ih_a, b.ids_hash AS ih_b, a.ids_set_hash AS sh_a, b.ids_set_hash AS sh_b,
           a.input_fingerprint AS in_a, b.input_fingerprint AS in_b,
           a.rng_torch AS rt_a, b.rng_torch AS rt_b, a.rng_cuda AS rc_a, b.rng_cuda AS rc_b,
           a.rng_numpy AS rn_a, b.rng_numpy AS rn_b, a.rng_python AS rp_a, b.rng_python AS rp_b
    FROM a JOIN b ON a.step = b.step AND a.rank = b.rank
        AND coalesce(a.batch_idx, -1) = coalesce(b.batch_idx, -1)
), evidence AS (
    SELECT 'sample_ids' AS evidence, step, rank, batch_idx, ih_a AS value_a, ih_b AS value_b, ids_a, ids_b FROM j
    UNION ALL SELECT 'sample_set', step, rank, batch_idx, sh_a, sh_b, ids_a, ids_b FROM j
    UNION ALL SELECT 'inputs', step, rank, batch_idx, in_a, in_b, ids_a, ids_b FROM j WHERE ih_a = ih_b
    UNION ALL SELECT 'rng_torch', step, rank, batch_idx, rt_a, rt_b, NULL, NULL FROM j
    UNION ALL SELECT 'rng_cuda', step, rank, batch_idx, rc_a, rc_b, NULL, NULL FROM j
    UNION ALL SELECT 'rng_numpy', step, rank, batch_idx, rn_a, rn_b, NULL, NULL FROM j
    UNION ALL SELECT 'rng_python', step, rank, batch_idx, rp_a, rp_b, NULL, NULL FROM j
), present AS (SELECT * FROM evidence WHERE value_a IS NOT NULL AND value_b IS NOT NULL
), compared AS (  -- input fingerprints of different algorithms say nothing about equality: not compared
    SELECT *, value_a <> value_b AS differs FROM present WHERE evidence <> 'inputs' OR fp_comparable(value_a, value_b)
), incomparable AS (
    SELECT evidence, count(*) AS n_incomparable FROM present
    WHERE evidence = 'inputs' AND NOT fp_comparable(value_a, value_b) GROUP BY evidence
), firsts AS (
    SELECT * FROM compared WHERE differs
    QUALIFY row_number() OVER (PARTITION BY evidence ORDER BY step, rank, batch_idx NULLS FIRST) = 1
), counts AS (
    SELECT evidence, count(*) AS n_compared, count(*) FILTER (WHERE differs) AS n_differ FROM compared
    GROUP BY evidence
), kinds AS (
    SELECT * FROM (VALUES ('sample_ids', 1), ('sample_set', 2), ('inputs', 3), ('rng_torch', 4), ('rng_cuda', 5),
                          ('rng_numpy', 6), ('rng_python', 7)) AS k(evidence, ord)
)
SELECT k.evidence, f.step AS first_step, f.rank, f.batch_idx, coalesce(c.n_compared, 0) AS n_compared,
       coalesce(c.n_differ, 0) AS n_differ, f.value_a, f.value_b, f.ids_a, f.ids_b,
       (SELECT count(*) FROM j) AS n_common_batches, (SELECT min(step) FROM j) AS first_common_step,
       coalesce(i.n_incomparable, 0) AS n_incomparable
FROM kinds k LEFT JOIN counts c USING (evidence) LEFT JOIN firsts f USING (evidence)
LEFT JOIN incomparable i USING (evidence)
ORDER BY k.ord
