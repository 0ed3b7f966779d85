-- name: grad_tensors
-- Each parameter's gradient over the captured steps (kind 'param'), for judging tensors one by one
-- (a group's total hides its early layers and its dead ones): the captures, how many had a gradient
-- at all (grad_norm not null), how many a non-zero one, the first and last step with a non-zero
-- gradient, the median gradient RMS (grad_norm / sqrt(numel), finite steps), and over the window
-- (the last $window fraction of the captured steps) how many captures there were and how many had
-- a gradient of exactly zero. ndim is the tensor's number of dimensions (from shape).
-- param run: the run to check
-- param window = 0.5: the last fraction of the captured steps over which a dead tensor stays at zero
WITH
p AS (
    SELECT step, name, coalesce("group", '(no group)') AS grp, shape, numel, grad_norm
    FROM params WHERE run = $run AND coalesce(kind, 'param') = 'param'
),
cut AS (SELECT quantile_disc(step, 1 - $window) AS from_step FROM (SELECT DISTINCT step FROM p))
SELECT name, any_value(grp) AS "group", any_value(shape) AS shape, any_value(numel) AS numel,
    len(string_split(any_value(shape), ',')) - CASE WHEN any_value(shape) = '[]' THEN 1 ELSE 0 END AS ndim,
    count(*) AS n_steps, count(grad_norm) AS n_with_grad,
    count(*) FILTER (WHERE grad_norm > 0) AS n_nonzero,
    min(step) FILTER (WHERE grad_norm > 0) AS first_grad_step,
    max(step) FILTER (WHERE grad_norm > 0) AS last_grad_step,
    median(grad_norm / sqrt(greatest(numel, 1))) FILTER (WHERE isfinite(grad_norm)) AS median_grad_rms,
    count(*) FILTER (WHERE step >= c.from_step) AS n_window,
    count(*) FILTER (WHERE step >= c.from_step AND grad_norm = 0) AS n_window_zero,
    any_value(c.from_step) AS window_from_step
FROM p, cut c
GROUP BY name
ORDER BY name
