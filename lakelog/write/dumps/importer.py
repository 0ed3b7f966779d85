"""Bring existing ``torch.save`` checkpoints into a run as safetensors dumps.

The seeds wrote ``batch_dumps/epoch_XXX/batch_XXXX.pt`` holding ``model_state_dict``,
``optimizer_state_dict``, ``loss`` and ``acc``. Each file is checked and loaded by
``lakelog.write.dumps.safeload``: declared sizes against the file and the limits first, then
``torch.load(weights_only=True)`` with numpy scalars allowed; a file that needs pickle to run code is
refused with a DumpError naming it, never executed. ``skip_bad=True`` (``--skip-bad``) goes on past a
refused or unreadable file and counts it.

Steps: files are ordered by (epoch, batch) and ``step = epoch * steps_per_epoch + batch``. Without
``steps_per_epoch`` it is inferred from the gaps between dumps (``infer_steps_per_epoch``): the one
epoch length that keeps the dumps evenly spaced across epoch boundaries (dumps every 10 batches at
batches 0…40 give 50), with a warning showing the mapping; when the gaps do not say (one dump per
epoch, irregular gaps) it must be given. Files named ``step_XXXX.pt`` (no epoch/batch) keep their
step. The original epoch, batch and file go to each dump's metadata (``import_epoch``,
``import_batch``, ``source``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lakelog.errors import DumpError, InvalidArgumentError
from lakelog.lake.checks import optional_positive_int, positive_int, positive_number
from lakelog.lake.dump_layout import META_SOURCE, list_dumps
from lakelog.lake.progress import bar
from lakelog.write.dumps.safeload import DEFAULT_MAX_BYTES, DEFAULT_MAX_EXPANSION, load_checkpoint
from lakelog.write.dumps.writer import DumpWriter
from lakelog.write.run import Run

log = logging.getLogger("lakelog")

SUFFIXES = (".pt", ".pth")
_EPOCH = re.compile(r"epoch[_=-]?(\d+)", re.IGNORECASE)
_BATCH = re.compile(r"batch[_=-]?(\d+)", re.IGNORECASE)
_STEP = re.compile(r"step[_=-]?(\d+)", re.IGNORECASE)
_MODEL_KEYS = ("model_state_dict", "state_dict", "model")
_OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer")


@dataclass(frozen=True)
class Checkpoint:
    """One file to import and where it goes."""

    path: Path
    step: int
    epoch: int
    batch: int | None


def find_checkpoints(
    directory: Path, *, steps_per_epoch: int | None = None
) -> tuple[list[Checkpoint], list[Path]]:
    """The checkpoints under ``directory`` in step order, and the files whose names say no step."""
    steps_per_epoch = optional_positive_int(steps_per_epoch, "steps_per_epoch")
    by_batch: list[tuple[int, int, Path]] = []
    by_step: list[tuple[int, Path]] = []
    skipped: list[Path] = []
    for path in sorted(p for p in directory.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
        relative = path.relative_to(directory).as_posix()
        epoch, batch, step = _EPOCH.search(relative), _BATCH.search(path.name), _STEP.search(path.name)
        if epoch and batch:
            by_batch.append((int(epoch.group(1)), int(batch.group(1)), path))
        elif step:
            by_step.append((int(step.group(1)), path))
        else:
            skipped.append(path)
    if by_batch and by_step:
        raise DumpError(
            f"{directory}: mixes epoch_X/batch_Y files ({by_batch[0][2]}) with step_Z files "
            f"({by_step[0][1]}); import them separately so their steps cannot collide"
        )
    found = [Checkpoint(path, step, 0, None) for step, path in by_step]
    if by_batch:
        per_epoch = steps_per_epoch or infer_steps_per_epoch(by_batch, directory)
        for _, batch, path in by_batch:
            if batch >= per_epoch:
                raise InvalidArgumentError(f"steps_per_epoch: {path} is batch {batch}, not below {per_epoch}")
        found = [Checkpoint(path, e * per_epoch + b, e, b) for e, b, path in sorted(by_batch)]
    found.sort(key=lambda c: c.step)
    for before, after in pairwise(found):
        if before.step == after.step:
            raise DumpError(f"{before.path} and {after.path} both map to step {after.step}")
    return found, skipped


def _number(value: Any, path: Path, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(()))
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_):
        return float(value)
    log.warning("lakelog: %s: %r is %s, not a number; left out", path, key, type(value).__name__)
    return None


def infer_steps_per_epoch(by_batch: list[tuple[int, int, Path]], directory: Path) -> int:
    """The epoch length that keeps ``(epoch, batch, file)`` dumps evenly spaced, with a warning saying so.

    Dumps every N batches are N apart inside an epoch; across an epoch boundary the same spacing
    gives ``steps_per_epoch = N + last batch of an epoch - first batch of the next`` (over k epochs
    when epochs are missing). A schedule that counts within the epoch (batches 0, 10, … 40) and one
    that counts globally (0…40, then 3, 13, … when an epoch has 47 batches) both come out right.
    One epoch needs no length (its steps are its batches). Raises InvalidArgumentError when the
    dumps do not say: one dump per epoch, uneven gaps, or boundaries that disagree.
    """
    epochs: dict[int, list[int]] = {}
    for epoch, batch, _ in by_batch:
        epochs.setdefault(epoch, []).append(batch)
    for batches in epochs.values():
        batches.sort()
    largest = max(b for _, b, _ in by_batch)
    if len(epochs) == 1:
        return largest + 1
    seen = {e: ", ".join(map(str, bs[:6])) + (" …" if len(bs) > 6 else "") for e, bs in epochs.items()}
    shown = "; ".join(f"epoch {e}: batches {text}" for e, text in list(seen.items())[:3])
    need = (
        f"steps_per_epoch: cannot be inferred from the dumps in {directory} ({shown}): {{why}}; "
        "pass the number of batches per epoch (--steps-per-epoch N)"
    )
    gaps = {b - a for bs in epochs.values() for a, b in pairwise(bs)}
    if not gaps:
        raise InvalidArgumentError(
            need.format(why="one dump per epoch says nothing about the epoch's length")
        )
    if len(gaps) > 1:
        raise InvalidArgumentError(
            need.format(why=f"the gaps between dumps differ ({', '.join(map(str, sorted(gaps)))} batches)")
        )
    every = gaps.pop()
    lengths = set()
    for (e1, b1), (e2, b2) in pairwise(sorted(epochs.items())):
        span = every + b1[-1] - b2[0]
        if span % (e2 - e1):
            lengths.add(-1)
        else:
            lengths.add(span // (e2 - e1))
    if len(lengths) != 1 or min(lengths) <= largest:
        raise InvalidArgumentError(
            need.format(why=f"no single epoch length keeps dumps every {every} batches evenly spaced")
        )
    length = lengths.pop()
    first, second = sorted(epochs)[:2]
    log.warning(
        "lakelog: import-dumps: steps_per_epoch not given; inferred %d from dumps every %d batches "
        "(step = epoch * %d + batch: epoch %d batch %d -> step %d, epoch %d batch %d -> step %d); "
        "pass --steps-per-epoch N if an epoch has another number of batches",
        length, every, length, first, epochs[first][-1], first * length + epochs[first][-1],
        second, epochs[second][0], second * length + epochs[second][0],
    )  # fmt: skip
    return length


def checkpoint_parts(
    obj: Mapping[str, Any], path: Path
) -> tuple[Mapping, Mapping | None, float | None, float | None]:
    """Model state, optimizer state (or None), loss and accuracy of one seeds-style checkpoint."""
    model = next((obj[k] for k in _MODEL_KEYS if isinstance(obj.get(k), Mapping)), None)
    if model is None and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        model = obj  # a bare state dict
    if model is None:
        raise DumpError(
            f"{path}: no model state: expected a {' / '.join(_MODEL_KEYS)} entry, found keys {sorted(obj)}"
        )
    optimizer = next((obj[k] for k in _OPTIMIZER_KEYS if isinstance(obj.get(k), Mapping)), None)
    if optimizer is not None and not {"state", "param_groups"} <= set(optimizer):
        log.warning("lakelog: %s: optimizer entry is not an optimizer state_dict; left out", path)
        optimizer = None
    accuracy = obj.get("acc", obj.get("accuracy"))
    return model, optimizer, _number(obj.get("loss"), path, "loss"), _number(accuracy, path, "acc")


class Imported(list):
    """What ``import_dumps`` wrote: the step folders (it is that list), and what it skipped and why."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[tuple[Path, str]] = []
        """(file, reason) of every file ``skip_bad`` went past."""


