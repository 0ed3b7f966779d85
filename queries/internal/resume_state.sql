-- name: resume_state
-- What a resumed process restored, tensor by tensor: the state it starts from (params rows of kind
-- 'resume:*', which run.watch stamps with the step the run resumes after) against the state at that
-- step before the interruption: the run's own captures of that step, else the reference run's. One
-- row per family (weights, buffers, optimizer) with n_compared, n_differing (a tensor the resumed
-- process lacks counts as differing: an optimizer started without its state has no momentum),
-- the differing names and compared_with ('own' or 'reference'). No rows: no resume capture. A
-- fingerprint of another algorithm (a run resumed on another kind of device: x3 on a CPU, v1 on an
-- accelerator) says nothing about equality and is left out.
-- param run: the resumed run
-- param other: the reference run, used when the resumed run has no capture of that step itself
-- param step: the step the run resumes after
WITH
p AS (
    SELECT run, rank, name, coalesce(kind, 'param') AS kind, fingerprint FROM params
    WHERE run IN ($run, $other) AND step = $step AND fingerprint IS NOT NULL
),
res AS (SELECT rank, name, substr(kind, 8) AS kind, fingerprint FROM p WHERE run = $run AND starts_with(kind, 'resume:')),
plain AS (SELECT * FROM p WHERE NOT starts_with(kind, 'resume:') AND NOT starts_with(kind, 'initial:')),
own AS (SELECT * FROM plain WHERE run = $run),
ref AS (
    SELECT *, 'own' AS compared_with FROM own
    UNION ALL
    SELECT *, 'reference' FROM plain WHERE run = $other AND NOT EXISTS (SELECT 1 FROM own)
),
j AS (
    SELECT f.name, f.kind, f.compared_with,
        CASE WHEN f.kind = 'param' THEN 'weights' WHEN f.kind = 'buffer' THEN 'buffers' ELSE 'optimizer' END
            AS family,
        r.name IS NULL OR NOT fp_equal(r.fingerprint, f.fingerprint) AS differs, r.name IS NULL AS missing
    FROM ref f LEFT JOIN res r ON r.rank = f.rank AND r.name = f.name AND r.kind = f.kind
    WHERE EXISTS (SELECT 1 FROM res)
     AND (r.name IS NULL OR fp_comparable(r.fingerprint, f.fingerprint))
)
SELECT family, any_value(compared_with) AS compared_with, count(*) AS n_compared,
    count(*) FILTER (WHERE differs) AS n_differing, count(*) FILTER (WHERE missing) AS n_missing,
    list(CASE WHEN family = 'optimizer' THEN name || ' (' || kind || ')' ELSE name END ORDER BY name, kind)
        FILTER (WHERE differs) AS names
FROM j
GROUP BY family
ORDER BY CASE family WHEN 'weights' THEN 1 WHEN 'buffers' THEN 2 ELSE 3 END
