-- name: lr_ratio
-- Whether the learning rates of two parameter groups stand in the ratio the user meant (e.g. the
-- head learning 10x faster than the backbone): from the scalars lr/$numerator and lr/$denominator,
-- over the steps where both are set and non-zero (a warmup from LR 0 or a cooldown to 0 has no
-- ratio), the observed ratio at the first and last such step, its range, and the first step where
-- it is off from $expected by more than $rtol (relative). groups lists every lr/<group> logged.
-- status: ok | wrong | observed ($expected below 0: nothing to compare) | missing group | no overlap
-- (both groups logged, never both non-zero at one step).
-- param run: the run to check
-- param numerator: the group on top of the ratio (lr/<numerator>)
-- param denominator: the group below (lr/<denominator>)
-- param expected = -1.0: the expected ratio; below 0: report the observed ratio only
-- param rtol = 0.01: relative tolerance on the ratio
WITH
lr AS (
    SELECT step, substr(name, length('lr/') + 1) AS grp, value
    FROM scalars WHERE run = $run AND starts_with(name, 'lr/')
),
groups_ AS (SELECT coalesce(list(DISTINCT grp ORDER BY grp), []::VARCHAR[]) AS groups FROM lr),
ratios AS (
    SELECT n.step, n.value / d.value AS observed
    FROM lr n JOIN lr d ON d.step = n.step AND d.grp = $denominator
    WHERE n.grp = $numerator AND n.value <> 0 AND d.value <> 0 AND isfinite(n.value) AND isfinite(d.value)
),
summary AS (
    SELECT count(*) AS n_steps, min(step) AS first_step, max(step) AS last_step,
        arg_min(observed, step) AS first_ratio, arg_max(observed, step) AS last_ratio,
        min(observed) AS min_ratio, max(observed) AS max_ratio,
        min(step) FILTER (WHERE $expected >= 0 AND abs(observed / $expected - 1) > $rtol) AS first_off_step,
        arg_min(observed, step) FILTER (WHERE $expected >= 0 AND abs(observed / $expected - 1) > $rtol)
            AS first_off_ratio
    FROM ratios
),
skipped AS (
    SELECT count(DISTINCT step) AS zero_steps FROM lr
    WHERE grp IN ($numerator, $denominator) AND (value = 0 OR NOT isfinite(value))
)
SELECT $numerator || '/' || $denominator AS pair, $numerator AS numerator, $denominator AS denominator,
    CASE WHEN $expected >= 0 THEN $expected END AS expected,
    s.first_ratio, s.last_ratio, s.min_ratio, s.max_ratio, s.first_off_step, s.first_off_ratio,
    s.n_steps, s.first_step, s.last_step, k.zero_steps, g.groups,
    CASE
        WHEN NOT list_contains(g.groups, $numerator) OR NOT list_contains(g.groups, $denominator) THEN 'missing group'
        WHEN s.n_steps = 0 THEN 'no overlap'
        WHEN $expected < 0 THEN 'observed'
        WHEN s.first_off_step IS NULL THEN 'ok'
        ELSE 'wrong'
    END AS status
FROM summary s, groups_ g, skipped k
