-- name: batch_order_mismatch
-- Per step (and rank and batch index), whether runs A and B fed the same samples in the same order
-- (kind 'same'), the same samples in another order ('reordered'), different samples ('different',
-- with overlap = how many sample ids both batches hold), or a batch only one run logged ('only in A',
-- 'only in B'); first_of_kind is the first step of each kind, first_pos the first position (0-based)
-- where the ids differ. For a batch that differs, same_as_a_step is the earliest step of A that fed
-- exactly B's batch (B replays A's order from elsewhere, e.g. a resumed run that restarted epoch 0's
-- shuffle) and repeat_of_b_step the earliest earlier step of B itself with the same batch.
-- Reads the batches table (run.log_batch).
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param from_step = 0: ignore earlier steps
WITH
b_all AS (SELECT * FROM batches WHERE run IN ($run_a, $run_b)),
ba AS (SELECT * FROM b_all WHERE run = $run_a AND step >= $from_step),
bb AS (SELECT * FROM b_all WHERE run = $run_b AND step >= $from_step),
j AS (
    SELECT
        coalesce(a.step, b.step) AS step,
        coalesce(a.epoch, b.epoch) AS epoch,
        coalesce(a.rank, b.rank) AS rank,
        coalesce(a.batch_idx, b.batch_idx) AS batch_idx,
        CASE
            WHEN b.step IS NULL THEN 'only in A'
            WHEN a.step IS NULL THEN 'only in B'
            WHEN a.ids_hash = b.ids_hash THEN 'same'
            WHEN a.ids_set_hash = b.ids_set_hash THEN 'reordered'
            ELSE 'different'
        END AS kind,
        a.n_samples AS n_a,
        b.n_samples AS n_b,
        CASE WHEN a.step IS NOT NULL AND b.step IS NOT NULL
             THEN len(list_intersect(a.sample_ids, b.sample_ids)) END AS overlap,
        CASE WHEN a.step IS NOT NULL AND b.step IS NOT NULL THEN list_position(
            list_transform(range(1, greatest(len(a.sample_ids), len(b.sample_ids)) + 1),
                           lambda i: a.sample_ids[i] IS DISTINCT FROM b.sample_ids[i]),
            true) - 1 END AS first_pos,
        b.ids_hash AS hash_b,
        a.sample_ids AS ids_a,
        b.sample_ids AS ids_b
    FROM ba a
    FULL OUTER JOIN bb b
      ON a.step = b.step AND a.rank = b.rank AND a.batch_idx IS NOT DISTINCT FROM b.batch_idx
),
replayed AS (
    SELECT j.step, j.rank, j.batch_idx, min(x.step) AS same_as_a_step
    FROM j JOIN b_all x ON x.run = $run_a AND x.ids_hash = j.hash_b AND x.rank = j.rank
    WHERE j.kind IN ('reordered', 'different', 'only in B')
    GROUP BY ALL
),
repeated AS (
    SELECT j.step, j.rank, j.batch_idx, min(x.step) AS repeat_of_b_step
    FROM j JOIN b_all x ON x.run = $run_b AND x.ids_hash = j.hash_b AND x.rank = j.rank AND x.step < j.step
    WHERE j.kind IN ('reordered', 'different', 'only in B')
    GROUP BY ALL
)
SELECT
    j.step, j.epoch, j.rank, j.batch_idx, j.kind,
    min(j.step) OVER (PARTITION BY j.kind) AS first_of_kind,
    j.n_a, j.n_b, j.overlap, j.first_pos,
    r.same_as_a_step, p.repeat_of_b_step,
    j.ids_a, j.ids_b
FROM j
LEFT JOIN replayed r ON r.step = j.step AND r.rank = j.rank AND r.batch_idx IS NOT DISTINCT FROM j.batch_idx
LEFT JOIN repeated p ON p.step = j.step AND p.rank = j.rank AND p.batch_idx IS NOT DISTINCT FROM j.batch_idx
ORDER BY j.step, j.rank, j.batch_idx
