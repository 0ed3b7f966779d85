-- name: plot_group_norms
-- Per parameter group of one run over steps: gradient norm, weight norm, update norm and the
-- update-to-weight ratio (how far one optimizer step moves the weights; ~1e-3 is healthy, 0 is
-- frozen, ~1 is exploding). Read from the telemetry scalars (grad_norm/<group>, weight_norm/<group>,
-- update_norm/<group>, update_ratio/<group>, and the whole model's as group '(all)'); a metric the
-- scalars lack is rebuilt from the params table (L2 over the group's tensors), and a missing ratio
-- is update_norm / weight_norm.
-- Bucketed to at most max_points points per (metric, group).
-- param run: the run
-- param max_points = 2000: most points per series
WITH from_scalars AS (
    SELECT split_part(name, '/', 1) AS metric,
           CASE WHEN strpos(name, '/') > 0 THEN substr(name, strpos(name, '/') + 1) ELSE '(all)' END AS "group",
           step, avg(value) AS value
    FROM scalars
    WHERE run = $run AND split_part(name, '/', 1) IN ('grad_norm', 'weight_norm', 'update_norm', 'update_ratio')
    GROUP BY name, step
),
group_params AS (
    SELECT coalesce("group", '(no group)') AS "group", step,
           sqrt(sum(norm * norm)) AS weight_norm,
           sqrt(sum(grad_norm * grad_norm)) AS grad_norm,
           sqrt(sum(update_norm * update_norm)) AS update_norm
    FROM params
    WHERE run = $run AND coalesce(kind, 'param') = 'param' AND rank = (SELECT min(rank) FROM params WHERE run = $run)
    GROUP BY ALL
),
from_params AS (
    UNPIVOT group_params ON weight_norm, grad_norm, update_norm INTO NAME metric VALUE value
),
measured AS (
    SELECT metric, "group", step, value FROM from_scalars
    UNION ALL
    SELECT p.metric, p."group", p.step, p.value FROM from_params AS p
    WHERE p.value IS NOT NULL AND NOT EXISTS (SELECT 1 FROM from_scalars AS s WHERE s.metric = p.metric)
),
ratios AS (
    SELECT 'update_ratio' AS metric, u."group", u.step, u.value / nullif(w.value, 0) AS value
    FROM measured AS u JOIN measured AS w ON u."group" = w."group" AND u.step = w.step
    WHERE u.metric = 'update_norm' AND w.metric = 'weight_norm'
      AND NOT EXISTS (SELECT 1 FROM measured AS m WHERE m.metric = 'update_ratio')
),
series AS (
    SELECT * FROM measured WHERE isfinite(value)
    UNION ALL
    SELECT * FROM ratios WHERE isfinite(value)
),
bounds AS (
    SELECT metric, "group", min(step) AS lo,
           greatest(1, ceil((max(step) - min(step) + 1) / $max_points))::BIGINT AS width
    FROM series
    GROUP BY metric, "group"
)
SELECT s.metric, s."group", avg(s.step) AS step, avg(s.value) AS value, min(s.value) AS value_min,
       max(s.value) AS value_max, count(*) AS n
FROM series AS s JOIN bounds AS b USING (metric, "group")
GROUP BY s.metric, s."group", (s.step - b.lo) // b.width
ORDER BY s.metric, s."group", step
