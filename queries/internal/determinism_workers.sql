-- name: determinism_workers
-- DataLoader worker seeding problems inside one run (workers table, written by lakelog.record_workers):
-- problem 'shared': in one pass over a loader, several workers start from the same random state, so they
-- draw the same augmentations (a constant seed in worker_init_fn, or a generator the dataset holds that is
-- copied into every worker); problem 'repeated': a worker starts every pass (epoch) from the same state, so
-- each epoch repeats the previous one's randomness. rng: torch, numpy, python or dataset (generators held as
-- dataset attributes). One row per problem, loader and rng; workers / passes: an example group.
-- param run: the run to check
WITH w AS (SELECT * FROM workers WHERE run = $run),
states AS (
    SELECT loader, rank, pass_idx, worker_id, step, 'torch' AS rng, CAST(torch_seed AS VARCHAR) AS state FROM w
    UNION ALL SELECT loader, rank, pass_idx, worker_id, step, 'numpy', numpy_state FROM w
    UNION ALL SELECT loader, rank, pass_idx, worker_id, step, 'python', python_state FROM w
    UNION ALL SELECT loader, rank, pass_idx, worker_id, step, 'dataset', dataset_rng_state FROM w
), groups AS (
    SELECT 'shared' AS problem, loader, rng, min(step) AS step, list(DISTINCT worker_id ORDER BY worker_id) AS workers,
           list(DISTINCT pass_idx ORDER BY pass_idx) AS passes
    FROM states WHERE state IS NOT NULL GROUP BY loader, rank, pass_idx, rng, state
    HAVING count(DISTINCT worker_id) > 1
    UNION ALL
    SELECT 'repeated', loader, rng, min(step), list(DISTINCT worker_id ORDER BY worker_id),
           list(DISTINCT pass_idx ORDER BY pass_idx)
    FROM states WHERE state IS NOT NULL GROUP BY loader, rank, worker_id, rng, state
    HAVING count(DISTINCT pass_idx) > 1
)
SELECT problem, loader, rng, min(step) AS step, arg_min(workers, step) AS workers, arg_min(passes, step) AS passes,
       count(*) AS n_groups
FROM groups GROUP BY problem, loader, rng
ORDER BY problem DESC, loader, list_position(['numpy', 'python', 'dataset', 'torch'], rng)
