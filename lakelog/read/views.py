"""A DuckDB connection with one view per table spanning every run of a lake (read side: no torch).

``connect`` reads the named runs' run.json files and folder names (``read.scan``: damaged files left
out with a warning, run names never treated as patterns) and makes one scan per table over all runs:
a local table is one ``read_parquet`` over the listed files, with ``epoch`` and ``rank`` from the
hive folders and ``run`` from the path, so a filter on any of the three skips the other files unread.
The file list of a local view is a Python function DuckDB calls at each query (``LiveFiles``): a
table's files are listed when a query first reads it (a connection that only reads ``scalars`` never
lists the other tables), runs being written are listed again at each query, other runs only when
their folder changed (a resume, a compaction), so a connection held open sees new parts and never a
part a compaction replaced. Object-store lakes are read through pyarrow's filesystem and registered
as Arrow tables: a snapshot taken at ``connect``.

Columns: every documented column of a table is there (NULL where files lack it). A local live view
takes a table's columns from its first file (every lakelog part of a table has the same columns);
predictions, whose key columns vary by run, match columns per file. Snapshot views (read-only and
object-store connections) match columns per file up to ``UNION_BY_NAME_FILES`` files.

What a connection allows: by default it is a full in-memory DuckDB (the caller's own process, so
``COPY``, ``ATTACH`` and reads of any file work as in ``duckdb.connect()``). ``read_only=True`` (what
``lakelog sql`` uses) locks it to the lake: only the listed part files can be read, nothing can be
attached, installed or loaded, other files cannot be written, and the settings cannot be changed
back (``read.sandbox``; ``lakelog sql`` also refuses every statement but queries). Its views are a
snapshot of the files listed at ``connect``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lakelog.lake.layout import TABLES, Lake
from lakelog.lake.schemas import empty_of, reader_schema, sql_type
from lakelog.read import macros, sandbox
from lakelog.read.scan import (
    RunEntry,
    Scan,
    add_cuts,
    folder_names,
    list_table,
    locate,
    read_runs,
    refresh_state,
    scan_lake,
    signature,
)

RUNS_SCHEMA = pa.schema(
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
        ("watch", pa.string()),
        ("committed_step", pa.int64()),
        ("root", pa.string()),
    ]
)
RUNS_COLUMNS = tuple(RUNS_SCHEMA.names)
"""The ``runs`` view: one row per run; ``status`` is ``crashed`` for a run whose writer died, and
``damaged`` for a run whose run.json cannot be read; ``committed_step`` is the last step every rank
committed (None when unknown)."""
CUTS_SCHEMA = pa.schema([("run", pa.string()), ("rank", pa.int64()), ("step", pa.int64())])
"""Where each unfinished rank's committed rows end (rows beyond are hidden)."""

UNION_BY_NAME_FILES = 64
"""Snapshot views of tables of up to this many files match columns per file (``union_by_name``);
larger ones take their columns from one file, as every lakelog part of a table has the same columns
(predictions, whose key columns vary by run, are always matched per file)."""

_PATH_PARTITION = re.compile(r"[/\\](epoch|rank)=(-?\d+)(?=[/\\])")


def _run_row(entry: RunEntry) -> dict[str, Any]:
    info = entry.info
    state = entry.state
    if info is None:
        return {"run": entry.name, "name": entry.name, "status": "damaged", "root": entry.lake.root}
    summary = info.get("summary") or {}
    status = state.status if state is not None else info.get("status")
    return {
        "run": entry.name,
        "name": info.get("name") or entry.name,
        "created": info.get("created"),
        "finished": info.get("finished"),
        "status": status,
        "seed": info.get("seed"),
        "world_size": info.get("world_size"),
        "duration_s": summary.get("duration_s"),
        "config": json.dumps(info.get("config") or {}),
        "summary": json.dumps(summary),
        "environment": json.dumps(info.get("environment") or {}),
        "watch": json.dumps(info.get("watch") or {}),
        "committed_step": state.last_committed_step if state is not None else None,
        "root": entry.lake.root,
    }


