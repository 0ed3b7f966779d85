-- name: determinism_outputs
-- Where two runs' forward outputs and loss first differ: outputs compares the exact digest of each logged
-- prediction batch (pred_digests, written by log_predictions), loss the scalar named $loss_name (differs
-- when |a - b| > $loss_tol, or when only one is NaN). Lined up by step, rank and batch_idx; one row each.
-- value_a / value_b: the loss values (NULL for outputs).
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param loss_name = 'loss': the scalar holding the training loss
-- param loss_tol = 0.0: largest |loss_a - loss_b| still counted as equal (0 compares exactly)
WITH da AS (
    SELECT * FROM pred_digests WHERE run = $run_a
    QUALIFY row_number() OVER (PARTITION BY step, rank, coalesce(batch_idx, -1) ORDER BY logits_digest) = 1
), db AS (
    SELECT * FROM pred_digests WHERE run = $run_b
    QUALIFY row_number() OVER (PARTITION BY step, rank, coalesce(batch_idx, -1) ORDER BY logits_digest) = 1
), outputs AS (
    SELECT 'outputs' AS evidence, da.step, da.rank, da.logits_digest <> db.logits_digest AS differs,
           NULL::DOUBLE AS value_a, NULL::DOUBLE AS value_b
    FROM da JOIN db ON da.step = db.step AND da.rank = db.rank
        AND coalesce(da.batch_idx, -1) = coalesce(db.batch_idx, -1)
), sa AS (
    SELECT * FROM scalars WHERE run = $run_a AND name = $loss_name
    QUALIFY row_number() OVER (PARTITION BY step, rank ORDER BY time DESC) = 1
), sb AS (
    SELECT * FROM scalars WHERE run = $run_b AND name = $loss_name
    QUALIFY row_number() OVER (PARTITION BY step, rank ORDER BY time DESC) = 1
), loss AS (
    SELECT 'loss' AS evidence, sa.step, sa.rank,
           CASE WHEN isnan(sa.value) OR isnan(sb.value) THEN isnan(sa.value) <> isnan(sb.value)
                ELSE abs(sa.value - sb.value) > $loss_tol END AS differs,
           sa.value AS value_a, sb.value AS value_b
    FROM sa JOIN sb ON sa.step = sb.step AND sa.rank = sb.rank
), compared AS (SELECT * FROM outputs UNION ALL SELECT * FROM loss),
firsts AS (
    SELECT * FROM compared WHERE differs
    QUALIFY row_number() OVER (PARTITION BY evidence ORDER BY step, rank) = 1
), counts AS (
    SELECT evidence, count(*) AS n_compared, count(*) FILTER (WHERE differs) AS n_differ FROM compared
    GROUP BY evidence
), kinds AS (SELECT * FROM (VALUES ('outputs', 1), ('loss', 2)) AS k(evidence, ord))
SELECT k.evidence, f.step AS first_step, f.rank, coalesce(c.n_compared, 0) AS n_compared,
       coalesce(c.n_differ, 0) AS n_differ, f.value_a, f.value_b
FROM kinds k LEFT JOIN counts c USING (evidence) LEFT JOIN firsts f USING (evidence)
ORDER BY k.ord
