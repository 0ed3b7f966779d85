"""first_divergence on two runs of N prediction rows vs the seeds' pandas merge and a plain DuckDB join.

Two runs of ``--rows`` prediction rows each (batch 256, 2 classes, two file-name keys, as in the
seeds' batch logger), identical until three quarters of the way in, where run B's logits move by
0.01. The lakes are written in bulk through lakelog's own PartWriter (its hive partitions, part-file
size and Parquet encodings), with a pred_digests row per batch computed by lakelog.records' own
digest functions; the seeds' CSVs are written with pyarrow's CSV writer. Then, side by side:

- lakelog: ``lakelog.query("first_divergence", ...)`` (exact, and with tol=1e-3);
- pandas, the seeds' way: read both CSVs, merge on batch_idx/epoch/sample_idx, filter by tolerance;
- a plain DuckDB join of the two prediction tables on step/batch_idx/sample_idx, filtered by tolerance.

Usage: python benchmarks/bench_first_divergence.py [--rows 10000000] [--dir /tmp/lakelog-bench] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

BATCH = 256
CLASSES = 2
EPOCHS = 4
CHUNK_BATCHES = 64  # batches handed to the writer at once (it cuts part files at its own max_rows)
SHIFT = 0.01
TOL = 1e-3


def _names(ids: np.ndarray, suffix: str) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), 7, "0")
    return pc.binary_join_element_wise(text, pa.scalar(suffix), "")


def _digests(logits: np.ndarray, labels: np.ndarray, keys: dict[str, list], steps: np.ndarray,
             batch_idx: np.ndarray, shared: list | None = None) -> tuple[dict, list]:
    """One pred_digests row per batch, with lakelog.records' own digest functions.

    ``shared`` reuses the labels/keys digests of a run that fed the same batches (only logits differ).
    """
    from lakelog import records  # imports torch; only the data generation needs it

    n_batches = len(steps)
    if shared is None:
        shared = []
        for b in range(n_batches):
            lo, hi = b * BATCH, (b + 1) * BATCH
            keys_text = "|".join(f"{k}={records._values_digest(v[lo:hi])}" for k, v in sorted(keys.items()))
            shared.append((records._values_digest(labels[lo:hi]), records._digest(keys_text.encode())))
    logits_digests = [
        records._digest(np.ascontiguousarray(logits[b * BATCH:(b + 1) * BATCH]).tobytes() + f"{BATCH}x{CLASSES}".encode())
        for b in range(n_batches)
    ]
    rows = {
        "step": steps, "batch_idx": batch_idx, "n_samples": np.full(n_batches, BATCH, np.int32),
        "logits_digest": logits_digests, "labels_digest": [s[0] for s in shared], "keys_digest": [s[1] for s in shared],
    }
    return rows, shared


def generate(root: Path, csv_dir: Path, rows: int) -> dict[str, int]:
    """Write runs a and b through lakelog's own PartWriter, and the seed-style CSVs.

    Run b's logits move by SHIFT from three quarters of the steps on; everything else is equal.
    """
    from lakelog.layout import Lake
    from lakelog.writer import PartWriter

    n_batches = rows // BATCH
    per_epoch = n_batches // EPOCHS
    diverge = (3 * n_batches) // 4
    rng = np.random.default_rng(0)
    dataset = per_epoch * BATCH
    lake = Lake.open(root)
    writers, csv_writers = {}, {}
    for run in ("a", "b"):
        (root / run).mkdir(parents=True)
        info = {"name": run, "created": "2026-01-01T00:00:00+00:00", "status": "finished", "config": {"batch": BATCH},
                "seed": 0, "world_size": 1, "environment": {}, "summary": {}}
        (root / run / "run.json").write_text(json.dumps(info))
        writers[run] = PartWriter(lake, str(root / run), 0)
        csv_writers[run] = None
    for epoch in range(EPOCHS):
        first = epoch * per_epoch
        last = n_batches if epoch == EPOCHS - 1 else first + per_epoch
        order = rng.permutation(dataset)
        for start in range(first, last, CHUNK_BATCHES):
            stop = min(start + CHUNK_BATCHES, last)
            nb = stop - start
            n = nb * BATCH
            steps = np.arange(start, stop, dtype=np.int64)
            batch_idx = steps - first
            pair = order[np.arange((start - first) * BATCH, (stop - first) * BATCH) % dataset]
            key_arrays = {"image1": _names(pair, "-01.jpg"), "image2": _names(pair, "-02.jpg")}
            keys = {k: v.to_pylist() for k, v in key_arrays.items()}
            labels = rng.integers(0, 2, n, dtype=np.int64)
            logits_a = rng.standard_normal((n, CLASSES), dtype=np.float32)
            logits_b = logits_a.copy()
            logits_b[np.repeat(steps >= diverge, BATCH)] += np.float32(SHIFT)
            shared = None
            for run, logits in (("a", logits_a), ("b", logits_b)):
                predictions = {
                    "step": np.repeat(steps, BATCH), "batch_idx": np.repeat(batch_idx, BATCH),
                    "sample_idx": np.tile(np.arange(BATCH, dtype=np.int32), nb), "label": labels,
                    "prediction": logits.argmax(axis=1).astype(np.int64), "logits": logits,
                    "loss": [None] * n, **keys,
                }
                digests, shared = _digests(logits, labels, keys, steps, batch_idx, shared)
                writers[run].submit(epoch, lambda p=predictions, d=digests: {"predictions": p, "pred_digests": d})
                csv = pa.table({
                    "batch_idx": np.repeat(batch_idx + 1, BATCH), "epoch": np.full(n, epoch, np.int64),
                    "sample_idx": predictions["sample_idx"], **key_arrays,
                    "winner": labels, "logit0": logits[:, 0], "logit1": logits[:, 1],
                })
                if csv_writers[run] is None:
                    csv_writers[run] = pacsv.CSVWriter(csv_dir / f"{run}.csv", csv.schema)
                csv_writers[run].write_table(csv)
    for run in ("a", "b"):
        writers[run].close()
        csv_writers[run].close()
    return {"batches": n_batches, "diverge_step": diverge, "per_epoch": per_epoch}


def pandas_way(csv_dir: Path, tol: float) -> tuple[int, int]:
    """The seeds' recipe: read both CSVs, merge on batch/epoch/sample, filter by tolerance."""
    import pandas as pd

    df_a = pd.read_csv(csv_dir / "a.csv")
    df_b = pd.read_csv(csv_dir / "b.csv")
    merged = df_a.merge(df_b, on=["batch_idx", "epoch", "sample_idx"], suffixes=("_a", "_b"))
    merged["logit0_diff"] = (merged["logit0_a"] - merged["logit0_b"]).abs()
    merged["logit1_diff"] = (merged["logit1_a"] - merged["logit1_b"]).abs()
    diverged = merged[(merged["logit0_diff"] > tol) | (merged["logit1_diff"] > tol)]
    first = diverged.sort_values(["epoch", "batch_idx", "sample_idx"]).iloc[0]
    return int(first["epoch"]), int(first["batch_idx"]) - 1


