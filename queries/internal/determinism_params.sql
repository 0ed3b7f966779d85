-- name: determinism_params
-- Where two runs' tensors first differ, one row per kind of evidence: initial_weights (fingerprints of
-- kinds initial:param / initial:buffer at each run's earliest capture, written by run.watch or
-- lakelog.write.determinism.log_initial_state), gradients (grad_fingerprint of kind param) and update (the
-- fingerprint of kind param: the weights after that step's optimizer update). Only steps both runs
-- captured are compared; a tensor one run lacks counts as different. names: the tensors that differ at
-- first_step (at most 20, by name); n_names: how many differ there. Fingerprints of different
-- algorithms (x3 on a CPU, v1 on an accelerator) are not compared: n_incomparable counts them.
-- param run_a: the reference run
-- param run_b: the run compared with it
WITH p AS (
    SELECT run, step, rank, name, kind, fingerprint, grad_fingerprint FROM params WHERE run IN ($run_a, $run_b)
    QUALIFY row_number() OVER (PARTITION BY run, step, rank, name, kind ORDER BY fingerprint) = 1
), initial AS (
    SELECT * FROM p WHERE kind LIKE 'initial:%'
    QUALIFY step = min(step) OVER (PARTITION BY run, rank)
), ia AS (SELECT * FROM initial WHERE run = $run_a),
   ib AS (SELECT * FROM initial WHERE run = $run_b),
init_cmp AS (
    SELECT 'initial_weights' AS evidence, coalesce(ia.step, ib.step) AS step, coalesce(ia.rank, ib.rank) AS rank,
           coalesce(ia.name, ib.name) AS name, ia.fingerprint AS value_a, ib.fingerprint AS value_b
    FROM ia FULL JOIN ib ON ia.rank = ib.rank AND ia.name = ib.name AND ia.kind = ib.kind
    WHERE (SELECT count(*) FROM ia) > 0 AND (SELECT count(*) FROM ib) > 0
), la AS (SELECT * FROM p WHERE run = $run_a AND kind = 'param'),
   lb AS (SELECT * FROM p WHERE run = $run_b AND kind = 'param'),
common AS (SELECT step, rank FROM la INTERSECT SELECT step, rank FROM lb),
live AS (
    SELECT coalesce(la.step, lb.step) AS step, coalesce(la.rank, lb.rank) AS rank, coalesce(la.name, lb.name) AS name,
           la.fingerprint AS fa, lb.fingerprint AS fb, la.grad_fingerprint AS ga, lb.grad_fingerprint AS gb
    FROM la FULL JOIN lb ON la.step = lb.step AND la.rank = lb.rank AND la.name = lb.name
), live_common AS (SELECT live.* FROM live SEMI JOIN common USING (step, rank)),
evidence AS (
    SELECT * FROM init_cmp
    UNION ALL SELECT 'gradients', step, rank, name, ga, gb FROM live_common WHERE ga IS NOT NULL OR gb IS NOT NULL
    UNION ALL SELECT 'update', step, rank, name, fa, fb FROM live_common WHERE fa IS NOT NULL OR fb IS NOT NULL
), judged AS (  -- differs NULL: fingerprints of different algorithms, which say nothing about equality
    SELECT *, CASE WHEN value_a IS NULL OR value_b IS NULL THEN value_a IS DISTINCT FROM value_b
                   ELSE NOT fp_equal(value_a, value_b) END AS differs
    FROM evidence
), compared AS (SELECT * FROM judged WHERE differs IS NOT NULL
), incomparable AS (SELECT evidence, count(*) AS n_incomparable FROM judged WHERE differs IS NULL GROUP BY evidence
), first_steps AS (
    SELECT evidence, min(step) AS first_step FROM compared WHERE differs GROUP BY evidence
), at_first AS (
    SELECT c.evidence, any_value(c.rank) AS rank, list(c.name ORDER BY c.name)[1:20] AS names, count(*) AS n_names
    FROM compared c JOIN first_steps f ON c.evidence = f.evidence AND c.step = f.first_step
    WHERE c.differs GROUP BY c.evidence
), counts AS (
    SELECT evidence, count(*) AS n_compared, count(*) FILTER (WHERE differs) AS n_differ,
           count(DISTINCT step) AS n_steps FROM compared GROUP BY evidence
), kinds AS (
    SELECT * FROM (VALUES ('initial_weights', 1), ('gradients', 2), ('update', 3)) AS k(evidence, ord)
)
SELECT k.evidence, f.first_step, a.rank, coalesce(c.n_compared, 0) AS n_compared,
       coalesce(c.n_differ, 0) AS n_differ, coalesce(c.n_steps, 0) AS n_steps, a.names, coalesce(a.n_names, 0) AS n_names,
       coalesce(i.n_incomparable, 0) AS n_incomparable
FROM kinds k LEFT JOIN counts c USING (evidence) LEFT JOIN first_steps f USING (evidence)
LEFT JOIN at_first a USING (evidence) LEFT JOIN incomparable i USING (evidence)
ORDER BY k.ord
