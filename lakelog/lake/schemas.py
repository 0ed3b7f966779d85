"""Arrow schemas of the lake's tables: the contract between the writers and every reader.

``epoch`` and ``rank`` are not stored in the files: they are hive partition keys in the path,
which DuckDB, polars and pyarrow all turn back into columns. Readers add ``run`` from the folder.
"""

from __future__ import annotations

import pyarrow as pa

TIME = pa.timestamp("us", tz="UTC")
LOGITS = pa.list_(pa.float32())

PREDICTIONS = pa.schema(
    [
        ("step", pa.int64()),
        ("batch_idx", pa.int64()),
        ("sample_idx", pa.int32()),
        ("label", pa.int64()),
        ("prediction", pa.int64()),
        ("logits", LOGITS),
        ("loss", pa.float32()),
    ]
)
"""Per sample; named key columns (``image1``, ``sample_id``, …) follow these."""

PRED_DIGESTS = pa.schema(
    [
        ("step", pa.int64()),
        ("batch_idx", pa.int64()),
        ("n_samples", pa.int32()),
        ("logits_digest", pa.string()),
        ("labels_digest", pa.string()),
        ("keys_digest", pa.string()),
    ]
)
"""One row per logged prediction batch: exact digests that let a diff skip identical batches."""

SCALARS = pa.schema(
    [
        ("step", pa.int64()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("time", TIME),
    ]
)

BATCHES = pa.schema(
    [
        ("step", pa.int64()),
        ("batch_idx", pa.int64()),
        ("n_samples", pa.int32()),
        ("sample_ids", pa.list_(pa.string())),
        ("ids_hash", pa.string()),
        ("ids_set_hash", pa.string()),
        ("input_fingerprint", pa.string()),
        ("input_shapes", pa.string()),
        ("rng_torch", pa.string()),
        ("rng_cuda", pa.string()),
        ("rng_numpy", pa.string()),
        ("rng_python", pa.string()),
        ("time", TIME),
    ]
)

PARAMS = pa.schema(
    [
        ("step", pa.int64()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("group", pa.string()),
        ("shape", pa.string()),
        ("numel", pa.int64()),
        ("dtype", pa.string()),
        ("norm", pa.float64()),
        ("mean", pa.float64()),
        ("std", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("absmax", pa.float64()),
        ("nan_count", pa.int64()),
        ("inf_count", pa.int64()),
        ("grad_norm", pa.float64()),
        ("grad_absmax", pa.float64()),
        ("update_norm", pa.float64()),
        ("update_ratio", pa.float64()),
        ("fingerprint", pa.string()),
        ("grad_fingerprint", pa.string()),
    ]
)
"""One row per tensor per captured step; ``kind`` is param, buffer, or optimizer state (``optim:exp_avg``)."""

HOLDOUT = pa.schema(
    [
        ("step", pa.int64()),
        ("sample_idx", pa.int64()),
        ("label", pa.int64()),
        ("prediction", pa.int64()),
        ("correct", pa.bool_()),
        ("logits", LOGITS),
    ]
)

WORKERS = pa.schema(
    [
        ("step", pa.int64()),
        ("worker_id", pa.int32()),
        ("torch_seed", pa.int64()),
        ("numpy_seed", pa.int64()),
        ("python_seed", pa.string()),
        ("time", TIME),
        ("loader", pa.string()),
        ("pass_idx", pa.int64()),
        ("pid", pa.int64()),
        ("numpy_state", pa.string()),
        ("python_state", pa.string()),
        ("dataset_rng_state", pa.string()),
    ]
)
"""One row per DataLoader worker per pass over the loader (``lakelog.record_workers``): the seeds it got and
fingerprints of its NumPy, ``random`` and dataset-held generator states right after ``worker_init_fn``."""

DUMP_INDEX = pa.schema(
    [
        ("step", pa.int64()),
        ("path", pa.string()),
        ("model_bytes", pa.int64()),
        ("optimizer_bytes", pa.int64()),
        ("n_tensors", pa.int64()),
        ("loss", pa.float64()),
        ("acc", pa.float64()),
        ("created", TIME),
    ]
)

PARAM_DIGESTS = pa.schema(
    [
        ("step", pa.int64()),
        ("capture", pa.string()),
        ("n_tensors", pa.int64()),
        ("weights_digest", pa.string()),
        ("grads_digest", pa.string()),
        ("buffers_digest", pa.string()),
        ("optim_digest", pa.string()),
    ]
)
"""One row per ``run.watch`` capture (``capture``: step, initial or resume): an exact digest of each family's
tensor names and fingerprints, so a diff finds the first differing capture without reading every tensor row."""

SCHEMAS: dict[str, pa.Schema] = {
    "predictions": PREDICTIONS,
    "scalars": SCALARS,
    "batches": BATCHES,
    "params": PARAMS,
    "holdout": HOLDOUT,
    "pred_digests": PRED_DIGESTS,
    "param_digests": PARAM_DIGESTS,
    "dump_index": DUMP_INDEX,
    "workers": WORKERS,
}
"""Every Parquet table a run may hold and its columns; ``layout.TABLES`` is its keys. A new table is added here."""

PARTITION_FIELDS = [pa.field("epoch", pa.int64()), pa.field("rank", pa.int64()), pa.field("run", pa.string())]


_SQL_TYPES = (
    (pa.types.is_int64, "BIGINT"),
    (pa.types.is_int32, "INT"),
    (pa.types.is_float32, "FLOAT"),
    (pa.types.is_float64, "DOUBLE"),
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_timestamp, "TIMESTAMPTZ"),
    (pa.types.is_string, "VARCHAR"),
)


def sql_type(kind: pa.DataType, *, spark: bool = False) -> str | None:
    """The SQL name of a column type of these schemas, in DuckDB's spelling (lists ``T[]``) or
    Spark's (``ARRAY<T>``); None for a type the schemas do not use. Timestamps are UTC microseconds."""
    if pa.types.is_list(kind):
        inner = sql_type(kind.value_type, spark=spark)
        return None if inner is None else (f"ARRAY<{inner}>" if spark else f"{inner}[]")
    return next((name for test, name in _SQL_TYPES if test(kind)), None)


def empty_of(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``, built from null arrays: ``Schema.empty_table`` and ``pa.array``
    make pyarrow import pandas where it is installed (~0.15 s and ~40 MB), which no reader needs."""
    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def reader_schema(table: str) -> pa.Schema:
    """The columns a reader sees in ``table``: the written ones, then the partition columns."""
    schema = SCHEMAS[table]
    for field in PARTITION_FIELDS:
        schema = schema.append(field)
    return schema


def empty_table(table: str) -> pa.Table:
    """An empty table with the reader-side columns, so a view exists even before anything is written."""
    return empty_of(reader_schema(table))
