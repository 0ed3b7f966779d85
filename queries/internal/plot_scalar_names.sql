-- name: plot_scalar_names
-- Which scalars each run logged, how often and over which steps and epochs: what a report can draw.
-- param runs = []: run names to include (empty: every run in the connection)
SELECT run, name, count(*) AS n, min(step) AS first_step, max(step) AS last_step,
       count(DISTINCT epoch) AS n_epochs, count(*) FILTER (WHERE NOT isfinite(value)) AS n_nonfinite
FROM scalars
WHERE (len($runs) = 0 OR list_contains($runs, run))
GROUP BY run, name
ORDER BY run, name