def arrow_from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Python rows as an Arrow table of ``schema``, converted by polars: pyarrow's own converters
    (``pa.array``, ``from_pylist``) import pandas where it is installed, ~0.15 s and ~40 MB that every
    read command would pay for a few rows."""
    columns = pl.from_arrow(empty_of(schema)).schema
    return pl.DataFrame(rows, schema=columns, orient="row").to_arrow().cast(schema)


def runs_table(source: Scan | list[tuple[Lake, list[str]]]) -> pa.Table:
    """The ``runs`` view's rows as an Arrow table, from a scan or from located runs (any engine's view)."""
    scan = source if isinstance(source, Scan) else scan_lake(source, check_files=False)
    return arrow_from_rows([_run_row(e) for e in scan.runs], RUNS_SCHEMA)


def run_of_file(table: str) -> str:
    """SQL for the run a part file belongs to, from its path (staged compaction output included)."""
    sep = "[/\\\\]"
    return (
        f"regexp_extract(filename, '([^/\\\\]+){sep}(?:_compact{sep}[^/\\\\]+{sep})?{table}{sep}epoch=', 1)"
    )


def _cut(source: str, scan: Scan) -> str:
    """Hide rows beyond each unfinished rank's committed step (a flush that never completed)."""
    if not scan.cuts:
        return source
    return (
        f"SELECT t.* FROM ({source}) t ANTI JOIN _lakelog_cuts c "
        "ON c.run = t.run AND c.rank = t.rank AND t.step > c.step"
    )


FOOTER_CHECK_FILES = 64
"""A listing that brings up to this many new files of a table also decodes their Parquet footers (a
damaged footer behind valid magic bytes is left out with a warning); larger ones get the cheap checks
only, and a file damaged inside fails the query that reads it (``lakelog check`` decodes every footer)."""


@dataclass
class _Listing:
    """What is known of one run's folder: its signature when listed, its sub-folders, its tables' files."""

    signature: tuple[int, int] | None
    present: set[str]
    tables: dict[str, list[str]] = field(default_factory=dict)


class LiveFiles:
    """The part files of each table now, listed table by table when a query first reads the table.

    ``connect`` reads each run's folder names, claims and commits (its status and cuts), not its
    tables; a view is created over one run's files of the table (what binds its columns). The first
    query of a table lists that table in every run; later queries list again only runs being written
    and runs whose folder changed (``scan.signature``: a resume, a compaction), so a view sees new
    parts and never a part a compaction replaced. A query that reads one table never lists the others.
    """

    def __init__(self, scan: Scan, *, check_files: bool = True) -> None:
        self.scan = scan
        self.check_files = check_files
        self._lock = threading.Lock()
        self._runs: list[_Listing] = []
        for entry in scan.runs:
            listing = _Listing(signature(entry), folder_names(entry, scan))
            refresh_state(entry, listing.present)
            self._runs.append(listing)
        self.connecting = True
        self.excluded: set[str] = set()

    def _live(self, entry: RunEntry) -> bool:
        status = entry.state.status if entry.state is not None else (entry.info or {}).get("status")
        return status == "running"

    def has(self, table: str) -> bool:
        """Whether any run's folder has ``table``."""
        return any(table in listing.present for listing in self._runs)

    def files(self, table: str) -> list[str]:
        """The files of ``table`` now (while ``connect`` creates the views: one run's, to bind the view)."""
        with self._lock:
            fresh: list[str] = []
            for entry, listing in zip(self.scan.runs, self._runs, strict=True):
                if not self.connecting:
                    now = signature(entry)
                    if now != listing.signature or self._live(entry):
                        listing.signature, listing.present = now, folder_names(entry, self.scan)
                        listing.tables.clear()
                        refresh_state(entry, listing.present)
                if table not in listing.tables:
                    listing.tables[table] = list_table(
                        entry, table, listing.present, self.scan, check_files=self.check_files
                    )
                    fresh.extend(listing.tables[table])
                if self.connecting and listing.tables[table]:
                    break
            if self.check_files and 0 < len(fresh) <= FOOTER_CHECK_FILES:
                self.excluded.update(_undecodable(fresh, self.scan))
            return self.listed(table)

    def listed(self, table: str) -> list[str]:
        """The files of ``table`` as listed last (no new listing), less those found undecodable."""
        return [p for listing in self._runs for p in listing.tables.get(table, ()) if p not in self.excluded]


