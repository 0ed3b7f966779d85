"""Query time on a lake of 10,000+ small part files, before vs after ``lakelog compact``.

The lake: ``--runs`` runs x 2 ranks x 2 epochs x 3 tables (scalars, batches, predictions with a key
column), one part file per table and flush as the writer makes them (``--flushes`` per epoch and
rank), written with pyarrow in the writer's layout. A copy is compacted; then, interleaved
``--repeats`` times, the same questions are asked of both: connect plus a query, as ``lakelog sql``
and ``lakelog query`` do. Prints file counts, the compaction's own time, per-question medians, the
ratio, and the load average (the machine may be shared).

Usage: python benchmarks/bench_compact.py [--runs 4] [--flushes 210] [--repeats 5] [--dir DIR]
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import lakelog
from lakelog.lake.schemas import SCHEMAS

QUESTIONS = {
    "count scalars": "SELECT count(*) FROM scalars",
    "loss per run and epoch": "SELECT run, epoch, round(avg(value), 9) FROM scalars WHERE name = 'loss' GROUP BY ALL",
    "one run's late predictions": "SELECT count(*), round(avg(loss), 5) FROM predictions WHERE run = 'run1' AND step > 300",
    "batch order of a step range": "SELECT run, rank, list(ids_hash ORDER BY step) FROM batches "
    "WHERE step BETWEEN 100 AND 120 GROUP BY ALL",
}


def _part(table: str, step: int, rng: np.random.Generator) -> pa.Table:
    """One flush's part of ``table`` with every documented column (those left out here are null)."""
    data = _columns(table, step, rng)
    for field in SCHEMAS[table]:
        if field.name not in data.column_names:
            data = data.append_column(field, pa.nulls(data.num_rows, field.type))
    return data


def _columns(table: str, step: int, rng: np.random.Generator) -> pa.Table:
    if table == "scalars":
        return pa.table(
            {
                "step": pa.array([step] * 3, pa.int64()),
                "name": pa.array(["loss", "acc", "lr"]),
                "value": pa.array(rng.random(3)),
                "time": pa.array(np.full(3, step * 1_000_000), pa.int64()).cast(
                    SCHEMAS["scalars"].field("time").type
                ),
            }
        )
    if table == "batches":
        return pa.table(
            {
                "step": pa.array([step], pa.int64()),
                "batch_idx": pa.array([step], pa.int64()),
                "n_samples": pa.array([16], pa.int32()),
                "sample_ids": pa.array([[f"s{step}-{i}" for i in range(16)]]),
                "ids_hash": pa.array([f"{rng.integers(1 << 62):x}"]),
            }
        )
    n = 16
    return pa.table(
        {
            "step": pa.array(np.full(n, step), pa.int64()),
            "batch_idx": pa.array(np.full(n, step), pa.int64()),
            "sample_idx": pa.array(np.arange(n), pa.int32()),
            "label": pa.array(rng.integers(0, 10, n)),
            "prediction": pa.array(rng.integers(0, 10, n)),
            "logits": pa.array(list(rng.random((n, 10), dtype=np.float32)), pa.list_(pa.float32())),
            "loss": pa.array(rng.random(n, dtype=np.float32)),
            "image": pa.array([f"img{step}-{i}.png" for i in range(n)]),
        }
    )


def make_lake(root: Path, runs: int, flushes: int) -> int:
    rng = np.random.default_rng(0)
    files = 0
    for r in range(runs):
        run = root / f"run{r}"
        for rank in (0, 1):
            for epoch in (0, 1):
                for k in range(flushes):
                    step = epoch * flushes + k
                    for table in ("scalars", "batches", "predictions"):
                        folder = run / table / f"epoch={epoch}" / f"rank={rank}"
                        folder.mkdir(parents=True, exist_ok=True)
                        name = f"part-{step + 1:06d}-{step:06d}-bench-1-r{rank}-{r:04x}{k:04x}.parquet"
                        pq.write_table(_part(table, step, rng), folder / name, compression="zstd")
                        files += 1
        info = {"name": run.name, "status": "finished", "seed": r, "world_size": 2}
        (run / "run.json").write_text(json.dumps(info))
    return files


def _ask(root: Path, sql: str) -> tuple[float, float, object]:
    """Seconds for connect plus the query (as a command pays), seconds for the query alone, the rows."""
    started = time.perf_counter()
    con = lakelog.connect(root)
    connected = time.perf_counter()
    rows = con.execute(sql).fetchall()
    done = time.perf_counter()
    return done - started, done - connected, sorted(map(str, rows))


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--flushes", type=int, default=210)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="lakelog-bench-compact-"))
    before, after = base / "before", base / "after"
    print(f"load average before: {_load()}")
    try:
        if not before.exists():
            make_lake(before, args.runs, args.flushes)
        shutil.rmtree(after, ignore_errors=True)
        shutil.copytree(before, after)
        result = lakelog.compact(after)
        print(result)
        print(
            f"{'question':<30} {'connect+query before':>21} {'after':>8} {'ratio':>6} {'query before':>13} {'after':>8} {'ratio':>6}"
        )
        for label, sql in QUESTIONS.items():
            total = {"before": [], "after": []}
            query = {"before": [], "after": []}
            answers = {}
            for _ in range(args.repeats):  # interleaved: both lakes see the same machine load
                for side, root in (("before", before), ("after", after)):
                    t, q, answers[side] = _ask(root, sql)
                    total[side].append(t)
                    query[side].append(q)
                assert answers["before"] == answers["after"], f"{label}: answers differ after compaction"
            tb, ta = statistics.median(total["before"]), statistics.median(total["after"])
            qb, qa = statistics.median(query["before"]), statistics.median(query["after"])
            print(
                f"{label:<30} {tb:>20.3f}s {ta:>7.3f}s {tb / ta:>5.1f}x {qb:>12.3f}s {qa:>7.3f}s {qb / qa:>5.1f}x"
            )
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"load average after: {_load()}; cores: {os.cpu_count()} (answers identical before and after)")


if __name__ == "__main__":
    main()
