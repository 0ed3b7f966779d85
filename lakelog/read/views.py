"""A DuckDB connection with one view per table spanning every run of a lake (read side: no torch).

Local lakes are read by DuckDB's own Parquet reader through glob patterns, so a view always sees
the part files present when a query runs (a run still being written included). Object-store
lakes are read through pyarrow's filesystem and registered as Arrow tables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from lakelog.errors import RunNotFoundError
from lakelog.lake.layout import PART_SUFFIX, RUN_FILE, TABLES, Lake
from lakelog.lake.schemas import empty_table

_PARTITIONING = pads.partitioning(pa.schema([("epoch", pa.int64()), ("rank", pa.int64())]), flavor="hive")
RUNS_COLUMNS = (
    "run",
    "name",
    "created",
    "finished",
    "status",
    "seed",
    "world_size",
    "duration_s",
    "config",
    "summary",
    "environment",
    "root",
)


def _run_of_file(table: str) -> str:
    return f"regexp_extract(filename, '([^/\\\\]+)[/\\\\]{table}[/\\\\]epoch=', 1)"


def _locate(target: Any, filesystem: pafs.FileSystem | None = None) -> list[tuple[Lake, list[str]]]:
    """Turn roots, run folders and Run objects into (lake, run names) pairs."""
    items = target if isinstance(target, list | tuple) else [target]
    located: list[tuple[Lake, list[str]]] = []
    for item in items:
        if hasattr(item, "lake") and hasattr(item, "name"):  # a lakelog Run
            located.append((item.lake, [item.name]))
            continue
        if isinstance(item, pafs.FileSystem):
            continue
        lake = Lake.open(item, filesystem=filesystem)
        if not lake.exists(lake.base):
            raise RunNotFoundError(f"root: {lake.root!r} does not exist")
        if lake.is_file(lake.join(RUN_FILE)):  # a run folder, not a root
            parent = os.path.dirname(lake.base) if lake.local else lake.base.rsplit("/", 1)[0]
            name = os.path.basename(lake.base) if lake.local else lake.base.rsplit("/", 1)[1]
            located.append((Lake(lake.root, lake.fs, parent, lake.local), [name]))
        else:
            located.append((lake, lake.run_names()))
    return located


def _runs_table(located: list[tuple[Lake, list[str]]]) -> pa.Table:
    rows = []
    for lake, names in located:
        for name in names:
            info = json.loads(lake.read_text(lake.join(name, RUN_FILE)))
            summary = info.get("summary") or {}
            rows.append(
                {
                    "run": name,
                    "name": info.get("name", name),
                    "created": info.get("created"),
                    "finished": info.get("finished"),
                    "status": info.get("status"),
                    "seed": info.get("seed"),
                    "world_size": info.get("world_size"),
                    "duration_s": summary.get("duration_s"),
                    "config": json.dumps(info.get("config") or {}),
                    "summary": json.dumps(summary),
                    "environment": json.dumps(info.get("environment") or {}),
                    "root": lake.root,
                }
            )
    schema = pa.schema(
        [
            ("run", pa.string()),
            ("name", pa.string()),
            ("created", pa.string()),
            ("finished", pa.string()),
            ("status", pa.string()),
            ("seed", pa.int64()),
            ("world_size", pa.int64()),
            ("duration_s", pa.float64()),
            ("config", pa.string()),
            ("summary", pa.string()),
            ("environment", pa.string()),
            ("root", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _local_view(con: duckdb.DuckDBPyConnection, table: str, located: list[tuple[Lake, list[str]]]) -> bool:
    patterns = [
        os.path.join(lake.base, name, table, "**", f"*{PART_SUFFIX}")
        for lake, names in located
        for name in names
        if os.path.isdir(os.path.join(lake.base, name, table))
    ]
    if not patterns:
        return False
    try:
        rel = con.read_parquet(patterns, hive_partitioning=True, union_by_name=True, filename=True)
    except duckdb.IOException:
        return False
    rel.project(f"* EXCLUDE (filename), {_run_of_file(table)} AS run").create_view(table, replace=True)
    return True


def _remote_view(con: duckdb.DuckDBPyConnection, table: str, located: list[tuple[Lake, list[str]]]) -> bool:
    parts = []
    for lake, names in located:
        for name in names:
            folder = lake.join(name, table)
            if not lake.exists(folder):
                continue
            files = [
                f.path
                for f in lake.fs.get_file_info(pafs.FileSelector(folder, recursive=True))
                if f.type == pafs.FileType.File and f.path.endswith(PART_SUFFIX)
            ]
            if not files:
                continue
            # Union the columns of every part file (as DuckDB's union_by_name does for local lakes)
            # and type the partition keys as the local views do.
            options = pads.FileSystemFactoryOptions(partition_base_dir=folder, partitioning=_PARTITIONING)
            factory = pads.FileSystemDatasetFactory(lake.fs, files, pads.ParquetFileFormat(), options)
            data = factory.finish(factory.inspect(promote_options="permissive")).to_table()
            parts.append(data.append_column("run", pa.array([name] * data.num_rows, pa.string())))
    if not parts:
        return False
    data = pa.concat_tables(parts, promote_options="permissive")
    con.register(f"_{table}_arrow", data)
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _{table}_arrow")
    return True


def connect(
    target: str | os.PathLike[str] | Sequence[Any] | Any = "runs",
    *,
    database: str = ":memory:",
    filesystem: pafs.FileSystem | None = None,
) -> duckdb.DuckDBPyConnection:
    """Views ``runs``, ``predictions``, ``scalars``, ``batches``, ``params``, ``holdout``… over every run.

    ``target`` is a lake root, a run folder, a Run, or a list of those. Every view has a ``run``
    column; tables that no run has written yet are empty views with the documented columns.
    ``filesystem`` (e.g. a configured ``pyarrow.fs.S3FileSystem``) reads roots given as paths in it,
    as ``lakelog.init(..., filesystem=...)`` writes them; object-store views are a snapshot taken now.
    """
    located = _locate(target, filesystem)
    con = duckdb.connect(database)
    con.register("_runs_arrow", _runs_table(located))
    con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs_arrow")
    for table in TABLES:
        local = all(lake.local for lake, _ in located)
        made = _local_view(con, table, located) if local else _remote_view(con, table, located)
        if not made:
            con.register(f"_{table}_empty", empty_table(table))
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _{table}_empty")
    return con