def _local_view(con: duckdb.DuckDBPyConnection, table: str, scan: Scan, live: LiveFiles | None) -> bool:
    """One read_parquet over every run's files of ``table``; False when no run has any."""
    if live is None:
        files = scan.files[table]
    elif live.has(table):
        files = live.files(table)
    else:
        return False
    if not files:
        return False
    union = table == "predictions" or (live is None and len(files) <= UNION_BY_NAME_FILES)
    options = (
        "filename = true, hive_partitioning = true, hive_types = {'epoch': 'BIGINT', 'rank': 'BIGINT'}, "
        f"union_by_name = {str(union).lower()}"
    )
    if live is not None:  # the file list is taken again at each query
        listing = f"lakelog_files('{table}')"
        options += ", allow_empty = true"
    else:
        con.execute(f"SET VARIABLE lakelog_files_{table} = $files", {"files": files})
        listing = f"getvariable('lakelog_files_{table}')"
    source = (
        f"SELECT * EXCLUDE (filename), {run_of_file(table)} AS run FROM read_parquet({listing}, {options})"
    )
    view = f"CREATE OR REPLACE VIEW {table} AS {_with_contract(con, table, _cut(source, scan))}"
    try:
        con.execute(view)
    except duckdb.Error:  # a footer that passed the cheap checks does not decode: find it, leave it out
        bad = _undecodable(files, scan)
        if not bad:
            raise
        if live is not None:
            live.excluded.update(bad)
        else:
            scan.files[table] = [p for p in files if p not in bad]
            con.execute(f"SET VARIABLE lakelog_files_{table} = $files", {"files": scan.files[table]})
        if len(bad) == len(files):
            return False
        con.execute(view)
    return True


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Another connection to ``con``'s database (for a query in another thread) that reads the same
    views: ``con.cursor()``, with ``con``'s variables copied (a snapshot view's file list is one, and
    variables belong to a connection). The database's settings, a read-only lock included, hold."""
    other = con.cursor()
    for (name,) in con.execute("SELECT name FROM duckdb_variables()").fetchall():
        ((value,),) = con.execute("SELECT getvariable($name)", {"name": name}).fetchall()
        quoted = name.replace('"', '""')
        other.execute(f'SET VARIABLE "{quoted}" = $value', {"value": value})
    return other


def _undecodable(files: list[str], scan: Scan) -> set[str]:
    """The files whose Parquet footer does not decode (each reported to ``scan``)."""
    bad = set()
    for path in files:
        try:
            pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            scan.problem(path, f"corrupt footer ({str(exc).splitlines()[0]})")
            bad.add(path)
    return bad


