-- name: env_diff
-- What differs between runs A and B in run.json: the config (every nested key), the seed, the
-- world size and the environment fingerprint (library versions, determinism flags such as
-- tf32_matmul, cudnn_benchmark and deterministic_algorithms, environment variables, host, GPUs).
-- One row per differing key: section (config | environment | run), key (a dotted path such as
-- optimizer.lr or env.CUBLAS_WORKSPACE_CONFIG), and both values as JSON text (null: absent).
-- param run_a: the reference run
-- param run_b: the run compared with it
-- param ignore = 'environment.pid': comma-separated section.key entries to leave out (e.g. 'environment.host')
WITH
docs AS (
    SELECT run, 'config' AS section, config::JSON AS doc FROM runs WHERE run IN ($run_a, $run_b)
    UNION ALL
    SELECT run, 'environment', environment::JSON FROM runs WHERE run IN ($run_a, $run_b)
    UNION ALL
    SELECT run, 'run', json_object('seed', seed, 'world_size', world_size) FROM runs WHERE run IN ($run_a, $run_b)
),
tree AS (SELECT d.run, d.section, t.* FROM docs d, json_tree(d.doc) t),
-- leaves: scalars, and arrays as a whole (a list of GPUs is one value); skip what lies inside arrays
leaves AS (
    SELECT t.run, t.section, substr(t.fullkey, 3) AS key, t.value::VARCHAR AS value
    FROM tree t LEFT JOIN tree p ON p.run = t.run AND p.section = t.section AND p.id = t.parent
    WHERE t.parent IS NOT NULL AND (t.type NOT IN ('OBJECT') OR t.value::VARCHAR = '{}')
      AND coalesce(p.type, '') <> 'ARRAY'
),
a AS (SELECT * FROM leaves WHERE run = $run_a),
b AS (SELECT * FROM leaves WHERE run = $run_b),
ignored AS (SELECT trim(unnest(string_split($ignore, ','))) AS entry)
SELECT coalesce(a.section, b.section) AS section, coalesce(a.key, b.key) AS key,
    a.value AS value_a, b.value AS value_b
FROM a FULL OUTER JOIN b ON a.section = b.section AND a.key = b.key
WHERE a.value IS DISTINCT FROM b.value
  AND coalesce(a.section, b.section) || '.' || coalesce(a.key, b.key) NOT IN (SELECT entry FROM ignored)
ORDER BY CASE coalesce(a.section, b.section) WHEN 'run' THEN 0 WHEN 'config' THEN 1 ELSE 2 END, key
