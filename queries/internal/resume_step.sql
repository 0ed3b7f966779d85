-- name: resume_step
-- The first step a run logged at or after a moment (the time of a resume recorded in run.json's
-- "resumes"), from the timestamps of the scalars and batches tables; null when nothing was logged
-- after it.
-- param run: the run
-- param at: an ISO-8601 time, e.g. 2026-01-01T12:00:00+00:00
SELECT min(step) AS step
FROM (
    SELECT step, time FROM scalars WHERE run = $run
    UNION ALL
    SELECT step, time FROM batches WHERE run = $run
)
WHERE time >= CAST($at AS TIMESTAMPTZ)
