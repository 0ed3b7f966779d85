"""The query library on Spark: the lake's views in a SparkSession, and library queries run there.

``lakelog.query(name, root=…, engine="spark", spark=None, **params)`` runs the same ``.sql`` question
as on DuckDB and returns the same polars frame (same columns, types as close as Spark's allow, the
same order where the query orders). The session is the caller's (a cluster's, with its own
filesystems: ``s3a://``, ``abfss://``, ``hdfs://``) or a small local one made on first use.

The views have the names and columns of :func:`lakelog.read.views.connect`: ``runs`` (one row per
run.json, read on the driver) and one per table (``predictions``, ``scalars``, ``batches``,
``params``, ``holdout``, ``pred_digests``, ``dump_index``, ``workers``), read by Spark's own Parquet
reader with ``epoch``, ``rank`` and ``run`` taken from each file's path
(``<root>/<run>/<table>/epoch=E/rank=R/part-….parquet``). A table no run has written is an empty view
with the documented columns. Registering views replaces the session's temporary views of those names.

pyspark is an optional dependency (``pip install 'lakelog[spark]'``) and needs Java 17+.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs

from lakelog.errors import QueryError
from lakelog.lake.compact_protocol import STAGING_DIR
from lakelog.lake.layout import TABLES
from lakelog.lake.schemas import SCHEMAS, empty_table
from lakelog.read.queryfiles import Query
from lakelog.read.scan import Scan, locate, scan_lake
from lakelog.read.sparksql import spark_file_hint, steps
from lakelog.read.views import UNION_BY_NAME_FILES, runs_table

try:
    from pyspark.errors import PySparkException
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
except ImportError as exc:  # pragma: no cover - exercised where pyspark is absent
    raise ImportError(
        "engine='spark' needs pyspark and sqlglot: pip install 'lakelog[spark]' (and Java 17 or newer)"
    ) from exc

LOCAL_CONF = {
    "spark.master": "local[2]",
    "spark.app.name": "lakelog",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}
"""The local session made when no session is passed: two cores and two shuffle partitions, since one
machine's lake fits in a few tasks and Spark's default of 200 partitions costs seconds per query."""

QUERY_CONF = {"spark.sql.ansi.enabled": "false"}
"""Set while a library query runs (and put back after): outside ANSI mode a division by zero or a
failed cast is NULL, as in DuckDB, instead of an error."""

_LOCK = threading.Lock()
_RUN_LOCK = threading.Lock()
_LOCAL: list[SparkSession] = []


def local_session() -> SparkSession:
    """The local session lakelog made (one per process), created on first use."""
    with _LOCK:
        if not _LOCAL or _LOCAL[0].sparkContext._jsc is None:
            builder = SparkSession.builder
            for key, value in LOCAL_CONF.items():
                builder = builder.config(key, value)
            session = builder.getOrCreate()
            session.sparkContext.setLogLevel("FATAL")  # errors come back as QueryError, not log lines
            _LOCAL[:] = [session]
        return _LOCAL[0]


def _scheme(item: Any) -> str:
    """The scheme Spark reads an object-store root with: the one the caller wrote (``s3a``, ``gs``…)."""
    return str(item).split("://", 1)[0] if isinstance(item, str) and "://" in item else "s3"


def _driver_root(item: Any) -> Any:
    """``s3a://`` (Hadoop's name for S3) read on the driver as pyarrow's ``s3://``."""
    return "s3://" + item[len("s3a://") :] if isinstance(item, str) and item.startswith("s3a://") else item


def _spark_files(scan: Scan, table: str, schemes: dict[int, str]) -> list[str]:
    """The table's part files as Spark paths: local ones as they are, remote ones with their scheme."""
    out = []
    for entry in scan.runs:
        if entry.lake.local:
            prefix = entry.folder + os.sep
            out.extend(p for p in scan.files[table] if p.startswith(prefix))
        else:
            prefix = entry.folder + "/"
            scheme = schemes.get(id(entry.lake), "s3")
            out.extend(f"{scheme}://{p}" for p in scan.files[table] if p.startswith(prefix))
    return out


def _read_table(spark: SparkSession, table: str, files: list[str]) -> DataFrame:
    """One scan of the listed part files, with ``epoch``, ``rank`` and ``run`` from each file's path."""
    merge = table == "predictions" or len(files) <= UNION_BY_NAME_FILES  # as connect does
    data = (
        spark.read.option("recursiveFileLookup", "true")  # the listed files only, no partition guessing
        .option("mergeSchema", str(merge).lower())
        .parquet(*files)
    )
    path = F.col("_metadata.file_path")
    sep = r"[/\\]"
    staged = rf"(?:{STAGING_DIR}{sep}[^/\\]+{sep})?"  # a compaction's staged output
    data = data.select(
        *[F.col(f"`{c}`") for c in data.columns if c not in ("epoch", "rank", "run")],
        F.regexp_extract(path, rf"{sep}epoch=(-?[0-9]+){sep}", 1).cast("bigint").alias("epoch"),
        F.regexp_extract(path, rf"{sep}rank=(-?[0-9]+){sep}", 1).cast("bigint").alias("rank"),
        F.regexp_extract(path, rf"([^/\\]+){sep}{staged}{table}{sep}epoch=", 1).alias("run"),
    )
    missing = [f for f in SCHEMAS[table] if f.name not in data.columns]
    if missing:  # part files older than a column: the documented column exists, as NULL
        types = spark.createDataFrame(pa.schema(missing).empty_table()).schema
        data = data.select("*", *[F.lit(None).cast(types[f.name].dataType).alias(f.name) for f in missing])
    return data


