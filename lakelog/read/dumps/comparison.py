"""Comparing two dumps of one step: the per-pair statistics, the rows they make, the result and its summary.

Statistics are computed in float64, a chunk at a time, by the streams of ``reader``; ``Comparer`` runs
the pairs of a step on a small thread pool (numpy and the reads release the GIL).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lakelog.read.dumps.reader import DumpReader, TensorStream, UnreadableTensor

log = logging.getLogger("lakelog")
FIRST_NAMES = 10  # tensors named in the summary before "… and N more"
CHUNK = 1 << 16  # values read per tensor at a time: memory stays at a few chunks per pair in flight

DIFF_SCHEMA = {
    "run_a": pl.String,
    "run_b": pl.String,
    "step": pl.Int64,
    "source": pl.String,
    "name": pl.String,
    "shape": pl.String,
    "numel": pl.Int64,
    "dtype_a": pl.String,
    "dtype_b": pl.String,
    "l2": pl.Float64,
    "cosine": pl.Float64,
    "max_abs_diff": pl.Float64,
    "rel_diff": pl.Float64,
    "equal": pl.Boolean,
    "norm_a": pl.Float64,
    "norm_b": pl.Float64,
}
STEP_SCHEMA = {
    "step": pl.Int64,
    "epoch_a": pl.Int64,
    "epoch_b": pl.Int64,
    "loss_a": pl.Float64,
    "loss_b": pl.Float64,
    "acc_a": pl.Float64,
    "acc_b": pl.Float64,
    "loss_diff": pl.Float64,
    "acc_diff": pl.Float64,
    "l2": pl.Float64,
    "cosine": pl.Float64,
    "max_abs_diff": pl.Float64,
    "n_tensors": pl.Int64,
    "n_differing": pl.Int64,
    "first_differing": pl.String,
}


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    # einsum's own SIMD loop: no BLAS threads to wake for a cache-sized chunk (np.dot was 2-5x slower
    # on a busy machine, where OpenBLAS threads wait for a core).
    return float(np.einsum("i,i->", x, y))


def pair_stats(
    sa: TensorStream, sb: TensorStream, same_dtype: bool
) -> tuple[float, float, float, float, float, bool]:
    """sum (a-b)^2, sum ab, sum a^2, sum b^2, max |a-b| (float64) and bitwise equality, a chunk at a time.

    ``sum ab`` is ``(sum a^2 + sum b^2 - sum (a-b)^2) / 2``: one pass fewer, and the cosine it gives is
    as exact where it matters, near 1, because ``a - b`` is exact in float64. A chunk whose bits are
    the same in both runs (the common case before two runs part) costs one sum.
    """
    n = sa.count
    x, y, d = (np.empty(min(n, CHUNK)) for _ in range(3))
    ss = aa = bb = 0.0
    peaks: list[float] = []
    same = same_dtype
    bits = f"u{sa.itemsize}"
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        (raw_a, va), (raw_b, vb) = sa.read(start, count), sb.read(start, count)
        xv = x[:count]
        np.copyto(xv, va, casting="unsafe")
        a2 = _dot(xv, xv)
        aa += a2
        if same_dtype and np.array_equal(raw_a.view(bits), raw_b.view(bits)):
            bb += a2
            continue
        same = False
        yv, dv = y[:count], d[:count]
        np.copyto(yv, vb, casting="unsafe")
        np.subtract(xv, yv, out=dv)
        ss += _dot(dv, dv)
        bb += _dot(yv, yv)
        peaks.append(max(dv.max(), -dv.min()))  # max |a-b| without writing |a-b|
    sa.verify()
    sb.verify()
    return ss, (aa + bb - ss) / 2, aa, bb, float(np.max(peaks)) if peaks else 0.0, same


def cosine(dot: float, aa: float, bb: float) -> float:
    if aa == 0 and bb == 0:
        return 1.0
    if aa == 0 or bb == 0:
        return math.nan
    cosine = dot / math.sqrt(aa * bb)
    return cosine if math.isnan(cosine) else max(-1.0, min(1.0, cosine))


@dataclass
class DumpComparison:
    """What ``compare_dumps`` found: a row per step and tensor, a row per step, a summary, files written."""

    run_a: str
    run_b: str
    diffs: pl.DataFrame
    steps: pl.DataFrame
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        return summary_lines(self)

    def skipped(self) -> list[str]:
        """What was left out of the comparison, one phrase each (empty when everything common was compared):
        unreadable dumps, steps only one run dumped, tensors not compared, unfinished dump folders."""
        s = self.summary
        out = []
        if s["errors"]:
            steps = sorted({e["step"] for e in s["errors"]})
            out.append(f"{len(s['errors'])} unreadable dump(s) at step(s) {_steps(steps)}")
        for key, run in (("steps_only_in_a", s["run_a"]), ("steps_only_in_b", s["run_b"])):
            if s[key]:
                out.append(f"{len(s[key])} step(s) only {run} dumped ({_steps(s[key])})")
        uncompared = [m for m in s["mismatches"] if m["kind"] != "dtype"]
        if uncompared:
            names = ", ".join(m["name"] for m in uncompared[:3]) + (" …" if len(uncompared) > 3 else "")
            out.append(
                f"{len(uncompared)} tensor(s) not compared (only in one run or another shape: {names})"
            )
        for key, run in (("incomplete_a", s["run_a"]), ("incomplete_b", s["run_b"])):
            if s[key]:
                out.append(f"{len(s[key])} unfinished dump folder(s) of {run}")
        return out


class Comparer:
    """Compares the tensors of two dumps of one step, pair by pair, and collects the rows and mismatches."""

    def __init__(
        self, label_a: str, label_b: str, keep: Callable[[str], bool], pool: ThreadPoolExecutor
    ) -> None:
        self.labels = (label_a, label_b)
        self.pool = pool
        self.keep = keep
        self.rows: dict[str, list] = {k: [] for k in DIFF_SCHEMA}
        self.mismatches: dict[tuple, dict] = {}
        self.errors: list[dict] = []
        self.names_seen = 0

    def mismatch(self, step: int, source: str, name: str, kind: str, a: Any, b: Any) -> None:
        entry = self.mismatches.setdefault(
            (source, name, kind, str(a), str(b)),
            {
                "source": source,
                "name": name,
                "kind": kind,
                "a": str(a),
                "b": str(b),
                "first_step": step,
                "steps": 0,
            },
        )
        entry["steps"] += 1

    def files(self, step: int, source: str, fa: DumpReader, fb: DumpReader) -> list[tuple]:
        """Compare every tensor the filter keeps; returns (name, ss, dot, aa, bb, max, equal) per tensor."""

        def kept(reader: DumpReader, name: str) -> bool:
            return self.keep(
                reader.param_of.get(name, name.rsplit(".", 1)[0] if source == "optimizer" else name)
            )

        names_a = [n for n in fa.names if kept(fa, n)]
        names_b = {n for n in fb.names if kept(fb, n)}
        self.names_seen += len(fa.names)
        for name in sorted(names_b - set(names_a)):
            self.mismatch(step, source, name, "only_in_b", None, "present")
        pairs = []
        for name in names_a:
            if name not in names_b:
                self.mismatch(step, source, name, "only_in_a", "present", None)
                continue
            (dtype_a, shape_a), (dtype_b, shape_b) = fa.info(name), fb.info(name)
            if shape_a != shape_b:
                self.mismatch(step, source, name, "shape", list(shape_a), list(shape_b))
                continue
            if dtype_a != dtype_b:
                self.mismatch(step, source, name, "dtype", dtype_a, dtype_b)
            pairs.append((name, shape_a, dtype_a, dtype_b))

        def compare(pair: tuple) -> tuple | None:  # on a pool thread: numpy and the reads let go of the GIL
            name, _, dtype_a, dtype_b = pair
            try:
                streams = TensorStream(fa, name, CHUNK), TensorStream(fb, name, CHUNK)
                return (*pair, *pair_stats(*streams, dtype_a == dtype_b))
            except UnreadableTensor as exc:
                self.errors.append(
                    {
                        "run": exc.reader.run,
                        "step": step,
                        "file": str(exc.reader.path),
                        "tensor": name,
                        "error": str(exc),
                    }
                )
                log.warning("lakelog: run %s, %s: %s; skipped", exc.reader.run, exc.reader.path, exc)
                return None

        out = []
        for result in self.pool.map(compare, pairs):
            if result is None:
                continue
            name, shape, dtype_a, dtype_b, ss, dot, aa, bb, peak, same = result
            equal = same or (dtype_a != dtype_b and peak == 0.0 and not math.isnan(ss))
            na, nb, l2 = math.sqrt(aa), math.sqrt(bb), math.sqrt(ss)
            largest = max(na, nb)
            row = (
                *self.labels,
                step,
                source,
                name,
                str(list(shape)),
                math.prod(shape),
                dtype_a,
                dtype_b,
                l2,
                cosine(dot, aa, bb),
                peak,
                l2 / largest if largest > 0 else (0.0 if l2 == 0 else math.nan),
                equal,
                na,
                nb,
            )
            for key, value in zip(DIFF_SCHEMA, row, strict=True):
                self.rows[key].append(value)
            out.append((name, ss, dot, aa, bb, peak, equal))
        return out


def fmt_number(value: float | None, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def _steps(values: list[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" … ({len(values)} in all)" if len(values) > limit else "")


def summary_lines(result: DumpComparison) -> list[str]:
    """The summary as short lines for a terminal."""
    s = result.summary
    lines = [
        f"compared {s['steps_compared']} dumps (steps {s['first_step']}..{s['last_step']}) of {s['run_a']} and "
        f"{s['run_b']}: {s['tensors_compared']} tensor pairs, filter {s['filter']!r}",
        f"L2 distance: mean {fmt_number(s['l2_mean'])}, max {fmt_number(s['l2_max'])} (step {s['l2_max_step']})",
        f"cosine similarity: mean {fmt_number(s['cosine_mean'], '.8f')}, min {fmt_number(s['cosine_min'], '.8f')}",
    ]
    first = s["first_difference"]
    if first is None:
        lines.append("weights: bit-identical at every compared step")
    else:
        names = ", ".join(first["tensors"]) + (" …" if first["n_tensors"] > len(first["tensors"]) else "")
        count = f"{first['n_tensors']} tensor{'s' if first['n_tensors'] != 1 else ''}"
        lines.append(
            f"first difference: step {first['step']}, {count} "
            f"(max |a-b| {fmt_number(first['max_abs_diff'])}): {names}"
        )
        if first["at_first_compared_step"]:
            lines.append("  (already at the first compared step: dump earlier steps to narrow it down)")
    lines.append(
        f"loss |a-b|: mean {fmt_number(s['loss_abs_diff_mean'])}, max {fmt_number(s['loss_abs_diff_max'])}; "
        f"accuracy |a-b|: mean {fmt_number(s['acc_abs_diff_mean'])}, max {fmt_number(s['acc_abs_diff_max'])}"
    )
    for key, run in (("steps_only_in_a", s["run_a"]), ("steps_only_in_b", s["run_b"])):
        if s[key]:
            lines.append(f"warning: steps only {run} dumped (not compared): {_steps(s[key])}")
    for key, run in (("gaps_a", s["run_a"]), ("gaps_b", s["run_b"])):
        if s[key]:
            lines.append(f"warning: {run} has gaps in its dumps, missing steps {_steps(s[key])}")
    for key, run in (("incomplete_a", s["run_a"]), ("incomplete_b", s["run_b"])):
        if s[key]:
            lines.append(f"warning: {run} has {len(s[key])} unfinished dump folders, e.g. {s[key][0]}")
    for m in s["mismatches"][:FIRST_NAMES]:
        what = {
            "only_in_a": f"only in {s['run_a']}",
            "only_in_b": f"only in {s['run_b']}",
            "shape": f"shape {m['a']} vs {m['b']} (not compared)",
            "dtype": f"dtype {m['a']} vs {m['b']} (compared as float64)",
        }[m["kind"]]
        lines.append(
            f"warning: {m['source']} tensor {m['name']!r}: {what}, "
            f"from step {m['first_step']} ({m['steps']} steps)"
        )
    if len(s["mismatches"]) > FIRST_NAMES:
        lines.append(
            f"warning: … and {len(s['mismatches']) - FIRST_NAMES} more mismatched tensors (see the JSON report)"
        )
    for e in s["errors"][:FIRST_NAMES]:
        where = f"{e.get('run', '')} {e.get('file', '')}".strip()
        lines.append(f"error: step {e['step']}: {where + ': ' if where else ''}{e['error']}")
    return lines
