-- name: plot_scalar_family
-- A family of scalars sharing a prefix (lr/<group>, label_pct/<class>, timing/<phase>) of one run over
-- steps, the part after the prefix as `series`; bucketed to at most max_points points per series.
-- param run: the run
-- param prefix: the name prefix including the slash, e.g. 'lr/'
-- param max_points = 2000: most points per series
WITH series AS (
    SELECT substr(name, length($prefix) + 1) AS series, step, avg(value) AS value
    FROM scalars
    WHERE run = $run AND starts_with(name, $prefix) AND isfinite(value)
    GROUP BY name, step
),
bounds AS (
    SELECT series, min(step) AS lo,
           greatest(1, ceil((max(step) - min(step) + 1) / $max_points))::BIGINT AS width
    FROM series
    GROUP BY series
)
SELECT s.series, avg(s.step) AS step, avg(s.value) AS value, min(s.value) AS value_min,
       max(s.value) AS value_max, count(*) AS n
FROM series AS s JOIN bounds AS b USING (series)
GROUP BY s.series, (s.step - b.lo) // b.width
ORDER BY s.series, step
