-- name: rank_sample_overlap
-- Pairs of ranks of a data-parallel run that saw the same samples within an epoch: the signature of a
-- DataLoader without a DistributedSampler, where every rank walks the whole dataset and the world
-- trains on duplicates (world_size times fewer distinct samples per step than intended). Reads the
-- sample ids that run.log_batch records per step and rank (batches table). One row per run, epoch
-- and pair of ranks sharing samples: how many distinct samples each saw, how many they share,
-- overlap = shared / the smaller of the two, identical_batches = steps where both got the same set of
-- ids, and first_shared_step = the first step by which both had seen a common sample. A correct
-- DistributedSampler gives no rows, or a tiny overlap from the padding it adds to even out ranks
-- (raise min_overlap to hide it).
-- param run = None: the run to check (None: every run in the lake)
-- param min_overlap = 0.0: report only pairs whose overlap fraction is above this
WITH ids AS (
    SELECT run, epoch, rank, step, unnest(sample_ids) AS sample_id
    FROM batches
    WHERE ($run IS NULL OR run = $run)
),
seen AS (
    SELECT run, epoch, rank, sample_id, min(step) AS first_step
    FROM ids
    GROUP BY run, epoch, rank, sample_id
),
per_rank AS (
    SELECT run, epoch, rank, count(*) AS n_samples
    FROM seen
    GROUP BY run, epoch, rank
),
shared AS (
    SELECT a.run, a.epoch, a.rank AS rank_a, b.rank AS rank_b, count(*) AS shared_samples,
           min(greatest(a.first_step, b.first_step)) AS first_shared_step
    FROM seen a
    JOIN seen b ON a.run = b.run AND a.epoch = b.epoch AND a.sample_id = b.sample_id AND a.rank < b.rank
    GROUP BY a.run, a.epoch, a.rank, b.rank
),
same_batches AS (
    SELECT a.run, a.epoch, a.rank AS rank_a, b.rank AS rank_b, count(*) AS identical_batches
    FROM batches a
    JOIN batches b ON a.run = b.run AND a.epoch = b.epoch AND a.step = b.step AND a.rank < b.rank
        AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx AND a.ids_set_hash = b.ids_set_hash
    WHERE ($run IS NULL OR a.run = $run)
    GROUP BY a.run, a.epoch, a.rank, b.rank
)
SELECT
    s.run,
    s.epoch,
    s.rank_a,
    s.rank_b,
    pa.n_samples AS samples_a,
    pb.n_samples AS samples_b,
    s.shared_samples,
    s.shared_samples / least(pa.n_samples, pb.n_samples) AS overlap,
    coalesce(sb.identical_batches, 0) AS identical_batches,
    s.first_shared_step
FROM shared s
JOIN per_rank pa ON pa.run = s.run AND pa.epoch = s.epoch AND pa.rank = s.rank_a
JOIN per_rank pb ON pb.run = s.run AND pb.epoch = s.epoch AND pb.rank = s.rank_b
LEFT JOIN same_batches sb ON sb.run = s.run AND sb.epoch = s.epoch AND sb.rank_a = s.rank_a AND sb.rank_b = s.rank_b
WHERE s.shared_samples / least(pa.n_samples, pb.n_samples) > $min_overlap
ORDER BY s.run, s.epoch, s.rank_a, s.rank_b
