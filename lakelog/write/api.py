"""Module-level functions that write to the current run, so a training loop need not pass it around."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow.fs as pafs

from lakelog.write.context import active_run, current_run, set_current, take_pending_seeding
from lakelog.write.determinism.seeding import init_overrides
from lakelog.write.run import Mode, Run


def init(
    root: str | os.PathLike[str] = "runs",
    name: str | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    mode: Mode = "error",
    log_every: int = 1,
    flush_every_s: float = 10.0,
    rank: int | None = None,
    world_size: int | None = None,
    tags: Mapping[str, Any] | None = None,
    filesystem: pafs.FileSystem | None = None,
    on_error: Literal["warn", "raise"] = "warn",
) -> Run:
    """Create (or resume) run ``name`` under ``root`` and make it the current run.

    Args:
        root: the lake: a local folder (created if missing) or an object-store URI (``s3://…``).
        name: the run's folder name, generated when None; a plain name (no '/', '\\', '=', glob or
            control characters, no leading '.', at most 200 bytes).
        config: hyper-parameters stored in run.json. seed: the run's seed (an int in 0..2**63-1).
        mode: ``"error"`` (an existing run is refused), ``"resume"`` (continue after the run's last
            committed step, ``run.resumed_from``; a missing run is started, a finished one continued) or
            ``"overwrite"``.
        log_every: default ``every`` of ``log_predictions``/``log_batch``.
        flush_every_s: seconds between periodic flushes (part files, commit, heartbeat).
        rank, world_size: the DDP rank and world size (default: from the environment).
        tags: labels stored in run.json. filesystem: a pyarrow filesystem for object-store roots.
        on_error: ``"warn"`` (rows the writer cannot write are counted in run.json ``dropped`` and
            warned about once; flush/finish never raise for accepted rows) or ``"raise"``.

    Under ``lakelog check-determinism`` the variables LAKELOG_ROOT, LAKELOG_RUN_NAME and LAKELOG_MODE
    override ``root``, ``name`` and ``mode``.

    Raises:
        InvalidArgumentError: an argument has the wrong type or range (the message names it).
        RunExistsError: ``mode="error"`` and the run exists.
        RunInUseError: a live writer (this or another process) holds the run and rank, in any mode.
        LakeNotWritableError: the root is a file, or the run folder cannot be created or written.
    """
    # Under `lakelog check-determinism`, LAKELOG_ROOT / LAKELOG_RUN_NAME / LAKELOG_MODE say where to write.
    root, name, mode = init_overrides(root, name, mode)
    run = Run(
        root,
        name,
        config=config,
        seed=seed,
        mode=mode,
        log_every=log_every,
        flush_every_s=flush_every_s,
        rank=rank,
        world_size=world_size,
        tags=tags,
        filesystem=filesystem,
        on_error=on_error,
    )
    set_current(run)
    seeding = take_pending_seeding()  # lakelog.seed_everything called before init
    if seeding is not None:
        run.update_info(seeding=seeding)
    return run


def run() -> Run:
    """The current run; raises NoActiveRunError before ``lakelog.init``."""
    return active_run()


def log(metrics: Mapping[str, Any], *, step: int | None = None, epoch: int | None = None) -> None:
    run().log(metrics, step=step, epoch=epoch)


def log_predictions(logits: Any, **kwargs: Any) -> None:
    run().log_predictions(logits, **kwargs)


def log_batch(**kwargs: Any) -> None:
    run().log_batch(**kwargs)


def watch(model: Any, optimizer: Any = None, **options: Any) -> Any:
    return run().watch(model, optimizer, **options)


def dump(model: Any, optimizer: Any = None, **kwargs: Any) -> Any:
    return run().dump(model, optimizer, **kwargs)


def summary(**metrics: Any) -> None:
    run().summary(**metrics)


def flush() -> None:
    run().flush()


def finish() -> None:
    """Finish the current run (a no-op when there is none)."""
    active = current_run()
    if active is not None:
        active.finish()
