-- name: updates_per_epoch
-- Enough optimizer updates per epoch for the data size? Per epoch: the steps it spans (from every
-- table with steps: scalars, batches, pred_digests), the batch size (median samples per logged
-- batch), the samples seen, and a suggested batch size (the power of two nearest samples / 200).
-- 100-500 batches per epoch is the usual sweet spot. An epoch's batches count as the distance to
-- the next epoch's first step; the last epoch (which may be cut short) counts its own first to last
-- step and is complete only when the run finished (complete = false otherwise).
-- status: too few (below $warn_batches batches although the data would fill $min_batches batches of
-- $min_batch_size samples, and fewer than $min_total updates in the whole run) | few (below
-- $min_batches, but the dataset is small, the run long, or the sample count unknown) | many (above
-- $max_batches) | ok.
-- param run: the run to check
-- param min_batches = 100: fewest batches per epoch in the sweet spot
-- param max_batches = 500: most batches per epoch in the sweet spot
-- param warn_batches = 30: fewer batches per epoch than this is too few, when the data allows more
-- param min_batch_size = 32: the smallest batch worth suggesting
-- param min_total = 2000: a run with at least this many updates in all is not short of updates
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
finished AS (SELECT coalesce(any_value(status) = 'finished', false) AS finished FROM runs WHERE run = $run),
epochs AS (
    SELECT epoch, min(step) AS first_step, max(step) AS last_step, count(DISTINCT step) AS logged_steps
    FROM steps GROUP BY epoch
),
spans AS (
    SELECT *, lead(first_step) OVER (ORDER BY epoch) IS NOT NULL AS followed,
        coalesce(lead(first_step) OVER (ORDER BY epoch) - first_step, last_step - first_step + 1) AS batches
    FROM epochs
),
total AS (SELECT max(step) - min(step) + 1 AS total_updates FROM steps),
judged AS (
    SELECT s.*, s.followed OR f.finished AS complete, b.batch_size, t.total_updates,
        s.batches * b.batch_size AS samples_per_epoch
    FROM spans s, batch_size b, finished f, total t
)
SELECT epoch, first_step, last_step, batches AS batches_per_epoch, logged_steps, batch_size,
    samples_per_epoch, complete, total_updates,
    CASE WHEN batch_size IS NULL THEN NULL
         ELSE greatest(1, pow(2, round(log2(greatest(samples_per_epoch / 200.0, 1)))))::BIGINT
    END AS suggested_batch_size,
    CASE WHEN batches < $warn_batches AND batches > 1 AND samples_per_epoch >= $min_batches * $min_batch_size
              AND batch_size >= 2 * $min_batch_size AND total_updates < $min_total THEN 'too few'
         WHEN batches < $min_batches THEN 'few'
         WHEN batches > $max_batches THEN 'many'
         ELSE 'ok' END AS status
FROM judged
ORDER BY epoch
