"""Train the same function twice, each time with a fresh run, and report where the two runs differ.

The two calls run in this process with the determinism flags put back before each, but not the RNG
states: what the function does not seed differs between the calls, as it would between two
processes. The comparison itself is ``lakelog.read.determinism.report.determinism_report``
(re-exported here). This module sits above both sides: it trains with the write side, then reports
with the read side, so neither side imports the other.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import positive_int
from lakelog.read.determinism.findings import DeterminismReport
from lakelog.read.determinism.report import RUN_NAMES, determinism_report
from lakelog.write.context import current_run, set_current, set_step_limit, take_pending_seeding
from lakelog.write.determinism.rng import restore_flags, restore_state, save_state
from lakelog.write.run import Run

__all__ = ["check_determinism", "determinism_report"]


def check_determinism(
    fn: Callable[[Any], Any],
    steps: int = 10,
    root: Any = None,
    *,
    names: tuple[str, str] = RUN_NAMES,
    loss_name: str = "loss",
) -> DeterminismReport:
    """Call ``fn(run)`` twice, each time with a fresh run, and compare the two runs.

    ``fn`` trains with the run it is given (and may stop after ``steps`` steps: ``lakelog.should_stop``
    says when). Determinism flags and variables are put back before each call, but not the RNG states:
    what ``fn`` does not seed differs between the calls, as it would between two processes. Everything
    is put back afterwards. The runs are kept under ``root`` (a new temporary folder by default).
    """
    if not callable(fn):
        raise InvalidArgumentError(f"fn: expected a function fn(run) that trains, got {type(fn).__name__}")
    steps = positive_int(steps, "steps")
    if len(names) != 2 or names[0] == names[1]:
        raise InvalidArgumentError(f"names: expected two different run names, got {names!r}")
    root = root if root is not None else tempfile.mkdtemp(prefix="lakelog-determinism-")
    saved, previous = save_state(), current_run()
    previous_limit = set_step_limit(steps)
    try:
        for name in names:
            restore_flags(saved["flags"])
            take_pending_seeding()
            run = Run(root, name, mode="overwrite")
            set_current(run)
            try:
                fn(run)
            except BaseException:
                run.finish(status="failed")
                raise
            run.finish()
    finally:
        set_step_limit(previous_limit)
        restore_state(saved)
        set_current(previous)
    return determinism_report(root, names[0], names[1], loss_name=loss_name)
