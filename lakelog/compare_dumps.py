"""Where two runs' weights part, tensor by tensor: the read side of full-state dumps.

Dumps of two runs are matched by step. Each file is checked with safetensors' lazy ``safe_open``
(header, offsets, length) and its tensors are then read pair by pair, a chunk of ``_CHUNK`` values
at a time, so memory stays at a few chunks however big the model or its largest tensor. Statistics
are computed in float64; bf16 (which numpy lacks) is widened from its raw bits. A small thread pool
compares a few tensor pairs at once (numpy and the reads release the GIL). torch is never imported.

Per step and tensor: L2 distance, cosine similarity, max absolute difference, relative difference
(``l2 / max(|a|, |b|)``) and exact equality (bit for bit; tensors of different dtypes are "equal"
when every value is). Each read tensor is checked against the checksum its writer stored, so a
corrupted file is named, not silently compared.

``filter``: ``all``; ``GROUP=PREFIX[,PREFIX...]`` keeps names starting with a prefix
(``backbone=features.``); anything else is a regular expression searched in the name (``mlp``,
``^layer4\\.``). Optimizer tensors (``fc.weight.exp_avg``) are filtered by their parameter's name.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from . import dumps_layout as L
from .dumps_reader import DumpReader, TensorStream, UnreadableTensor
from .errors import DumpError, InvalidArgumentError
from .progress import bar

log = logging.getLogger("lakelog")
_CHUNK = 1 << 16
_WORKERS = min(4, os.cpu_count() or 1)  # tensor pairs in flight, each holding a few chunks of memory
_GROUP = re.compile(r"^([A-Za-z_][\w-]*)=(.+)$")

DIFF_SCHEMA = {
    "run_a": pl.String, "run_b": pl.String, "step": pl.Int64, "source": pl.String, "name": pl.String,
    "shape": pl.String, "numel": pl.Int64, "dtype_a": pl.String, "dtype_b": pl.String,
    "l2": pl.Float64, "cosine": pl.Float64, "max_abs_diff": pl.Float64, "rel_diff": pl.Float64,
    "equal": pl.Boolean, "norm_a": pl.Float64, "norm_b": pl.Float64,
}
STEP_SCHEMA = {
    "step": pl.Int64, "epoch_a": pl.Int64, "epoch_b": pl.Int64, "loss_a": pl.Float64, "loss_b": pl.Float64,
    "acc_a": pl.Float64, "acc_b": pl.Float64, "loss_diff": pl.Float64, "acc_diff": pl.Float64,
    "l2": pl.Float64, "cosine": pl.Float64, "max_abs_diff": pl.Float64, "n_tensors": pl.Int64,
    "n_differing": pl.Int64, "first_differing": pl.String,
}


def parse_filter(spec: str | None) -> Callable[[str], bool]:
    """``all`` | ``GROUP=PREFIX[,PREFIX...]`` | a regular expression searched in the tensor name."""
    if spec is None or spec.strip() in ("", "all"):
        return lambda name: True
    match = _GROUP.match(spec)
    if match:
        prefixes = tuple(p for p in match.group(2).split(",") if p)
        return lambda name: name.startswith(prefixes)
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise InvalidArgumentError(
            f"filter: {spec!r} is not a valid regular expression ({exc}); expected all, GROUP=PREFIX or a regex"
        ) from exc
    return lambda name: pattern.search(name) is not None


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    # einsum's own SIMD loop: no BLAS threads to wake for a cache-sized chunk (np.dot was 2-5x slower
    # on a busy machine, where OpenBLAS threads wait for a core).
    return float(np.einsum("i,i->", x, y))


def _pair_stats(sa: TensorStream, sb: TensorStream, same_dtype: bool) -> tuple[float, float, float, float, float, bool]:
    """sum (a-b)^2, sum ab, sum a^2, sum b^2, max |a-b| (float64) and bitwise equality, a chunk at a time.

    ``sum ab`` is ``(sum a^2 + sum b^2 - sum (a-b)^2) / 2``: one pass fewer, and the cosine it gives is
    as exact where it matters, near 1, because ``a - b`` is exact in float64. A chunk whose bits are
    the same in both runs (the common case before two runs part) costs one sum.
    """
    n = sa.count
    x, y, d = (np.empty(min(n, _CHUNK)) for _ in range(3))
    ss = aa = bb = 0.0
    peaks: list[float] = []
    same = same_dtype
    bits = f"u{sa.itemsize}"
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
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


def _cosine(dot: float, aa: float, bb: float) -> float:
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
        from .compare_dumps_report import summary_lines

        return summary_lines(self)


class _Comparer:
    def __init__(self, label_a: str, label_b: str, keep: Callable[[str], bool], pool: ThreadPoolExecutor) -> None:
        self.labels = (label_a, label_b)
        self.pool = pool
        self.keep = keep
        self.rows: dict[str, list] = {k: [] for k in DIFF_SCHEMA}
        self.mismatches: dict[tuple, dict] = {}
        self.errors: list[dict] = []
        self.names_seen = 0

    def mismatch(self, step: int, source: str, name: str, kind: str, a: Any, b: Any) -> None:
        entry = self.mismatches.setdefault((source, name, kind, str(a), str(b)), {
            "source": source, "name": name, "kind": kind, "a": str(a), "b": str(b), "first_step": step, "steps": 0})
        entry["steps"] += 1

    def files(self, step: int, source: str, fa: DumpReader, fb: DumpReader) -> list[tuple]:
        """Compare every tensor the filter keeps; returns (name, ss, dot, aa, bb, max, equal) per tensor."""
        def kept(reader: DumpReader, name: str) -> bool:
            return self.keep(reader.param_of.get(name, name.rsplit(".", 1)[0] if source == "optimizer" else name))

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
                streams = TensorStream(fa, name, _CHUNK), TensorStream(fb, name, _CHUNK)
                return (*pair, *_pair_stats(*streams, dtype_a == dtype_b))
            except UnreadableTensor as exc:
                self.errors.append({"run": exc.reader.run, "step": step, "file": str(exc.reader.path),
                                    "tensor": name, "error": str(exc)})
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
            row = (*self.labels, step, source, name, str(list(shape)), math.prod(shape), dtype_a, dtype_b,
                   l2, _cosine(dot, aa, bb), peak, l2 / largest if largest > 0 else (0.0 if l2 == 0 else math.nan),
                   equal, na, nb)
            for key, value in zip(DIFF_SCHEMA, row, strict=True):
                self.rows[key].append(value)
            out.append((name, ss, dot, aa, bb, peak, equal))
        return out


def _labels(dir_a: Path, dir_b: Path) -> tuple[str, str]:
    a, b = dir_a.resolve().name, dir_b.resolve().name
    if a == b:
        return f"{dir_a.resolve().parent.name}/{a}", f"{dir_b.resolve().parent.name}/{b}"
    return a, b


def _span(steps: list[int]) -> str:
    return f"{len(steps)} dumps, steps {steps[0]}..{steps[-1]}" if steps else "no dumps"


def compare_dumps(
    run_a: str | os.PathLike[str],
    run_b: str | os.PathLike[str],
    *,
    filter: str = "all",
    out: str | os.PathLike[str] | None = None,
    progress: bool | None = True,
    root: str | os.PathLike[str] | None = None,
    optimizer: bool = False,
) -> DumpComparison:
    """Compare two runs' dumps step by step; with ``out``, write the table, JSON report and chart there.

    Runs are folders, or names under ``root``; ``progress=None`` shows a bar only on a terminal.
    Mismatched names or shapes, steps only one run has, gaps and unreadable files are reported in
    ``summary`` and the rest is compared. ``optimizer=True`` compares the optimizer state as well.
    """
    dir_a, dir_b = L.resolve_run(run_a, root), L.resolve_run(run_b, root)
    label_a, label_b = _labels(dir_a, dir_b)
    keep = parse_filter(filter)
    listing_a, listing_b = L.list_dumps(dir_a), L.list_dumps(dir_b)
    for listing, label in ((listing_a, label_a), (listing_b, label_b)):
        if not listing.steps:
            extra = f" ({len(listing.incomplete)} step folders without {L.MODEL_FILE})" if listing.incomplete else ""
            raise DumpError(f"run {label} ({listing.run_dir}): no dumps{extra}; expected "
                            f"{listing.run_dir / L.DUMPS_DIR}/step=<s>/{L.MODEL_FILE}, written by run.dump()")
    common = sorted(set(listing_a.steps) & set(listing_b.steps))
    if not common:
        raise DumpError(f"runs {label_a} and {label_b} share no dump step: {label_a} has "
                        f"{_span(list(listing_a.steps))}, {label_b} has {_span(list(listing_b.steps))}")
    step_rows: dict[str, list] = {k: [] for k in STEP_SCHEMA}
    with (ThreadPoolExecutor(_WORKERS, thread_name_prefix="lakelog-compare") as pool,
          bar(len(common), desc="compare-dumps", unit="dump", show=progress) as shown):
        comparer = _Comparer(label_a, label_b, keep, pool)
        for step in common:
            _compare_step(comparer, step_rows, step, listing_a, listing_b, optimizer)
            shown.update()
    return _finish(comparer, step_rows, listing_a, listing_b, filter, optimizer, out)


def _compare_step(comparer: _Comparer, step_rows: dict[str, list], step: int, listing_a: L.DumpListing,
                  listing_b: L.DumpListing, optimizer: bool) -> None:
    label_a, label_b = comparer.labels
    pairs = [("model", listing_a.steps[step], listing_b.steps[step])]
    if optimizer:
        opt_a, opt_b = (p.parent / L.OPTIMIZER_FILE for p in pairs[0][1:])
        if opt_a.is_file() and opt_b.is_file():
            pairs.append(("optimizer", opt_a, opt_b))
        elif opt_a.is_file() or opt_b.is_file():
            a, b = ("present", None) if opt_a.is_file() else (None, "present")
            comparer.mismatch(step, "optimizer", L.OPTIMIZER_FILE, "only_in_a" if a else "only_in_b", a, b)
    readers: list[DumpReader] = []
    try:
        compared = []
        for source, path_a, path_b in pairs:
            readers += [DumpReader(path_a, label_a), DumpReader(path_b, label_b)]
            compared += [(source, *r) for r in comparer.files(step, source, readers[-2], readers[-1])]
    except DumpError as exc:
        comparer.errors.append({"step": step, "error": str(exc)})
        log.warning("lakelog: %s; step %d skipped", exc, step)
        return
    finally:
        for reader in readers:
            reader.close()
    _step_row(step_rows, step, readers[0].meta, readers[1].meta, compared)


def _step_row(rows: dict[str, list], step: int, meta_a: dict, meta_b: dict, compared: list[tuple]) -> None:
    model = [c for c in compared if c[0] == "model"]
    ss, dot, aa, bb = (sum(c[i] for c in model) for i in (2, 3, 4, 5))
    differing = [c[1] for c in compared if not c[7]]

    def diff(key: str) -> float | None:
        a, b = meta_a.get(key), meta_b.get(key)
        return None if a is None or b is None else a - b

    values = (step, meta_a.get(L.META_EPOCH), meta_b.get(L.META_EPOCH), meta_a.get(L.META_LOSS),
              meta_b.get(L.META_LOSS), meta_a.get(L.META_ACC), meta_b.get(L.META_ACC), diff(L.META_LOSS),
              diff(L.META_ACC), math.sqrt(ss), _cosine(dot, aa, bb),
              max((c[6] for c in model), default=0.0), len(compared), len(differing),
              differing[0] if differing else None)
    for key, value in zip(STEP_SCHEMA, values, strict=True):
        rows[key].append(value)


def _finish(comparer: _Comparer, step_rows: dict, listing_a: L.DumpListing, listing_b: L.DumpListing,
            filter: str, optimizer: bool, out: str | os.PathLike[str] | None) -> DumpComparison:
    from .compare_dumps_report import summarize, write_outputs

    label_a, label_b = comparer.labels
    if not step_rows["step"]:
        raise DumpError(f"no step of {label_a} and {label_b} could be compared: "
                        + "; ".join(e["error"] for e in comparer.errors[:3]))
    if not comparer.rows["name"] and comparer.names_seen and not comparer.errors:
        raise DumpError(f"filter {filter!r} matches none of the tensors of {label_a} "
                        "(see `lakelog compare-dumps --help` for the filter forms)")
    result = DumpComparison(
        label_a, label_b,
        pl.DataFrame(comparer.rows, schema=DIFF_SCHEMA),
        pl.DataFrame(step_rows, schema=STEP_SCHEMA),
        {},
    )
    result.summary = summarize(result, comparer, listing_a, listing_b, filter=filter, optimizer=optimizer)
    if out is not None:
        result.files = write_outputs(result, Path(out))
    return result
