-- name: overfitting
-- Training accuracy rising while accuracy on held-out data stays near chance (the model memorises):
-- per step, the training accuracy (the scalar $acc_name) and the holdout accuracy (the scalar
-- $holdout_name, or the share of correct rows in the holdout table at that step), with the run's
-- verdict repeated on every row: train_start / train_end (mean of the first / last fifth of the
-- steps), holdout_end, chance (1 / number of classes, from the logits' width, unless given), gap =
-- train_end - holdout_end. status: overfitting (train rose by at least $min_rise and holdout_end is
-- within $margin of chance) | gap (train_end exceeds holdout_end by more than $max_gap) | ok |
-- no holdout (no holdout accuracy logged).
-- param run: the run to check
-- param acc_name = 'acc': the scalar holding the training accuracy
-- param holdout_name = 'holdout/acc': the scalar holding the holdout accuracy
-- param chance = -1.0: accuracy of guessing; below 0: 1 / number of classes
-- param margin = 0.05: a holdout accuracy within this of chance counts as near chance
-- param min_rise = 0.1: how much the training accuracy must rise to count as learning
-- param max_gap = 0.25: a train - holdout gap above this is reported as a gap
WITH
train AS (SELECT step, avg(value) AS acc FROM scalars WHERE run = $run AND name = $acc_name GROUP BY step),
held_scalar AS (SELECT step, avg(value) AS acc FROM scalars WHERE run = $run AND name = $holdout_name GROUP BY step),
held_table AS (
    SELECT step, avg(correct::DOUBLE) AS acc FROM holdout
    WHERE run = $run AND NOT EXISTS (SELECT 1 FROM held_scalar) GROUP BY step
),
held AS (SELECT * FROM held_scalar UNION ALL SELECT * FROM held_table),
width AS (
    SELECT coalesce((SELECT max(len(logits)) FROM holdout WHERE run = $run),
                    (SELECT max(len(logits)) FROM predictions WHERE run = $run AND step = (
                        SELECT min(step) FROM pred_digests WHERE run = $run))) AS classes
),
chance_ AS (
    SELECT CASE WHEN $chance >= 0 THEN $chance
                WHEN classes > 1 THEN 1.0 / classes
                ELSE 0.5 END AS chance
    FROM width
),
steps AS (
    SELECT coalesce(t.step, h.step) AS step, t.acc AS train_acc, h.acc AS holdout_acc
    FROM train t FULL OUTER JOIN held h ON t.step = h.step
),
fifths AS (
    SELECT *, ntile(5) OVER (ORDER BY step) AS fifth FROM steps
),
verdict AS (
    SELECT
        avg(train_acc) FILTER (WHERE fifth = 1) AS train_start,
        avg(train_acc) FILTER (WHERE fifth = 5) AS train_end,
        (SELECT avg(holdout_acc) FROM (SELECT holdout_acc, ntile(5) OVER (ORDER BY step) AS f
                                       FROM steps WHERE holdout_acc IS NOT NULL) WHERE f = 5) AS holdout_end,
        count(holdout_acc) AS n_holdout
    FROM fifths
)
SELECT s.step, s.train_acc, s.holdout_acc, c.chance, v.train_start, v.train_end, v.holdout_end,
    v.train_end - v.holdout_end AS gap,
    CASE
        WHEN v.n_holdout = 0 THEN 'no holdout'
        WHEN v.train_end - v.train_start >= $min_rise AND abs(v.holdout_end - c.chance) <= $margin THEN 'overfitting'
        WHEN v.train_end - v.holdout_end > $max_gap THEN 'gap'
        ELSE 'ok'
    END AS status
FROM steps s, verdict v, chance_ c
ORDER BY s.step
