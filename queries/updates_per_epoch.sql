-- name: updates_per_epoch
-- Enough optimizer updates per epoch for the data size? Per epoch: the steps it spans (from every
-- table with steps: scalars, batches, pred_digests), the batch size (median samples per logged
-- batch), the samples seen, and a suggested batch size (samples / 200, to a power of two). The
-- usual sweet spot is 100-500 batches per epoch: fewer means too few gradient updates (a batch
-- size too large for the dataset). An epoch's batches count as the distance to the next epoch's
-- first step; the last epoch counts its own first to last step.
-- status: too few (below $min_batches) | many (above $max_batches) | ok.
-- param run: the run to check
-- param min_batches = 100: fewest batches per epoch before warning
-- param max_batches = 500: most batches per epoch in the sweet spot
WITH
steps AS (
    SELECT epoch, step FROM scalars WHERE run = $run
    UNION SELECT epoch, step FROM batches WHERE run = $run
    UNION SELECT epoch, step FROM pred_digests WHERE run = $run
),
sizes AS (
    SELECT n_samples AS n FROM batches WHERE run = $run
    UNION ALL SELECT n_samples FROM pred_digests WHERE run = $run AND NOT EXISTS (SELECT 1 FROM batches WHERE run = $run)
),
batch_size AS (SELECT median(n) AS batch_size FROM sizes),
epochs AS (
    SELECT epoch, min(step) AS first_step, max(step) AS last_step, count(DISTINCT step) AS logged_steps
    FROM steps GROUP BY epoch
),
spans AS (
    SELECT *, coalesce(lead(first_step) OVER (ORDER BY epoch) - first_step, last_step - first_step + 1) AS batches
    FROM epochs
)
SELECT s.epoch, s.first_step, s.last_step, s.batches AS batches_per_epoch, s.logged_steps,
    b.batch_size, s.batches * b.batch_size AS samples_per_epoch,
    CASE WHEN b.batch_size IS NULL THEN NULL
         ELSE greatest(1, pow(2, round(log2(greatest(s.batches * b.batch_size / 200.0, 1)))))::BIGINT
    END AS suggested_batch_size,
    CASE WHEN s.batches < $min_batches THEN 'too few'
         WHEN s.batches > $max_batches THEN 'many'
         ELSE 'ok' END AS status
FROM spans s, batch_size b
ORDER BY s.epoch
