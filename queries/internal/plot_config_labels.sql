-- name: plot_config_labels
-- A short label per run made of the config values that differ between the runs ("lr=0.01 batch=64"),
-- for legends and tooltips of sweep charts; runs whose configs are all alike get their run name.
-- param runs = []: run names to include (empty: every run in the connection)
WITH cells AS (
    SELECT run, unnest(json_keys(config::JSON)) AS key, config::JSON AS config
    FROM runs
    WHERE (len($runs) = 0 OR list_contains($runs, run))
),
valued AS (
    SELECT run, key, json_extract(config, '$."' || replace(key, '"', '\"') || '"')::VARCHAR AS raw,
           json_extract_string(config, '$."' || replace(key, '"', '\"') || '"') AS text
    FROM cells
),
varying AS (SELECT key FROM valued GROUP BY key HAVING count(DISTINCT raw) > 1)
SELECT r.run, coalesce(string_agg(v.key || '=' || v.text, ' ' ORDER BY v.key), r.run) AS label
FROM runs AS r
LEFT JOIN (SELECT * FROM valued WHERE key IN (SELECT key FROM varying)) AS v USING (run)
WHERE (len($runs) = 0 OR list_contains($runs, r.run))
GROUP BY r.run
ORDER BY r.run
