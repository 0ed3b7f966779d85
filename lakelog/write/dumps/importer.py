"""Bring existing ``torch.save`` checkpoints into a run as safetensors dumps.

The seeds wrote ``batch_dumps/epoch_XXX/batch_XXXX.pt`` holding ``model_state_dict``,
``optimizer_state_dict``, ``loss`` and ``acc``. Each file is loaded with
``torch.load(..., weights_only=True)`` only: a file that needs pickle to run code (a custom class
instance, say) is refused with a DumpError naming it, never executed.

Steps: files are ordered by (epoch, batch) and ``step = epoch * steps_per_epoch + batch``. Without
``steps_per_epoch`` it is taken as the largest batch index found plus one, which keeps two imports of
the same dumping schedule aligned step for step; pass the real number of batches per epoch to get
the true global steps. Files named ``step_XXXX.pt`` (no epoch/batch) keep their step. The original
epoch, batch and file go to each dump's metadata (``import_epoch``, ``import_batch``, ``source``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from lakelog.errors import DumpError, InvalidArgumentError
from lakelog.lake.checks import optional_positive_int
from lakelog.lake.dump_layout import list_dumps
from lakelog.lake.progress import bar
from lakelog.write.dumps.writer import DumpWriter

log = logging.getLogger("lakelog")

SUFFIXES = (".pt", ".pth")
_EPOCH = re.compile(r"epoch[_=-]?(\d+)", re.IGNORECASE)
_BATCH = re.compile(r"batch[_=-]?(\d+)", re.IGNORECASE)
_STEP = re.compile(r"step[_=-]?(\d+)", re.IGNORECASE)
_UNSAFE = re.compile(r"Unsupported global: [^\n]*?(?= was not|\.\s|$)", re.MULTILINE)
_REASON = re.compile(r"WeightsUnpickler error: ([^\n]*)")
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
        per_epoch = steps_per_epoch or max(b for _, b, _ in by_batch) + 1
        for _, batch, path in by_batch:
            if batch >= per_epoch:
                raise InvalidArgumentError(f"steps_per_epoch: {path} is batch {batch}, not below {per_epoch}")
        found = [Checkpoint(path, e * per_epoch + b, e, b) for e, b, path in sorted(by_batch)]
    found.sort(key=lambda c: c.step)
    for before, after in pairwise(found):
        if before.step == after.step:
            raise DumpError(f"{before.path} and {after.path} both map to step {after.step}")
    return found, skipped


def load_checkpoint(path: Path) -> Mapping[str, Any]:
    """``torch.load`` with ``weights_only=True``; anything that needs pickle to run code is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _UNSAFE.search(str(exc))
        if unsafe is None:  # garbage, or a pickle stream weights_only cannot parse: either way, not loaded
            reason = _REASON.search(str(exc))
            raise DumpError(
                f"{path}: not a readable torch.save checkpoint, or one only pickle could load "
                f"({reason.group(1) if reason else str(exc).splitlines()[0]}); lakelog never unpickles"
            ) from None
        raise DumpError(
            f"{path}: refused: loading it needs pickle to run code ({unsafe.group(0).strip()}); lakelog loads "
            "checkpoints with torch.load(weights_only=True) only and never executes them. If you trust the file, "
            "re-save it holding only tensors, numbers, strings, lists and dicts"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DumpError(f"{path}: not a readable torch.save checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(obj, Mapping):
        raise DumpError(f"{path}: expected a dict checkpoint (model_state_dict, …), got {type(obj).__name__}")
    return obj


def _number(value: Any, path: Path, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    log.warning("lakelog: %s: %r is %s, not a number; left out", path, key, type(value).__name__)
    return None


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


def import_dumps(
    directory: str | os.PathLike[str],
    run: Any,
    *,
    root: str | os.PathLike[str] = "runs",
    steps_per_epoch: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> list[Path]:
    """Import every checkpoint under ``directory`` into ``run`` (a Run, or a run name under ``root``,
    created or resumed); returns the step folders written. Stops at the first unreadable or unsafe file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DumpError(f"{directory}: no such folder of checkpoints")
    checkpoints, skipped = find_checkpoints(directory, steps_per_epoch=steps_per_epoch)
    for path in skipped:
        log.warning("lakelog: %s: no epoch_X/batch_Y or step_Z in its name; not imported", path)
    if not checkpoints:
        raise DumpError(
            f"{directory}: no checkpoints to import; expected epoch_XXX/batch_XXXX.pt or step_XXXX.pt files"
        )
    own = isinstance(run, str)
    if own:
        from lakelog.write.run import Run

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
                    model, optimizer, loss, acc = checkpoint_parts(load_checkpoint(c.path), c.path)
                    extra = {"source": c.path.relative_to(directory).as_posix(), "import_epoch": str(c.epoch)}
                    if c.batch is not None:
                        extra["import_batch"] = str(c.batch)
                    writer.dump(
                        model, optimizer, step=c.step, epoch=c.epoch, loss=loss, acc=acc, metadata=extra
                    )
                    shown.update()
        finally:
            writer.close()
        status = "finished"
        return list(writer.written)
    finally:
        if own:
            run.finish(status=status)