def _cut(spark: SparkSession, data: DataFrame, scan: Scan) -> DataFrame:
    """Hide rows beyond each unfinished rank's committed step, as connect does."""
    if not scan.cuts:
        return data
    cuts = spark.createDataFrame(
        pa.table(
            {
                "_run": pa.array([c[0] for c in scan.cuts], pa.string()),
                "_rank": pa.array([c[1] for c in scan.cuts], pa.int64()),
                "_step": pa.array([c[2] for c in scan.cuts], pa.int64()),
            }
        )
    )
    hidden = (data.run == cuts._run) & (data["rank"] == cuts._rank) & (data.step > cuts._step)
    return data.join(F.broadcast(cuts), hidden, "left_anti")


def register_views(
    root: Any = "runs", spark: SparkSession | None = None, *, filesystem: pafs.FileSystem | None = None
) -> SparkSession:
    """Register the lake's views (``runs``, ``predictions``, …) as temporary views of ``spark``.

    ``root`` is what :func:`lakelog.connect` takes (a lake root, a run folder, a Run, a list of
    those) or an ``s3a://`` root, which Spark reads through Hadoop while the driver lists it through
    pyarrow's ``s3://``. The lake is listed once on the driver, as connect lists it (unreadable files
    left out with a warning, a compaction's merged files in place of their parts, rows a crashed
    rank never committed hidden), and Spark reads exactly the listed files. The views are a snapshot
    of the files present now. Returns the session, so ``register_views(root).sql(...)`` runs SQL.
    """
    spark = spark or local_session()
    items = list(root) if isinstance(root, list | tuple) else [root]
    located = locate([_driver_root(item) for item in items], filesystem)
    given = [item for item in items if not isinstance(item, pafs.FileSystem)]
    schemes = {id(lake): _scheme(item) for (lake, _), item in zip(located, given, strict=False)}
    scan = scan_lake(located)
    spark.createDataFrame(runs_table(scan)).createOrReplaceTempView("runs")
    for table in TABLES:
        files = _spark_files(scan, table, schemes)
        data = _cut(spark, _read_table(spark, table, files), scan) if files else None
        (data if data is not None else spark.createDataFrame(empty_table(table))).createOrReplaceTempView(
            table
        )
    return spark


def _arg(value: Any) -> Any:
    """A parameter value as Spark binds it: lists as typed array literals (empty ones as array<string>)."""
    if isinstance(value, list | tuple):
        items = [F.lit(v) for v in value]
        kinds = {type(v) for v in value}
        kind = (
            "bigint"
            if kinds == {int}
            else "double"
            if kinds <= {int, float} and kinds
            else "boolean"
            if kinds == {bool}
            else "string"
        )
        return F.array(*items).cast(f"array<{kind}>") if items else F.array().cast("array<string>")
    if value is None:
        return F.lit(None)
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def _errors(exc: Exception, query: Query) -> QueryError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = re.search(r"UNRESOLVED_ROUTINE\].*?routine `([^`]+)`", text)
    if match:
        return QueryError(
            f"query {query.name!r} ({query.path.name}) cannot run on Spark: Spark SQL has no function "
            f"{match.group(1)}; {spark_file_hint(query)}"
        )
    return QueryError(f"query {query.name!r} ({query.path.name}) failed on Spark: {text}")


def _arrow(frame: DataFrame) -> pa.Table:
    """The rows as Arrow: ``toArrow`` (pyspark 4), or the Arrow batches pyspark 3.5 collects."""
    if hasattr(frame, "toArrow"):
        return frame.toArrow()
    batches = frame._collect_as_arrow()  # pyspark 3.5
    return pa.Table.from_batches(batches) if batches else pa.Table.from_pandas(frame.limit(0).toPandas())


def run(
    query: Query, bound: dict[str, Any], root: Any = "runs", spark: SparkSession | None = None
) -> pl.DataFrame:
    """Run a library query on Spark over the lake at ``root``; values bound as named parameters.

    Queries run one at a time per process (their WITH clauses become temporary views of fixed names).
    """
    plan = steps(query)
    with _RUN_LOCK:
        spark = register_views(root, spark)
        args: dict[str, Any] = {name: _arg(value) for name, value in bound.items()}
        saved = {key: spark.conf.get(key, None) for key in QUERY_CONF}
        views: list[str] = []
        try:
            for key, value in QUERY_CONF.items():
                spark.conf.set(key, value)
            for step in plan:
                frame = spark.sql(step.sql, args={k: args[k] for k in step.params} or None)
                if step.view is None:
                    table = _arrow(frame)
                    break
                frame.localCheckpoint(eager=True).createOrReplaceTempView(step.view)
                views.append(step.view)
        except PySparkException as exc:
            raise _errors(exc, query) from exc
        finally:
            for view in views:
                spark.catalog.dropTempView(view)
            for key, value in saved.items():
                if value is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, value)
    return pl.from_arrow(table) if table.num_columns else pl.DataFrame()


__all__ = ["local_session", "register_views", "run"]
