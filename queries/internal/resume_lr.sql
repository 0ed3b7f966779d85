-- name: resume_lr
-- The learning rates of runs A and B from a step on (scalars named lr or lr/<group>, as run.watch
-- and most loops log them), for telling whether a resumed run restored its LR scheduler:
-- n_compared (step and name pairs both logged), first_step where a rate differs and its detail.
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param from_step: the first step to compare (the resume step)
WITH
s AS (
    SELECT run, step, rank, name, value FROM scalars
    WHERE run IN ($run_a, $run_b) AND step >= $from_step AND (name = 'lr' OR starts_with(name, 'lr/'))
),
j AS (
    SELECT a.step, a.name, a.value AS va, b.value AS vb, a.value IS DISTINCT FROM b.value AS differs
    FROM (SELECT * FROM s WHERE run = $run_a) a
    JOIN (SELECT * FROM s WHERE run = $run_b) b ON a.step = b.step AND a.rank = b.rank AND a.name = b.name
)
SELECT count(*) AS n_compared, min(step) FILTER (WHERE differs) AS first_step,
    arg_min(format('{}: A {:.6g} vs B {:.6g}', name, va, vb), step) FILTER (WHERE differs) AS detail
FROM j
