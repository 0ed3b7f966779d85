-- name: label_balance
-- Are the classes balanced in what the model was trained on? Per class: how many training samples
-- carried that label (predictions.label), its share, the smallest and largest share within one
-- batch, and in how many batches it was absent; classes up to the logits' width count even when
-- never seen. imbalance = the most common class's count / the least common's (inf when a class
-- never appears). status: imbalanced (the least common class has under 1 / $max_ratio of its fair
-- share 1 / classes: with 10 classes, 6% against 16% is fine, 4% is not) | ok. Falls back to the scalars
-- label_pct/<class> (percent per batch) when predictions have no labels.
-- param run: the run to check
-- param max_ratio = 2.0: how many times below its fair share (1 / classes) a class may fall
WITH
p AS (SELECT step, rank, batch_idx, label, len(logits) AS width FROM predictions WHERE run = $run),
classes AS (
    SELECT DISTINCT label FROM p WHERE label IS NOT NULL
    UNION
    SELECT unnest(range(0, (SELECT max(width) FROM p WHERE width > 1 AND EXISTS (SELECT 1 FROM p WHERE label IS NOT NULL))))
),
per_batch AS (
    SELECT step, rank, batch_idx, count(*) AS n FROM p WHERE label IS NOT NULL GROUP BY ALL
),
counts AS (
    SELECT step, rank, batch_idx, label, count(*) AS k FROM p WHERE label IS NOT NULL GROUP BY ALL
),
shares AS (
    SELECT c.label, coalesce(k.k, 0) AS k, coalesce(k.k, 0) / b.n AS share
    FROM classes c CROSS JOIN per_batch b
    LEFT JOIN counts k ON k.label = c.label AND k.step = b.step AND k.rank = b.rank
        AND k.batch_idx IS NOT DISTINCT FROM b.batch_idx
),
from_labels AS (
    SELECT label::VARCHAR AS class, sum(k)::BIGINT AS n,
        min(share) AS min_batch_share, max(share) AS max_batch_share,
        count(*) FILTER (WHERE share = 0) AS batches_without, count(*) AS n_batches, 'predictions' AS source
    FROM shares GROUP BY label
),
from_scalars AS (
    SELECT substr(name, length('label_pct/') + 1) AS class, NULL::BIGINT AS n,
        min(value) / 100 AS min_batch_share, max(value) / 100 AS max_batch_share,
        count(*) FILTER (WHERE value = 0) AS batches_without, count(*) AS n_batches, 'scalars' AS source,
        avg(value) / 100 AS mean_share
    FROM scalars
    WHERE run = $run AND starts_with(name, 'label_pct/') AND NOT EXISTS (SELECT 1 FROM p WHERE label IS NOT NULL)
    GROUP BY name
),
combined AS (
    SELECT class, n, n / sum(n) OVER () AS share, min_batch_share, max_batch_share, batches_without, n_batches, source
    FROM from_labels
    UNION ALL
    SELECT class, n, mean_share, min_batch_share, max_batch_share, batches_without, n_batches, source FROM from_scalars
),
judged AS (
    SELECT *, max(share) OVER () / nullif(min(share) OVER (), 0) AS ratio,
        min(share) OVER () * count(*) OVER () AS min_fair FROM combined
)
SELECT class, n, share, min_batch_share, max_batch_share, batches_without, n_batches,
    coalesce(ratio, 'inf'::DOUBLE) AS imbalance,
    CASE WHEN coalesce(min_fair, 0) < 1 / $max_ratio THEN 'imbalanced' ELSE 'ok' END AS status,
    source
FROM judged
ORDER BY try_cast(class AS BIGINT) NULLS LAST, class
