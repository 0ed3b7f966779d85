-- name: determinism_worker_seeds
-- Whether two runs' DataLoader workers started from the same random states (workers table, written by
-- lakelog.record_workers), lined up by loader, rank, pass over the loader and worker id. One row for the
-- first (loader, pass, worker) where they differ, with the RNGs that differ (its columns are NULL when all
-- agree); n_compared: how many workers were compared.
-- param run_a: the reference run
-- param run_b: the run compared with it
WITH a AS (SELECT * FROM workers WHERE run = $run_a), b AS (SELECT * FROM workers WHERE run = $run_b),
j AS (
    SELECT a.loader, a.rank, a.pass_idx, a.worker_id, a.step AS step_a, b.step AS step_b,
           list_filter(['torch', 'numpy', 'python', 'dataset'], lambda r, i:
               [CAST(a.torch_seed AS VARCHAR), a.numpy_state, a.python_state, a.dataset_rng_state][i]
               IS DISTINCT FROM [CAST(b.torch_seed AS VARCHAR), b.numpy_state, b.python_state, b.dataset_rng_state][i])
               AS differ
    FROM a JOIN b ON a.loader = b.loader AND a.rank = b.rank AND a.pass_idx = b.pass_idx
        AND a.worker_id = b.worker_id
)
SELECT f.loader, f.rank, f.pass_idx, f.worker_id, f.step_a, f.step_b, f.differ, c.n_compared
FROM (SELECT count(*) AS n_compared FROM j) c
LEFT JOIN (SELECT * FROM j WHERE len(differ) > 0 ORDER BY pass_idx, loader, rank, worker_id LIMIT 1) f ON TRUE
