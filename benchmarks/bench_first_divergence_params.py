"""first_divergence and diff on two runs with a large params table: with per-capture digests vs without.

Two runs of ``--steps`` captures of ``--tensors`` tensors each (500 x 2000 = 1M params rows per run,
2M in all), written with pyarrow in the lake layout; run B's first three tensors move at
three quarters of the steps. The same runs are written twice: with a ``param_digests`` row per capture
(what ``run.watch`` writes) and without (a lake from before the digests), so first_divergence reads
every tensor row in one and one capture's rows in the other. Each measurement runs in its own process
(its peak RSS is the figure), interleaved across ``--repeat`` rounds; medians are printed with the load
average, as ratios digests / no digests. The targets: diff on the 2M-row table <= 0.5 s and <= 300 MB.

Usage: python benchmarks/bench_first_divergence_params.py [--steps 500] [--tensors 2000] [--repeat 3]
       [--dir /tmp/lakelog-bench-params] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

CHILD = """
import json, resource, sys, time
import lakelog
from lakelog.read.diff import diff_runs
root, what = sys.argv[1], sys.argv[2]
con = lakelog.connect(root)
t = time.perf_counter()
if what == "first_divergence":
    df = lakelog.query("first_divergence", con=con, run_a="a", run_b="b")
    step = df.filter(df["is_first"])["first_step"][0]
else:
    step = diff_runs(con, "a", "b").first_step
seconds = time.perf_counter() - t
print(json.dumps({"s": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "step": step}))
"""


def _hexes(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.array([f"{x:032x}" for x in rng.integers(0, 2**62, shape[0] * shape[1])]).reshape(shape)


def generate(root: Path, steps: int, tensors: int, digests: bool) -> int:
    """Runs a and b under ``root``; returns the step where they part."""
    from lakelog.lake import schemas
    from lakelog.lake.layout import part_file_name

    diverge = (3 * steps) // 4
    rng = np.random.default_rng(0)
    names = np.array([f"layer{i // 2}.{'bias' if i % 2 else 'weight'}" for i in range(tensors)])
    weights, grads, norms = (
        _hexes(rng, (steps, tensors)),
        _hexes(rng, (steps, tensors)),
        rng.random((steps, tensors)),
    )
    for run in ("a", "b"):
        w, nm = weights.copy(), norms.copy()
        if run == "b":
            w[diverge:, :3] = np.char.add("ffff", w[diverge:, :3].astype("U28"))
            nm[diverge:, :3] += 1e-3
        n = steps * tensors
        cols = {f.name: pa.nulls(n, f.type) for f in schemas.PARAMS}
        cols.update(
            step=pa.array(np.repeat(np.arange(steps, dtype=np.int64), tensors)),
            name=pa.array(np.tile(names, steps)),
            kind=pa.array(np.full(n, "param")),
            group=pa.array(np.full(n, "g")),
            numel=pa.array(np.full(n, 100, np.int64)),
            norm=pa.array(nm.reshape(-1)),
            grad_norm=pa.array(nm.reshape(-1)),
            fingerprint=pa.array(w.reshape(-1)),
            grad_fingerprint=pa.array(grads.reshape(-1)),
        )
        tables = {"params": pa.table(cols, schema=schemas.PARAMS)}
        tables["scalars"] = pa.table(
            {
                "step": pa.array(np.arange(steps, dtype=np.int64)),
                "name": pa.array(["loss"] * steps),
                "value": pa.array(np.ones(steps)),
                "time": pa.nulls(steps, schemas.TIME),
            },
            schema=schemas.SCALARS,
        )
        if digests:
            digest = [xxhash.xxh3_128_hexdigest("\n".join(row).encode()) for row in w]
            tables["param_digests"] = pa.table(
                {
                    "step": pa.array(np.arange(steps, dtype=np.int64)),
                    "capture": pa.array(["step"] * steps),
                    "n_tensors": pa.array(np.full(steps, tensors, np.int64)),
                    "weights_digest": pa.array(digest),
                    "grads_digest": pa.array(
                        [xxhash.xxh3_128_hexdigest("\n".join(r).encode()) for r in grads]
                    ),
                    "buffers_digest": pa.nulls(steps, pa.string()),
                    "optim_digest": pa.nulls(steps, pa.string()),
                },
                schema=schemas.PARAM_DIGESTS,
            )
        info = {"name": run, "created": "2026-01-01T00:00:00+00:00", "status": "finished", "config": {},
                "seed": 0, "world_size": 1, "environment": {}, "summary": {}}  # fmt: skip
        (root / run).mkdir(parents=True)
        (root / run / "run.json").write_text(json.dumps(info))
        for table, data in tables.items():
            folder = root / run / table / "epoch=0" / "rank=0"
            folder.mkdir(parents=True)
            pq.write_table(data, folder / part_file_name(0), compression="zstd", row_group_size=250_000)
    return diverge


def measure(root: Path, what: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), what], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--tensors", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lakelog-bench-params"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    lakes = {"digests": args.dir / "digests", "no digests": args.dir / "plain"}
    marker = args.dir / "shape.json"
    t = time.perf_counter()
    shape = {"steps": args.steps, "tensors": args.tensors}
    if not (args.reuse and marker.exists() and json.loads(marker.read_text())["shape"] == shape):
        shutil.rmtree(args.dir, ignore_errors=True)
        for label, root in lakes.items():
            diverge = generate(root, args.steps, args.tensors, label == "digests")
        marker.write_text(json.dumps({"shape": shape, "diverge": diverge}))
    diverge = json.loads(marker.read_text())["diverge"]
    rows = 2 * args.steps * args.tensors
    print(
        f"data: 2 runs, {rows:,} params rows in all, ready in {time.perf_counter() - t:.0f}s; part at {diverge}"
    )
    results: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeat):  # interleaved: each round measures every case once
        for what in ("first_divergence", "diff"):
            for label, root in lakes.items():
                got = measure(root, what)
                assert got["step"] == diverge, (label, what, got)
                results.setdefault((what, label), []).append(got)
    print(f"\n{'what':<18}{'lake':<12}{'median s':>10}{'median peak RSS MB':>20}")
    med = {}
    for (what, label), runs in results.items():
        med[(what, label)] = (
            statistics.median(r["s"] for r in runs),
            statistics.median(r["rss_mb"] for r in runs),
        )
        print(f"{what:<18}{label:<12}{med[(what, label)][0]:>10.3f}{med[(what, label)][1]:>20.0f}")
    for what in ("first_divergence", "diff"):
        (s_d, m_d), (s_p, m_p) = med[(what, "digests")], med[(what, "no digests")]
        print(f"{what}: digests take {s_d / s_p:.2f}x the time and {m_d / m_p:.2f}x the memory of no digests")
    print(
        f"(targets for diff: <= 0.5 s, <= 300 MB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
