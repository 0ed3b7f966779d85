"""``lakelog.connect`` at 10, 100 and 1,000 runs: one scan per table vs the previous per-run globs.

Each run has the tables a short training run writes (scalars, batches, predictions with a key
column, pred_digests, params) in one partition, ``--parts`` part files each, written with pyarrow
in the writer's layout (hive folders, ``part-<seq>-…`` names, run.json). Side by side, interleaved,
``--repeats`` times each:

- lakelog now: ``lakelog.connect(root)`` (every run's run.json, folder names, claims and commits;
  one ``read_parquet`` view per table over all runs, bound to one run's files), then a first query
  filtered on one run (which lists that table in every run, with the cheap checks of each part file);
- the previous way: a glob per run and table handed to one ``read_parquet(..., union_by_name)``
  (every file's schema read at connect), as ``connect`` did before, then the same query.

Prints medians of connect, of the first query, and of both together, the ratios and the load
average (the machine may be shared). "now" also pays for what the previous way did not do: the
query library's shared macros, the runs' claims and commits (crashed ranks are cut at their last
committed step) and the cheap checks of every part file the query reads. The run folders hold what
lakelog's writer leaves (run.json, ``_writers``, ``_commits``, five tables).

Usage: python benchmarks/bench_connect.py [--runs 10 100 1000] [--parts 2] [--repeats 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import lakelog
from lakelog.lake.schemas import SCHEMAS

TABLES = ("scalars", "batches", "predictions", "pred_digests", "params")


def _table(name: str, step: int) -> pa.Table:
    schema = SCHEMAS[name]
    if name == "predictions":
        schema = schema.append(pa.field("image", pa.string()))
    n = 8
    columns = {}
    for field in schema:
        if field.name == "step":
            columns[field.name] = pa.array(np.full(n, step), field.type)
        elif pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type):
            columns[field.name] = pa.array([["a", "b"]] * n, field.type)
        elif pa.types.is_list(field.type):
            columns[field.name] = pa.array([[0.5, 0.25]] * n, field.type)
        elif pa.types.is_string(field.type):
            columns[field.name] = pa.array([f"v{i}" for i in range(n)], field.type)
        elif pa.types.is_timestamp(field.type):
            columns[field.name] = pa.array(np.arange(n), pa.int64()).cast(field.type)
        elif pa.types.is_boolean(field.type):
            columns[field.name] = pa.array([True] * n)
        else:
            columns[field.name] = pa.array(np.arange(n), pa.int64()).cast(field.type)
    return pa.table(columns, schema=schema)


def make_lake(root: Path, runs: int, parts: int) -> None:
    samples = {t: [_table(t, k) for k in range(parts)] for t in TABLES}
    for i in range(runs):
        run = root / f"run{i:04d}"
        for table in TABLES:
            folder = run / table / "epoch=0" / "rank=0"
            folder.mkdir(parents=True)
            for k, data in enumerate(samples[table]):
                pq.write_table(data, folder / f"part-{k + 1:06d}-{k:06d}-bench-1-r0-{i:08x}.parquet")
        info = {"name": run.name, "status": "finished", "seed": i, "world_size": 1, "config": {"lr": 0.1}}
        (run / "run.json").write_text(json.dumps(info))
        # what a finished writer leaves: its claim folder (lock file, claim released) and its final commit
        (run / "_writers").mkdir()
        (run / "_writers" / ".lock").write_bytes(b"")
        (run / "_commits").mkdir()
        commit = {"step": parts - 1, "seq": parts, "final": True}
        (run / "_commits" / "rank=0.json").write_text(json.dumps(commit))


def previous_connect(root: Path) -> duckdb.DuckDBPyConnection:
    """The connect before this change: per-run glob patterns, every file's schema read at connect."""
    con = duckdb.connect()
    names = sorted(p.name for p in root.iterdir() if (p / "run.json").is_file())
    for name in names:
        json.loads((root / name / "run.json").read_text())
    for table in TABLES:
        patterns = [str(root / n / table / "**" / "*.parquet") for n in names if (root / n / table).is_dir()]
        rel = con.read_parquet(patterns, hive_partitioning=True, union_by_name=True, filename=True)
        rel.project(
            f"* EXCLUDE (filename), regexp_extract(filename, '([^/]+)/{table}/epoch=', 1) AS run"
        ).create_view(table)
    return con


def _timed(connect, root: Path, query: str) -> tuple[float, float]:
    """Seconds to connect, then seconds for the first query on that connection."""
    started = time.perf_counter()
    con = connect(root)
    connected = time.perf_counter()
    con.execute(query).fetchall()
    return connected - started, time.perf_counter() - connected


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="lakelog-bench-connect-"))
    query = "SELECT count(*) FROM scalars WHERE run = 'run0003'"
    print(f"load average before: {_load()}")
    print(
        f"{'runs':>6} {'files':>7} {'connect now':>12} {'previous':>10} {'ratio':>6} {'query now':>10} "
        f"{'previous':>10} {'both now':>9} {'previous':>10} {'ratio':>6}"
    )
    try:
        for runs in args.runs:
            root = base / f"lake{runs}"
            if not root.exists():
                make_lake(root, runs, args.parts)
            files = runs * len(TABLES) * args.parts
            now, before, q_now, q_before = [], [], [], []
            for _ in range(args.repeats):  # interleaved: both ways see the same machine load
                c, q = _timed(lakelog.connect, root, query)
                now.append(c)
                q_now.append(q)
                c, q = _timed(previous_connect, root, query)
                before.append(c)
                q_before.append(q)
            m_now, m_before = statistics.median(now), statistics.median(before)
            t_now = statistics.median(c + q for c, q in zip(now, q_now, strict=True))
            t_before = statistics.median(c + q for c, q in zip(before, q_before, strict=True))
            print(
                f"{runs:>6} {files:>7} {m_now:>11.3f}s {m_before:>9.3f}s {m_before / m_now:>5.1f}x "
                f"{statistics.median(q_now):>9.3f}s {statistics.median(q_before):>9.3f}s "
                f"{t_now:>8.3f}s {t_before:>9.3f}s {t_before / t_now:>5.1f}x"
            )
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"load average after: {_load()}; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
