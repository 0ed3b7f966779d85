-- name: param_diff
-- Parameter by parameter at one captured step, how runs A and B differ: weights (fingerprint equal?
-- norms and their gap), gradients and the update of that step; differing tensors first, parameters
-- before buffers and optimizer state, the largest relative gap first. With step = -1, the first step
-- where any weight fingerprint differs (or the last common step when none does); a given step reads
-- only that step's rows (the filter prunes the params views), so it costs one capture. The resume-point
-- captures (kinds 'resume:*') are left out.
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param step = -1: the captured step to compare; -1: the first step where the weights differ
WITH
p_ab AS (SELECT * FROM params WHERE run IN ($run_a, $run_b) AND ($step < 0 OR step = $step)),  -- one step: pruned
pa AS (SELECT * FROM p_ab WHERE run = $run_a),
pb AS (SELECT * FROM p_ab WHERE run = $run_b),
j AS (
    SELECT a.step, a.epoch, a.rank, a.name, coalesce(a.kind, 'param') AS kind, a."group" AS grp, a.shape, a.numel,
        fp_equal(a.fingerprint, b.fingerprint) AS equal,  -- NULL: not comparable (another algorithm)
        fp_equal(a.grad_fingerprint, b.grad_fingerprint) AS grad_equal,
        a.norm AS norm_a, b.norm AS norm_b, abs(a.norm - b.norm) AS norm_gap,
        abs(a.norm - b.norm) / nullif(abs(a.norm), 0) AS rel_gap,
        a.grad_norm AS grad_norm_a, b.grad_norm AS grad_norm_b,
        a.update_norm AS update_norm_a, b.update_norm AS update_norm_b
    FROM pa a JOIN pb b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
     AND coalesce(a.kind, 'param') = coalesce(b.kind, 'param')
    WHERE param_family(a.kind) IS NOT NULL
),
chosen AS (
    SELECT CASE WHEN $step >= 0 THEN $step
                ELSE coalesce(min(step) FILTER (WHERE kind = 'param' AND NOT equal), max(step)) END AS step
    FROM j
)
SELECT j.step, j.epoch, j.rank, j.name, j.kind, j.grp AS "group", j.shape, j.numel, j.equal,
    j.norm_a, j.norm_b, j.norm_gap, j.rel_gap, j.grad_equal, j.grad_norm_a, j.grad_norm_b,
    j.update_norm_a, j.update_norm_b
FROM j JOIN chosen c ON j.step = c.step
ORDER BY j.equal NULLS FIRST, list_position(['weights', 'buffers', 'optimizer', 'initial_weights'], param_family(j.kind)),
    j.rel_gap DESC NULLS LAST, j.kind, j.name