def store(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> None:
    """``data`` as the table ``name`` of the connection's database, not a registration of this
    connection: cursors of ``con`` (``con.cursor()``, e.g. queries run side by side) see it too."""
    con.register("_lakelog_arrow", data)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _lakelog_arrow")
    finally:
        con.unregister("_lakelog_arrow")


def store_empty(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """The empty table ``_<table>_empty`` with ``table``'s reader-side columns, as ``store`` makes it
    but created from its column types (a quarter of the time of copying an empty Arrow table)."""
    schema = reader_schema(table)
    types = [sql_type(f.type) for f in schema]
    if None in types:
        store(con, f"_{table}_empty", empty_of(schema))
        return
    columns = ", ".join(f'"{f.name}" {kind}' for f, kind in zip(schema, types, strict=True))
    con.execute(f"CREATE OR REPLACE TABLE _{table}_empty ({columns})")


def _with_contract(con: duckdb.DuckDBPyConnection, table: str, source: str) -> str:
    """``source`` with every documented column of ``table``: one its files lack reads as NULL."""
    store_empty(con, table)
    return f"SELECT * FROM ({source}) UNION ALL BY NAME SELECT * FROM _{table}_empty"


def _read_remote(fs: pafs.FileSystem, path: str, run: str) -> pa.Table:
    data = pq.read_table(path, filesystem=fs)
    keys = dict(_PATH_PARTITION.findall(path))
    n = data.num_rows
    for key in ("epoch", "rank"):
        data = data.append_column(key, pa.array([int(keys.get(key, 0))] * n, pa.int64()))
    return data.append_column("run", pa.array([run] * n, pa.string()))


def _remote_view(con: duckdb.DuckDBPyConnection, table: str, scan: Scan) -> bool:
    jobs = []
    for entry in scan.runs:
        prefix = entry.folder + ("/" if not entry.lake.local else os.sep)
        jobs.extend((entry.lake.fs, p, entry.name) for p in scan.files[table] if p.startswith(prefix))
    if not jobs:
        return False

    def read(job: tuple[pafs.FileSystem, str, str]) -> pa.Table | None:
        try:
            return _read_remote(*job)
        except (OSError, pa.ArrowException) as exc:
            scan.problem(job[1], f"unreadable Parquet ({str(exc).splitlines()[0]})")
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = [t for t in pool.map(read, jobs) if t is not None]
    if not parts:
        return False
    # registered, not stored: a copy into the database would hold the whole table twice while it is
    # made; cursors of ``con`` do not see it (``beside.Beside`` answers such a connection on itself)
    con.register(f"_{table}_arrow", pa.concat_tables(parts, promote_options="permissive"))
    source = _cut(f"SELECT * FROM _{table}_arrow", scan)
    con.execute(f"CREATE OR REPLACE VIEW {table} AS {_with_contract(con, table, source)}")
    return True


def connect(
    target: str | os.PathLike[str] | Sequence[Any] | Any = "runs",
    *,
    database: str = ":memory:",
    filesystem: pafs.FileSystem | None = None,
    read_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Views ``runs``, ``predictions``, ``scalars``, ``batches``, ``params``, ``holdout``… over every run.

    ``target`` is a lake root, a run folder, a Run, or a list of those. Every view has a ``run``
    column; tables that no run has written yet are empty views with the documented columns. Part
    files and run.json files that cannot be read are left out with one warning each (``lakelog
    check`` lists them). ``filesystem`` (e.g. a configured ``pyarrow.fs.S3FileSystem``) reads roots
    given as paths in it, as ``lakelog.init(..., filesystem=...)`` writes them. ``read_only=True``
    locks the connection to reading the lake (see the module docstring). Raises ``RunNotFoundError``
    for a missing root and ``InvalidArgumentError`` for a root that is a file.
    """
    located = locate(target, filesystem)
    local = all(lake.local for lake, _ in located)
    con = duckdb.connect(database)
    con.execute("SET parquet_can_have_nan = true")  # NaN outside a file's min/max is still found by isnan
    con.execute("SET parquet_metadata_cache = true")  # part files never change: each footer is read once
    if local and not read_only:  # live views: the file list is taken again at each query
        scan = Scan()
        scan.runs = read_runs(located, scan)
        live: LiveFiles | None = LiveFiles(scan)
        add_cuts(scan)
        con.create_function("lakelog_files", live.files, ["VARCHAR"], "VARCHAR[]", side_effects=True)
    else:
        scan, live = scan_lake(located), None
    store(con, "_runs_arrow", runs_table(scan))
    con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs_arrow")
    if scan.cuts:
        rows = [{"run": run, "rank": rank, "step": step} for run, rank, step in scan.cuts]
        store(con, "_lakelog_cuts", arrow_from_rows(rows, CUTS_SCHEMA))
    for table in TABLES:  # empty views first: creating a macro binds the views it uses, cheap on these
        store_empty(con, table)
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _{table}_empty")
    macros.install(con)  # the query library's shared macros (queries/_*.sql), before any lock
    for table in TABLES:  # a macro binds its views again at each use, so it reads these
        if local:
            _local_view(con, table, scan, live)
        else:
            _remote_view(con, table, scan)
    if live is not None:  # from now on each query lists again what may have changed
        live.connecting = False
    if read_only:
        sandbox.lock(con, [p for table in TABLES for p in scan.files[table]] if local else [])
    return con
