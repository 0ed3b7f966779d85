-- name: prediction_diff
-- Sample by sample for steps from_step..to_step, how the predictions of runs A and B differ:
-- max_abs_diff (largest |logit_a - logit_b|), differs (beyond tol, or a different number of classes),
-- labels and predicted classes of both, and keys_a / keys_b (the sample key columns as JSON, e.g.
-- {"image1": "000554-05.jpg"}). Only the requested steps are read. Differing samples first.
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param from_step: the first step to compare
-- param to_step = -1: the last step to compare; -1: from_step only
-- param tol = 0.0: largest |logit_a - logit_b| still counted as equal
-- With by_key, samples are matched by their key columns within a step instead of by position (what
-- to do once the batch order differs: position i of A and B then holds unrelated samples); a sample
-- only one run fed at that step is listed with only_in = 'A' or 'B'. Runs without key columns are
-- matched by position either way.
-- param only_differing = true: leave out the samples that do not differ
-- param by_key = false: match samples by their key columns, not by batch position
WITH
p_ab AS (SELECT * FROM predictions WHERE run IN ($run_a, $run_b) AND step BETWEEN $from_step
         AND CASE WHEN $to_step < 0 THEN $from_step ELSE $to_step END),
k AS (SELECT *, json_merge_patch(to_json(p_ab), '{"step": null, "batch_idx": null, "sample_idx": null,
          "label": null, "prediction": null, "logits": null, "loss": null, "epoch": null, "rank": null,
          "run": null}') AS keys FROM p_ab),
a AS (SELECT * FROM k WHERE run = $run_a),
b AS (SELECT * FROM k WHERE run = $run_b),
m AS (
    SELECT a.*, b.run AS run_b_, a.run IS NULL AS only_b, b.run IS NULL AS only_a, b.batch_idx AS batch_idx_b,
        b.sample_idx AS sample_idx_b, b.label AS label_b, b.prediction AS pred_b, b.logits AS logits_b,
        b.loss AS loss_b, b.keys AS keys_b, b.step AS step_b, b.epoch AS epoch_b, b.rank AS rank_b
    FROM a FULL JOIN b ON a.step = b.step AND a.rank = b.rank AND CASE
        WHEN $by_key AND a.keys <> '{}' THEN a.keys = b.keys
        ELSE a.batch_idx IS NOT DISTINCT FROM b.batch_idx AND a.sample_idx = b.sample_idx END
),
j AS (
    SELECT coalesce(step, step_b) AS step, coalesce(epoch, epoch_b) AS epoch, coalesce(rank, rank_b) AS rank,
        batch_idx, sample_idx, batch_idx_b, sample_idx_b, CASE WHEN only_a THEN 'A' WHEN only_b THEN 'B' END AS only_in,
        label AS label_a, label_b, prediction AS pred_a, pred_b, lists_max_gap(logits, logits_b) AS max_abs_diff,
        NOT lists_within_tol(logits, logits_b, $tol) AS differs, keys AS keys_a, keys_b,
        loss AS loss_a, loss_b, logits AS logits_a, logits_b
    FROM m
    WHERE $by_key OR NOT (only_a OR only_b)
)
SELECT step, epoch, rank, batch_idx, sample_idx, differs, max_abs_diff, label_a, label_b, pred_a, pred_b,
    keys_a, keys_b, keys_a IS DISTINCT FROM keys_b AS keys_differ, loss_a, loss_b, logits_a, logits_b,
    batch_idx_b, sample_idx_b, only_in
FROM j
WHERE differs OR NOT $only_differing
ORDER BY differs DESC, step, rank, batch_idx NULLS LAST, sample_idx NULLS LAST, batch_idx_b, sample_idx_b
