-- name: group_drift
-- Per captured step and parameter group, how far runs A and B have drifted apart, from the
-- per-parameter summaries (params table, kind 'param'): n_equal of n_params parameters bit-identical
-- (fingerprints), equal_numel_frac the share of the group's elements in identical tensors,
-- norm_a / norm_b the group's weight norms (sqrt of the sum of squared parameter norms), norm_gap =
-- sqrt(sum over parameters of (norm_a - norm_b)^2) (a lower bound on the distance between the weights)
-- and rel_gap = norm_gap / norm_a; with the loss and accuracy of both runs at that step and their
-- difference. Per group: first_drift_step (the first step with any parameter differing), max_rel_gap,
-- and drift_rank (1 = drifted first; ties broken by the larger max_rel_gap; null: never drifted).
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param loss_name = 'loss': the scalar holding the training loss
-- param acc_name = 'acc': the scalar holding the training accuracy
WITH
-- Captures whose weights digests (names and fingerprints of every parameter, param_digests) agree in
-- both runs, with as many parameters per group on each side: every parameter there is bit-identical, so
-- they are summed per run instead of paired tensor by tensor (norm_gap 0). The other captures (and
-- lakes without digests) pair the tensors by name.
same_cap AS (
    SELECT DISTINCT step, rank FROM paired_param_digests($run_a, $run_b, -9223372036854775807)
    WHERE capture = 'step' AND fp_equal(wa, wb)
),
sides AS (
    SELECT p.step, p.rank, p.grp,
        min(p.epoch) FILTER (WHERE p.run = $run_a) AS epoch,
        count(*) FILTER (WHERE p.run = $run_a) AS n_a,
        count(*) FILTER (WHERE p.run = $run_b) AS n_b,
        sum(p.numel) FILTER (WHERE p.run = $run_a) AS numel,
        sum(p.norm * p.norm) FILTER (WHERE p.run = $run_a) AS sq_a,
        sum(p.norm * p.norm) FILTER (WHERE p.run = $run_b) AS sq_b,
        count(p.norm) FILTER (WHERE p.run = $run_a) AS n_norm
    FROM (SELECT *, coalesce("group", '(no group)') AS grp FROM params
          WHERE run IN ($run_a, $run_b) AND coalesce(kind, 'param') = 'param') p
    SEMI JOIN same_cap c ON p.step = c.step AND p.rank = c.rank
    GROUP BY p.step, p.rank, p.grp
),
fast AS MATERIALIZED (SELECT step, rank FROM sides GROUP BY step, rank HAVING bool_and(n_a = n_b)),
pa AS (
    SELECT step, epoch, rank, coalesce("group", '(no group)') AS grp, name, numel, norm, fingerprint
    FROM params p WHERE run = $run_a AND coalesce(kind, 'param') = 'param'
     AND NOT EXISTS (SELECT 1 FROM fast f WHERE f.step = p.step AND f.rank = p.rank)),
pb AS (
    SELECT step, epoch, rank, coalesce("group", '(no group)') AS grp, name, numel, norm, fingerprint
    FROM params p WHERE run = $run_b AND coalesce(kind, 'param') = 'param'
     AND NOT EXISTS (SELECT 1 FROM fast f WHERE f.step = p.step AND f.rank = p.rank)),
j AS (
    SELECT a.step, a.epoch, a.rank, a.grp, a.name, a.numel,
        a.norm AS norm_a, b.norm AS norm_b,
        fp_equal(a.fingerprint, b.fingerprint) AS equal  -- NULL: fingerprints of different algorithms
    FROM pa a JOIN pb b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
),
parts AS (  -- per step, rank and group, from the pairs or from the identical captures' sums
    SELECT step, rank, grp, min(epoch) AS epoch, count(*) AS n_params,
        count(*) FILTER (WHERE equal) AS n_equal,
        count(*) FILTER (WHERE NOT equal) AS n_differing,
        sum(numel) FILTER (WHERE equal) AS numel_equal, sum(numel) AS numel,
        sum(norm_a * norm_a) AS sq_a, sum(norm_b * norm_b) AS sq_b,
        sum((norm_a - norm_b) * (norm_a - norm_b)) AS sq_gap
    FROM j GROUP BY step, rank, grp
    UNION ALL
    SELECT s.step, s.rank, s.grp, s.epoch, s.n_a, s.n_a, 0, s.numel, s.numel, s.sq_a, s.sq_b,
        CASE WHEN s.n_norm > 0 THEN 0.0 END
    FROM sides s SEMI JOIN fast f ON s.step = f.step AND s.rank = f.rank
),
g AS (
    SELECT step, min(epoch) AS epoch, grp,
        sum(n_params)::BIGINT AS n_params,
        sum(n_equal)::BIGINT AS n_equal,
        sum(n_differing)::BIGINT AS n_differing,
        coalesce(sum(numel_equal), 0) / nullif(sum(numel), 0) AS equal_numel_frac,
        sqrt(sum(sq_a)) AS norm_a,
        sqrt(sum(sq_b)) AS norm_b,
        sqrt(sum(sq_gap)) AS norm_gap
    FROM parts GROUP BY step, grp
),
s_ab AS (SELECT run, step, rank, name, value FROM scalars WHERE run IN ($run_a, $run_b) AND name IN ($loss_name, $acc_name)),
sa AS (SELECT * FROM s_ab WHERE run = $run_a),
sb AS (SELECT * FROM s_ab WHERE run = $run_b),
s AS (
    SELECT coalesce(a.step, b.step) AS step,
        max(a.value) FILTER (WHERE a.name = $loss_name) AS loss_a,
        max(b.value) FILTER (WHERE b.name = $loss_name) AS loss_b,
        max(a.value) FILTER (WHERE a.name = $acc_name) AS acc_a,
        max(b.value) FILTER (WHERE b.name = $acc_name) AS acc_b
    FROM sa a FULL OUTER JOIN sb b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
    GROUP BY 1
),
drift AS (
    SELECT g.*,
        g.norm_gap / nullif(g.norm_a, 0) AS rel_gap,
        min(g.step) FILTER (WHERE g.n_differing > 0) OVER (PARTITION BY g.grp) AS first_drift_step,
        max(g.norm_gap / nullif(g.norm_a, 0)) OVER (PARTITION BY g.grp) AS max_rel_gap
    FROM g
)
SELECT
    d.step, d.epoch, d.grp AS "group", d.n_params, d.n_equal, d.equal_numel_frac,
    d.norm_a, d.norm_b, d.norm_gap, d.rel_gap,
    s.loss_a, s.loss_b, s.loss_b - s.loss_a AS loss_diff,
    s.acc_a, s.acc_b, s.acc_b - s.acc_a AS acc_diff,
    d.first_drift_step, d.max_rel_gap,
    CASE WHEN d.first_drift_step IS NOT NULL
         THEN dense_rank() OVER (ORDER BY d.first_drift_step NULLS LAST, d.max_rel_gap DESC, d.grp) END AS drift_rank
FROM drift d LEFT JOIN s ON s.step = d.step
ORDER BY d.step, drift_rank NULLS LAST, d.grp
