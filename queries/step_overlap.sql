-- name: step_overlap
-- Which steps runs A and B logged (in any of scalars, batches, pred_digests, params; the initial and
-- resume-point captures of params are not steps), and how many
-- both have: one row per run (A, B, common) with first and last step and the number of steps.
-- param run_a: the reference run
-- param run_b: the run compared with it
WITH
steps AS (
    SELECT run, step FROM scalars WHERE run IN ($run_a, $run_b)
    UNION SELECT run, step FROM batches WHERE run IN ($run_a, $run_b)
    UNION SELECT run, step FROM pred_digests WHERE run IN ($run_a, $run_b)
    UNION SELECT run, step FROM params WHERE run IN ($run_a, $run_b)
        AND NOT starts_with(coalesce(kind, ''), 'initial:') AND NOT starts_with(coalesce(kind, ''), 'resume:')
),
a AS (SELECT DISTINCT step FROM steps WHERE run = $run_a),
b AS (SELECT DISTINCT step FROM steps WHERE run = $run_b),
common AS (SELECT step FROM a INTERSECT SELECT step FROM b)
SELECT 'A' AS side, $run_a AS run, min(step) AS first_step, max(step) AS last_step, count(*) AS n_steps FROM a
UNION ALL
SELECT 'B', $run_b, min(step), max(step), count(*) FROM b
UNION ALL
SELECT 'common', NULL, min(step), max(step), count(*) FROM common
