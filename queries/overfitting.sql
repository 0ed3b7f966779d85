-- name: overfitting
-- Learning curves and the memorising verdict. Per step: the training accuracy (the scalar $acc_name,
-- else the share of logged predictions equal to their label), the holdout accuracy (the scalar
-- $holdout_name, else the share of correct rows in the holdout table) and the training loss (the
-- scalar $loss_name, else the mean per-sample loss of the logged predictions). Accuracies logged in
-- percent (any value above 1) are read as fractions. Repeated on every row: train_start /
-- train_end (mean of the first / last fifth of the steps; with under 5 steps the first / last), holdout_end, chance (unless given:
-- 1 / number of classes, from the logits' width), majority (the most common training label's share:
-- what always guessing it scores on the training data), gap = train_end - holdout_end. status: overfitting (train rose by at least $min_rise and
-- holdout_end is within $margin of chance) | gap (train_end exceeds holdout_end by more than
-- $max_gap) | ok | no holdout (no holdout accuracy logged) | no train (no training accuracy).
-- param run: the run to check
-- param acc_name = 'acc': the scalar holding the training accuracy
-- param holdout_name = 'holdout/acc': the scalar holding the holdout accuracy
-- param loss_name = 'loss': the scalar holding the training loss
-- param chance = -1.0: accuracy of guessing; below 0: 1 / number of classes
-- param margin = 0.05: a holdout accuracy within this of chance counts as near chance
-- param min_rise = 0.1: how much the training accuracy must rise to count as learning
-- param max_gap = 0.25: a train - holdout gap above this is reported as a gap
WITH
named AS (
    SELECT step, name, avg(value) AS value, max(max(value)) OVER (PARTITION BY name) AS top
    FROM scalars WHERE run = $run AND name IN ($acc_name, $holdout_name, $loss_name) AND isfinite(value)
    GROUP BY step, name
),
curve AS (
    SELECT step, name, CASE WHEN name <> $loss_name AND top > 1 THEN value / 100 ELSE value END AS value
    FROM named
),
pred AS (
    SELECT step, avg((prediction = label)::DOUBLE) AS acc, avg(loss) FILTER (WHERE isfinite(loss)) AS loss
    FROM predictions WHERE run = $run GROUP BY step
),
train AS (
    SELECT step, value AS acc FROM curve WHERE name = $acc_name
    UNION ALL SELECT step, acc FROM pred
    WHERE acc IS NOT NULL AND NOT EXISTS (SELECT 1 FROM curve WHERE name = $acc_name)
),
loss_ AS (
    SELECT step, value AS loss FROM curve WHERE name = $loss_name
    UNION ALL SELECT step, loss FROM pred
    WHERE loss IS NOT NULL AND NOT EXISTS (SELECT 1 FROM curve WHERE name = $loss_name)
),
held_table AS (
    SELECT step, avg(correct::DOUBLE) AS acc FROM holdout
    WHERE run = $run AND NOT EXISTS (SELECT 1 FROM curve WHERE name = $holdout_name) GROUP BY step
),
held AS (SELECT step, value AS acc FROM curve WHERE name = $holdout_name UNION ALL SELECT * FROM held_table),
width AS (
    SELECT coalesce((SELECT max(len(logits)) FROM holdout WHERE run = $run),
                    (SELECT max(len(logits)) FROM predictions WHERE run = $run AND step = (
                        SELECT min(step) FROM pred_digests WHERE run = $run))) AS classes,
        (SELECT max(n) / sum(n) FROM (SELECT count(*) AS n FROM predictions
                                       WHERE run = $run AND label IS NOT NULL GROUP BY label)) AS majority
),
chance_ AS (
    SELECT CASE WHEN $chance >= 0 THEN $chance WHEN classes > 1 THEN 1.0 / classes ELSE 0.5 END AS chance,
        majority
    FROM width
),
steps AS (
    SELECT step, t.acc AS train_acc, h.acc AS holdout_acc, l.loss
    FROM (SELECT step FROM train UNION SELECT step FROM held UNION SELECT step FROM loss_) s
    LEFT JOIN train t USING (step) LEFT JOIN held h USING (step) LEFT JOIN loss_ l USING (step)
),
fifth_of AS (
    SELECT avg(acc) FILTER (WHERE f = 1) AS train_start, avg(acc) FILTER (WHERE f = top) AS train_end
    FROM (SELECT acc, f, max(f) OVER () AS top FROM (SELECT acc, ntile(5) OVER (ORDER BY step) AS f FROM train))
),
verdict AS (
    SELECT t.train_start, t.train_end,
        (SELECT avg(acc) FROM (SELECT acc, f, max(f) OVER () AS top
                               FROM (SELECT acc, ntile(5) OVER (ORDER BY step) AS f FROM held)) WHERE f = top) AS holdout_end,
        (SELECT count(*) FROM held) AS n_holdout, (SELECT count(*) FROM train) AS n_train
    FROM fifth_of t
)
SELECT s.step, s.train_acc, s.holdout_acc, s.loss, c.chance, c.majority, v.train_start, v.train_end, v.holdout_end,
    v.train_end - v.holdout_end AS gap,
    CASE
        WHEN v.n_train = 0 THEN 'no train'
        WHEN v.n_holdout = 0 THEN 'no holdout'
        WHEN v.train_end - v.train_start >= $min_rise AND abs(v.holdout_end - c.chance) <= $margin THEN 'overfitting'
        WHEN v.train_end - v.holdout_end > $max_gap THEN 'gap'
        ELSE 'ok'
    END AS status
FROM steps s, verdict v, chance_ c
ORDER BY s.step
