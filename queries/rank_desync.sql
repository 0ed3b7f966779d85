-- name: rank_desync
-- The first captured step where the ranks of a data-parallel (DDP) run stop holding identical
-- weights, and which parameters differ there. DDP keeps every replica equal by averaging gradients,
-- so any difference is a bug (a rank-dependent update, a parameter outside DDP, a skipped all-reduce)
-- that losses and metrics do not show. Compares the exact fingerprints run.watch records per tensor
-- and rank (params table); only steps captured by at least two ranks count. One row per differing
-- tensor at the first desync step of each run, none when the ranks agree everywhere. The reference
-- fingerprint is the one most ranks hold (ties: the lowest rank's); odd_ranks lists the others.
-- last_agreed_step is the last earlier captured step where the ranks agreed on that tensor: with
-- watch(every=N) the desync happened after it and at or before step. A tensor whose ranks'
-- fingerprints come from different algorithms (ranks on different kinds of device: x3 on a CPU, v1 on
-- an accelerator) says nothing about equality there and is left out of that step.
-- param run = None: the run to check (None: every run in the lake)
-- param kind = 'param': which tensors must agree: param, buffer, or an optimizer state such as optim:exp_avg
WITH fp AS (
    SELECT run, step, name, "group", rank, fingerprint
    FROM params
    WHERE kind = $kind AND fingerprint IS NOT NULL AND ($run IS NULL OR run = $run)
),
per_tensor AS (
    SELECT run, step, name, any_value("group") AS "group",
           count(DISTINCT rank) AS n_ranks, count(DISTINCT fingerprint) AS n_fingerprints,
           count(DISTINCT fp_algorithm(fingerprint)) AS n_algorithms
    FROM fp
    GROUP BY run, step, name
),
first_desync AS (
    SELECT run, min(step) AS step
    FROM per_tensor
    WHERE n_ranks >= 2 AND n_fingerprints > 1 AND n_algorithms = 1
    GROUP BY run
),
votes AS (
    SELECT fp.run, fp.step, fp.name, fp.fingerprint, count(*) AS n, min(fp.rank) AS lowest_rank
    FROM fp JOIN first_desync USING (run, step)
    GROUP BY fp.run, fp.step, fp.name, fp.fingerprint
),
reference AS (
    SELECT run, step, name, first(fingerprint ORDER BY n DESC, lowest_rank) AS reference
    FROM votes
    GROUP BY run, step, name
),
agreed AS (
    SELECT p.run, p.name, max(p.step) AS last_agreed_step
    FROM per_tensor p JOIN first_desync d ON p.run = d.run AND p.step < d.step
    WHERE p.n_ranks >= 2 AND p.n_fingerprints = 1
    GROUP BY p.run, p.name
)
SELECT
    fp.run,
    fp.step,
    fp.name,
    any_value(fp."group") AS "group",
    count(*) AS n_ranks,
    count(DISTINCT fp.fingerprint) AS n_fingerprints,
    list(fp.rank ORDER BY fp.rank) FILTER (WHERE fp.fingerprint <> r.reference) AS odd_ranks,
    list(fp.rank ORDER BY fp.rank) AS ranks,
    list(fp.fingerprint ORDER BY fp.rank) AS fingerprints,
    any_value(a.last_agreed_step) AS last_agreed_step
FROM fp
JOIN reference r USING (run, step, name)
LEFT JOIN agreed a ON a.run = fp.run AND a.name = fp.name
GROUP BY fp.run, fp.step, fp.name
HAVING count(DISTINCT fp.fingerprint) > 1 AND count(DISTINCT fp_algorithm(fp.fingerprint)) = 1
ORDER BY fp.run, fp.name
