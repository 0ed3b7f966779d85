"""Where two runs' weights part, tensor by tensor: the read side of full-state dumps.

Dumps of two runs are matched by step. Each file is checked with safetensors' lazy ``safe_open``
(header, offsets, length) and its tensors are then read pair by pair, a chunk of ``CHUNK`` values
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
from pathlib import Path

import polars as pl

from lakelog.errors import DumpError, InvalidArgumentError
from lakelog.lake import dump_layout as L
from lakelog.lake.progress import bar
from lakelog.read.dumps.compare_report import summarize, write_outputs
from lakelog.read.dumps.comparison import DIFF_SCHEMA, STEP_SCHEMA, Comparer, DumpComparison, cosine
from lakelog.read.dumps.reader import DumpReader

log = logging.getLogger("lakelog")
_WORKERS = min(4, os.cpu_count() or 1)  # tensor pairs in flight, each holding a few chunks of memory
_GROUP = re.compile(r"^([A-Za-z_][\w-]*)=(.+)$")


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
            extra = (
                f" ({len(listing.incomplete)} step folders without {L.MODEL_FILE})"
                if listing.incomplete
                else ""
            )
            raise DumpError(
                f"run {label} ({listing.run_dir}): no dumps{extra}; expected "
                f"{listing.run_dir / L.DUMPS_DIR}/step=<s>/{L.MODEL_FILE}, written by run.dump()"
            )
    common = sorted(set(listing_a.steps) & set(listing_b.steps))
    if not common:
        raise DumpError(
            f"runs {label_a} and {label_b} share no dump step: {label_a} has "
            f"{_span(list(listing_a.steps))}, {label_b} has {_span(list(listing_b.steps))}"
        )
    step_rows: dict[str, list] = {k: [] for k in STEP_SCHEMA}
    with (
        ThreadPoolExecutor(_WORKERS, thread_name_prefix="lakelog-compare") as pool,
        bar(len(common), desc="compare-dumps", unit="dump", show=progress) as shown,
    ):
        comparer = Comparer(label_a, label_b, keep, pool)
        for step in common:
            _compare_step(comparer, step_rows, step, listing_a, listing_b, optimizer)
            shown.update()
    return _finish(comparer, step_rows, listing_a, listing_b, filter, optimizer, out)


def _compare_step(
    comparer: Comparer,
    step_rows: dict[str, list],
    step: int,
    listing_a: L.DumpListing,
    listing_b: L.DumpListing,
    optimizer: bool,
) -> None:
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

    values = (
        step,
        meta_a.get(L.META_EPOCH),
        meta_b.get(L.META_EPOCH),
        meta_a.get(L.META_LOSS),
        meta_b.get(L.META_LOSS),
        meta_a.get(L.META_ACC),
        meta_b.get(L.META_ACC),
        diff(L.META_LOSS),
        diff(L.META_ACC),
        math.sqrt(ss),
        cosine(dot, aa, bb),
        max((c[6] for c in model), default=0.0),
        len(compared),
        len(differing),
        differing[0] if differing else None,
    )
    for key, value in zip(STEP_SCHEMA, values, strict=True):
        rows[key].append(value)


def _finish(
    comparer: Comparer,
    step_rows: dict,
    listing_a: L.DumpListing,
    listing_b: L.DumpListing,
    filter: str,
    optimizer: bool,
    out: str | os.PathLike[str] | None,
) -> DumpComparison:

    label_a, label_b = comparer.labels
    if not step_rows["step"]:
        raise DumpError(
            f"no step of {label_a} and {label_b} could be compared: "
            + "; ".join(e["error"] for e in comparer.errors[:3])
        )
    if not comparer.rows["name"] and comparer.names_seen and not comparer.errors:
        raise DumpError(
            f"filter {filter!r} matches none of the tensors of {label_a} "
            "(see `lakelog compare-dumps --help` for the filter forms)"
        )
    result = DumpComparison(
        label_a,
        label_b,
        pl.DataFrame(comparer.rows, schema=DIFF_SCHEMA),
        pl.DataFrame(step_rows, schema=STEP_SCHEMA),
        {},
    )
    result.summary = summarize(result, comparer, listing_a, listing_b, filter=filter, optimizer=optimizer)
    if out is not None:
        result.files = write_outputs(result, Path(out))
    return result
