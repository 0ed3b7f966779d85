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
-- param only_differing = true: leave out the samples that do not differ
WITH
p_ab AS (SELECT * FROM predictions WHERE run IN ($run_a, $run_b) AND step BETWEEN $from_step
         AND CASE WHEN $to_step < 0 THEN $from_step ELSE $to_step END),
a AS (SELECT * FROM p_ab WHERE run = $run_a),
b AS (SELECT * FROM p_ab WHERE run = $run_b),
j AS (
    SELECT a.step, a.epoch, a.rank, a.batch_idx, a.sample_idx,
        a.label AS label_a, b.label AS label_b, a.prediction AS pred_a, b.prediction AS pred_b,
        list_max(list_transform(range(1, least(len(a.logits), len(b.logits)) + 1),
            lambda i: CASE WHEN a.logits[i] = b.logits[i] THEN 0 ELSE abs(a.logits[i] - b.logits[i]) END))
            AS max_abs_diff,
        NOT coalesce(len(a.logits) = len(b.logits) AND list_bool_and(list_transform(range(1, len(a.logits) + 1),
            lambda i: a.logits[i] = b.logits[i] OR abs(a.logits[i] - b.logits[i]) <= $tol)), false) AS differs,
        json_merge_patch(to_json(a), '{"step": null, "batch_idx": null, "sample_idx": null, "label": null,
            "prediction": null, "logits": null, "loss": null, "epoch": null, "rank": null, "run": null}') AS keys_a,
        json_merge_patch(to_json(b), '{"step": null, "batch_idx": null, "sample_idx": null, "label": null,
            "prediction": null, "logits": null, "loss": null, "epoch": null, "rank": null, "run": null}') AS keys_b,
        a.loss AS loss_a, b.loss AS loss_b,
        a.logits AS logits_a, b.logits AS logits_b
    FROM a JOIN b ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
     AND a.sample_idx = b.sample_idx
)
SELECT step, epoch, rank, batch_idx, sample_idx, differs, max_abs_diff, label_a, label_b, pred_a, pred_b,
    keys_a, keys_b, keys_a IS DISTINCT FROM keys_b AS keys_differ, loss_a, loss_b, logits_a, logits_b
FROM j
WHERE differs OR NOT $only_differing
ORDER BY differs DESC, step, rank, batch_idx, sample_idx
