-- name: plot_holdout_heatmap
-- Which holdout examples flip: per sample and step of one run, whether the prediction was right.
-- The samples that flip most (right -> wrong -> right …) come first, at most max_samples of them;
-- steps are bucketed into at most max_steps columns (each cell shows the last capture in its bucket).
-- param run: the run
-- param max_samples = 60: most samples (rows) to show
-- param max_steps = 120: most step buckets (columns) to show
WITH h AS (
    SELECT step, sample_idx, bool_and(correct) AS correct, any_value(label) AS label,
           any_value(prediction) AS prediction
    FROM holdout
    WHERE run = $run
    GROUP BY step, sample_idx
),
flips AS (
    SELECT sample_idx, count(*) FILTER (WHERE correct <> prev) AS flips,
           avg(correct::DOUBLE) AS accuracy
    FROM (SELECT sample_idx, correct, lag(correct) OVER (PARTITION BY sample_idx ORDER BY step) AS prev FROM h)
    GROUP BY sample_idx
),
chosen AS (
    SELECT sample_idx, flips, accuracy FROM flips ORDER BY flips DESC, accuracy, sample_idx LIMIT $max_samples
),
bounds AS (
    SELECT min(step) AS lo, max(step) AS hi,
           greatest(1, ceil((max(step) - min(step) + 1) / $max_steps))::BIGINT AS width
    FROM h
),
cells AS (
    SELECT h.sample_idx, (h.step - b.lo) // b.width AS bucket, min(h.step) AS step, max(h.step) AS last_step,
           arg_max(h.correct, h.step) AS correct, arg_max(h.prediction, h.step) AS prediction,
           any_value(h.label) AS label, any_value(c.flips) AS flips, any_value(c.accuracy) AS accuracy
    FROM h JOIN chosen AS c USING (sample_idx) CROSS JOIN bounds AS b
    GROUP BY h.sample_idx, bucket
)
SELECT sample_idx, step,
       coalesce(lead(step) OVER (PARTITION BY sample_idx ORDER BY step), last_step + 1) AS step_end,
       correct, prediction, label, flips, accuracy
FROM cells
ORDER BY flips DESC, accuracy, sample_idx, step