PLAIN_JOIN = """
SELECT a.epoch, a.step, a.batch_idx, a.sample_idx
FROM predictions a JOIN predictions b USING (step, batch_idx, sample_idx)
WHERE a.run = $run_a AND b.run = $run_b
  AND list_max(list_transform(range(1, len(a.logits) + 1), lambda i: abs(a.logits[i] - b.logits[i]))) > $tol
ORDER BY a.step, a.sample_idx LIMIT 1
"""


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="prediction rows per run (default 10M)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lakelog-bench"), help="scratch folder")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of the fast methods (median)")
    parser.add_argument("--skip-pandas", action="store_true", help="leave out the pandas way (slow, memory-hungry)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args()

    import lakelog

    root, csv_dir = args.dir / "runs", args.dir / "csv"
    shutil.rmtree(args.dir, ignore_errors=True)
    csv_dir.mkdir(parents=True)
    t = time.perf_counter()
    shape = generate(root, csv_dir, args.rows)
    print(f"generated 2 x {shape['batches'] * BATCH:,} rows in {time.perf_counter() - t:.1f}s "
          f"(lake {sum(f.stat().st_size for f in root.rglob('*.parquet')) / 1e6:.0f} MB, "
          f"CSV {sum(f.stat().st_size for f in csv_dir.iterdir()) / 1e6:.0f} MB); "
          f"runs part at step {shape['diverge_step']}")

    t = time.perf_counter()
    con = lakelog.connect(root)
    connect_s = time.perf_counter() - t
    params = {"run_a": "a", "run_b": "b"}

    def ours(tol: float):
        df = lakelog.query("first_divergence", con=con, tol=tol, **params)
        row = df.filter(df["layer"] == "predictions").row(0, named=True)
        return row["first_step"]

    def plain(tol: float):
        return con.sql(PLAIN_JOIN, params={**params, "tol": tol}).fetchall()[0][1]

    results = {}
    for tol in (0.0, TOL):
        results[("ours", tol)] = timed(lambda tol=tol: ours(tol), args.repeat)
        results[("plain", tol)] = timed(lambda tol=tol: plain(tol), args.repeat)
        for method in ("ours", "plain"):
            assert results[(method, tol)][1] == shape["diverge_step"], (method, tol, results[(method, tol)][1])
    if not args.skip_pandas:
        results[("pandas", TOL)] = timed(lambda: pandas_way(csv_dir, TOL), 1)
        epoch, batch = results[("pandas", TOL)][1]
        assert epoch * shape["per_epoch"] + batch == shape["diverge_step"], results[("pandas", TOL)][1]

    print(f"\nconnect (views over both runs): {connect_s * 1000:.0f} ms")
    print(f"{'method':<44}{'tol':>8}{'seconds':>10}")
    for (method, tol), (seconds, _) in results.items():
        label = {"ours": "lakelog first_divergence (all layers)", "plain": "plain DuckDB join of predictions",
                 "pandas": "pandas: read 2 CSVs, merge, filter"}[method]
        print(f"{label:<44}{tol:>8g}{seconds:>10.3f}")
    print()
    for tol in (0.0, TOL):
        print(f"tol={tol:g}: first_divergence is {results[('plain', tol)][0] / results[('ours', tol)][0]:.1f}x "
              f"faster than the plain join (target >= 5x)")
    if ("pandas", TOL) in results:
        print(f"tol={TOL:g}: first_divergence is {results[('pandas', TOL)][0] / results[('ours', TOL)][0]:.0f}x "
              f"faster than the pandas way (target >= 30x)")
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("POLARS_MAX_THREADS", "2")
    main()
