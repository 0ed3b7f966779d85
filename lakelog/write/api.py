"""Module-level functions that write to the current run, so a training loop need not pass it around."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

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
    **options: Any,
) -> Run:
    """Create (or resume) a run under ``root`` and make it the current run."""
    # Under `lakelog check-determinism`, LAKELOG_ROOT / LAKELOG_RUN_NAME / LAKELOG_MODE say where to write.
    root, name, mode = init_overrides(root, name, mode)
    run = Run(root, name, config=config, seed=seed, mode=mode, **options)
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
