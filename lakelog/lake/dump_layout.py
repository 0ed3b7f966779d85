"""Where full-state dumps live and what their safetensors metadata says; shared by writer and reader.

Imports neither torch nor polars: ``lakelog compare-dumps`` on a laptop must not need torch.

A run's dumps are ``<run>/dumps/step=<s>/model.safetensors`` (+ ``optimizer.safetensors``). The
model file is written last, so a step folder without it is an unfinished dump, never a half one.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from lakelog.errors import RunNotFoundError
from lakelog.lake.checks import did_you_mean

DUMPS_DIR = "dumps"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
INDEX_TABLE = "dump_index"
FORMAT = "lakelog.dump/1"

# Keys of the safetensors metadata (a str -> str mapping); JSON where the value is structured.
META_FORMAT = "format"
META_STEP = "step"
META_EPOCH = "epoch"
META_LOSS = "loss"
META_ACC = "acc"
META_RUN = "run"
META_RANK = "rank"
META_CREATED = "created"
META_NAMES = "names"  # JSON list: the state dict's names in model order (tied aliases included)
META_TIES = "ties"  # JSON {alias: canonical}: names that shared one tensor; only the canonical is stored
META_CHECKSUMS = "checksums"  # JSON {name: xxh3-128 hex of the stored bytes}: finds corrupted data
META_OPTIMIZER = "optimizer"  # JSON: class, param_groups, which flat tensor is which state entry
META_SOURCE = "source"  # where an imported dump came from (the .pt file)

SAFETENSORS_DTYPES: dict[str, tuple[str, str | None]] = {
    "F64": ("float64", "<f8"),
    "F32": ("float32", "<f4"),
    "F16": ("float16", "<f2"),
    "BF16": ("bfloat16", "<u2"),  # numpy has no bfloat16: its raw bits, widened to float32 by the reader
    "I64": ("int64", "<i8"),
    "I32": ("int32", "<i4"),
    "I16": ("int16", "<i2"),
    "I8": ("int8", "i1"),
    "U64": ("uint64", "<u8"),
    "U32": ("uint32", "<u4"),
    "U16": ("uint16", "<u2"),
    "U8": ("uint8", "u1"),
    "BOOL": ("bool", "?"),
    "F8_E4M3": ("float8_e4m3fn", None),
    "F8_E5M2": ("float8_e5m2", None),
}
"""The one dtype table of safetensors files: its dtype name -> (torch dtype name, numpy dtype or None).

Named by strings so this module needs no torch; the writer maps ``getattr(torch, name)``, the
torch-free reader takes the numpy column (None: compare-dumps reports the tensor as unreadable).
"""

_STEP_DIR = re.compile(r"^step=(\d+)$")


def step_dir(run_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(run_dir) / DUMPS_DIR / f"step={int(step)}"


def resolve_run(run: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """A run given as a folder (``runs/a``) or as a name under ``root``; the folder must exist."""
    path = Path(run)
    candidates = [path] if root is None or path.is_absolute() else [Path(root) / path, path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    where = " or ".join(str(c) for c in candidates)
    known = (
        sorted(p.name for p in Path(root).iterdir() if p.is_dir())
        if root is not None and Path(root).is_dir()
        else []
    )
    raise RunNotFoundError(
        f"run {str(run)!r}: no such folder ({where}){did_you_mean(path.name, known)}; "
        "give a run folder, or a name and --root"
    )


@dataclass
class DumpListing:
    """What a run's ``dumps/`` folder holds: finished dumps by step, and what looks unfinished."""

    run_dir: Path
    steps: dict[int, Path] = field(default_factory=dict)  # step -> model.safetensors
    incomplete: list[Path] = field(default_factory=list)  # step folders without a model file
    gaps: list[int] = field(default_factory=list)  # steps missing from the run's usual interval

    @property
    def interval(self) -> int | None:
        return dump_interval(sorted(self.steps))


def dump_interval(steps: list[int]) -> int | None:
    """The most common distance between consecutive dumps (None with fewer than three dumps)."""
    if len(steps) < 3:
        return None
    interval, _ = Counter(b - a for a, b in pairwise(steps)).most_common(1)[0]
    return interval if interval > 0 else None


def list_dumps(run_dir: str | os.PathLike[str]) -> DumpListing:
    """The finished dumps of a run, sorted by step; unfinished folders and gaps are reported, not raised."""
    run_dir = Path(run_dir)
    listing = DumpListing(run_dir)
    folder = run_dir / DUMPS_DIR
    if not folder.is_dir():
        return listing
    found: dict[int, Path] = {}
    for entry in folder.iterdir():
        match = _STEP_DIR.match(entry.name)
        if not match or not entry.is_dir():
            continue
        model = entry / MODEL_FILE
        if model.is_file():
            found[int(match.group(1))] = model
        else:
            listing.incomplete.append(entry)
    listing.steps = dict(sorted(found.items()))
    listing.incomplete.sort()
    steps = list(listing.steps)
    interval = dump_interval(steps)
    if interval:
        present = set(steps)
        listing.gaps = [s for s in range(steps[0], steps[-1], interval) if s not in present]
    return listing


def parse_metadata(raw: dict[str, str] | None) -> dict:
    """Typed view of a dump's metadata: numbers as numbers, JSON fields decoded, unknown keys kept."""
    raw = dict(raw or {})
    out: dict = dict(raw)
    for key in (META_STEP, META_EPOCH, META_RANK):
        out[key] = _number(raw.get(key), int)
    for key in (META_LOSS, META_ACC):
        out[key] = _number(raw.get(key), float)
    for key, default in ((META_NAMES, None), (META_TIES, {}), (META_CHECKSUMS, {}), (META_OPTIMIZER, None)):
        text = raw.get(key)
        try:
            out[key] = json.loads(text) if text else default
        except json.JSONDecodeError:
            out[key] = default
    return out


def _number(text: str | None, kind: type) -> int | float | None:
    if text is None or text == "":
        return None
    try:
        return kind(text)
    except ValueError:
        return None


IMPORT_MAX_BYTES = 16 * 2**30
"""Most bytes an imported ``torch.save`` checkpoint may take once loaded (``import-dumps --max-size``)."""

IMPORT_MAX_EXPANSION = 32.0
"""Most an imported checkpoint's zip entry may inflate (torch.save stores entries uncompressed)."""
