-- name: plot_label_balance
-- Share of each label (class) in the training batches of one run over steps, in percent: the
-- label_pct/<class> scalars when logged, otherwise counted from the logged predictions' labels.
-- A shuffled, balanced loader hovers near 100 / n_classes; a sorted one swings between 0 and 100.
-- Bucketed to at most max_points points per class.
-- param run: the run
-- param max_points = 2000: most points per class
WITH from_scalars AS (
    SELECT substr(name, length('label_pct/') + 1) AS label, step, avg(value) AS pct
    FROM scalars
    WHERE run = $run AND starts_with(name, 'label_pct/') AND isfinite(value)
    GROUP BY name, step
),
counted AS (
    SELECT step, label::VARCHAR AS label, count(*) AS n
    FROM predictions
    WHERE run = $run AND label IS NOT NULL AND NOT EXISTS (SELECT 1 FROM from_scalars)
    GROUP BY step, label
),
totals AS (SELECT step, sum(n) AS total FROM counted GROUP BY step),
from_predictions AS (
    SELECT l.label, t.step, 100.0 * coalesce(c.n, 0) / t.total AS pct
    FROM (SELECT DISTINCT label FROM counted) AS l CROSS JOIN totals AS t
    LEFT JOIN counted AS c ON c.label = l.label AND c.step = t.step
),
series AS (SELECT * FROM from_scalars UNION ALL SELECT * FROM from_predictions),
bounds AS (
    SELECT label, min(step) AS lo, greatest(1, ceil((max(step) - min(step) + 1) / $max_points))::BIGINT AS width
    FROM series
    GROUP BY label
)
SELECT s.label, avg(s.step) AS step, avg(s.pct) AS pct, min(s.pct) AS pct_min, max(s.pct) AS pct_max, count(*) AS n
FROM series AS s JOIN bounds AS b USING (label)
GROUP BY s.label, (s.step - b.lo) // b.width
ORDER BY s.label, step