def import_dumps(
    directory: str | os.PathLike[str],
    run: Any,
    *,
    root: str | os.PathLike[str] = "runs",
    steps_per_epoch: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    skip_bad: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_expansion: float = DEFAULT_MAX_EXPANSION,
) -> Imported:
    """Import every checkpoint under ``directory`` into ``run`` (a Run, or a run name under ``root``,
    created or resumed); returns the step folders written (an ``Imported`` list, with ``skipped``).

    A file that is refused (pickle code, over ``max_bytes`` once loaded or ``max_expansion`` when
    inflated, impossible tensor sizes) or unreadable stops the import with a DumpError naming it,
    unless ``skip_bad`` is set: then it is skipped, counted in ``skipped`` with the reason, and
    logged. Raises InvalidArgumentError when ``steps_per_epoch`` is needed and cannot be inferred.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DumpError(f"{directory}: no such folder of checkpoints")
    max_bytes = positive_int(max_bytes, "max_bytes")
    max_expansion = positive_number(max_expansion, "max_expansion")
    checkpoints, unnamed = find_checkpoints(directory, steps_per_epoch=steps_per_epoch)
    for path in unnamed:
        log.warning("lakelog: %s: no epoch_X/batch_Y or step_Z in its name; not imported", path)
    if not checkpoints:
        raise DumpError(
            f"{directory}: no checkpoints to import; expected epoch_XXX/batch_XXXX.pt or step_XXXX.pt files"
        )
    result = Imported()
    own = isinstance(run, str)
    if own:
        run = Run(root, run, mode="resume")
    status = "failed"
    try:
        existing = set(list_dumps(run.path).steps)
        clash = [c.step for c in checkpoints if c.step in existing]
        if clash and not overwrite:
            raise DumpError(
                f"run {run.name!r} already has dumps at steps {clash[:5]}{' …' if len(clash) > 5 else ''}; "
                "pass overwrite=True (--overwrite) to replace them"
            )
        writer = DumpWriter(run)
        try:
            with bar(len(checkpoints), desc="import-dumps", unit="file", show=progress) as shown:
                for c in checkpoints:
                    try:
                        obj = load_checkpoint(c.path, max_bytes=max_bytes, max_expansion=max_expansion)
                        model, optimizer, loss, acc = checkpoint_parts(obj, c.path)
                    except DumpError as exc:
                        if not skip_bad:
                            raise
                        result.skipped.append((c.path, str(exc)))
                        log.warning("lakelog: import-dumps: skipped %s", exc)
                        shown.update()
                        continue
                    extra = {
                        META_SOURCE: c.path.relative_to(directory).as_posix(),
                        "import_epoch": str(c.epoch),
                    }
                    if c.batch is not None:
                        extra["import_batch"] = str(c.batch)
                    writer.dump(
                        model, optimizer, step=c.step, epoch=c.epoch, loss=loss, acc=acc, metadata=extra
                    )
                    shown.update()
        finally:
            writer.close()
        status = "finished"
        result.extend(writer.written)
        return result
    finally:
        if own:
            run.finish(status=status)
