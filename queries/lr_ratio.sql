-- name: lr_ratio
-- Whether the learning rates of the parameter groups stand in the ratio the user meant (e.g. the
-- head learning 10x faster than the backbone): from the scalars lr/<group>, per expected pair
-- 'numerator/denominator', the observed ratio at the first and last step, its range, and the first
-- step where it is off by more than $rtol. status: ok | wrong | missing group | invalid expectation.
-- Without an expectation, every group is reported against the first group (status: observed).
-- param run: the run to check
-- param expected = '': expected ratios as 'head/backbone=10' (several: comma-separated) or JSON '{"head/backbone": 10}'
-- param rtol = 0.01: relative tolerance on the ratio
WITH
lr AS (
    SELECT step, substr(name, length('lr/') + 1) AS grp, value
    FROM scalars WHERE run = $run AND starts_with(name, 'lr/')
),
groups_ AS (SELECT DISTINCT grp FROM lr),
from_json AS (
    SELECT key AS pair, TRY_CAST(value AS DOUBLE) AS ratio
    FROM json_each(CASE WHEN starts_with(trim($expected), '{') THEN $expected ELSE '{}' END)
),
from_text AS (
    SELECT trim(split_part(item, '=', 1)) AS pair, TRY_CAST(trim(split_part(item, '=', 2)) AS DOUBLE) AS ratio
    FROM (SELECT unnest(string_split($expected, ',')) AS item)
    WHERE NOT starts_with(trim($expected), '{') AND trim(item) <> ''
),
observed_only AS (
    SELECT g.grp || '/' || f.grp AS pair, NULL::DOUBLE AS ratio
    FROM groups_ g, (SELECT min(grp) AS grp FROM groups_) f
    WHERE trim($expected) = '' AND g.grp <> f.grp
),
expected_ AS (
    SELECT pair, ratio, trim(split_part(pair, '/', 1)) AS num, trim(split_part(pair, '/', 2)) AS den
    FROM (SELECT * FROM from_json UNION ALL SELECT * FROM from_text UNION ALL SELECT * FROM observed_only)
),
ratios AS (
    SELECT e.pair, e.ratio AS expected, n.step, n.value / nullif(d.value, 0) AS observed
    FROM expected_ e
    JOIN lr n ON n.grp = e.num
    JOIN lr d ON d.grp = e.den AND d.step = n.step
),
summary AS (
    SELECT pair, any_value(expected) AS expected, count(*) AS n_steps,
        arg_min(observed, step) AS first_ratio, arg_max(observed, step) AS last_ratio,
        min(observed) AS min_ratio, max(observed) AS max_ratio,
        min(step) FILTER (WHERE abs(observed / expected - 1) > $rtol OR observed IS NULL) AS first_off_step
    FROM ratios GROUP BY pair
)
SELECT e.pair, e.num AS numerator, e.den AS denominator, e.ratio AS expected,
    s.first_ratio, s.last_ratio, s.min_ratio, s.max_ratio, s.first_off_step, s.n_steps,
    CASE
        WHEN e.num = '' OR e.den = '' OR (e.ratio IS NULL AND trim($expected) <> '') THEN 'invalid expectation'
        WHEN s.pair IS NULL THEN 'missing group'
        WHEN e.ratio IS NULL THEN 'observed'
        WHEN s.first_off_step IS NULL THEN 'ok'
        ELSE 'wrong'
    END AS status
FROM expected_ e LEFT JOIN summary s ON s.pair = e.pair
ORDER BY e.pair
