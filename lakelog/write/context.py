"""The write side's one process-wide context: the current run, seeding done before it, a step limit.

The module-level functions (``lakelog.log``…) write to the current run; ``seed_everything`` called
before ``init`` leaves its settings here for ``init`` to record; ``check_determinism(fn)`` sets a step
limit for ``should_stop``. Keeping the three in one object, behind functions, means no module writes
another module's globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lakelog.errors import NoActiveRunError


class Run(Protocol):
    """What the context needs of a run (``lakelog.write.run.Run`` is the one implementation).

    A protocol instead of an import keeps this module below the run, which imports it.
    """

    @property
    def closed(self) -> bool: ...

    def update_info(self, **fields: Any) -> None: ...


@dataclass
class _Context:
    run: Run | None = None
    pending_seeding: dict[str, Any] | None = None  # what seed_everything set before any run existed
    step_limit: int | None = None  # set by check_determinism(fn) for the duration of the call


_CONTEXT = _Context()


def current_run() -> Run | None:
    """The run the module-level functions write to, or None."""
    return _CONTEXT.run


def set_current(run: Run | None) -> None:
    """Make ``run`` the current run (None: no current run)."""
    _CONTEXT.run = run


def release_current(run: Run) -> None:
    """Forget ``run`` as the current run if it is the current one (a finished run calls this)."""
    if _CONTEXT.run is run:
        _CONTEXT.run = None


def active_run() -> Run:
    """The current run; raises NoActiveRunError before ``lakelog.init``."""
    run = _CONTEXT.run
    if run is None:
        raise NoActiveRunError("no active run: call lakelog.init(root, name=...) first")
    return run


def stash_seeding(settings: dict[str, Any]) -> None:
    """Keep what ``seed_everything`` set until a run exists to record it."""
    _CONTEXT.pending_seeding = settings


def take_pending_seeding() -> dict[str, Any] | None:
    """What ``seed_everything`` set before a run existed (once): ``lakelog.init`` stores it in run.json."""
    settings, _CONTEXT.pending_seeding = _CONTEXT.pending_seeding, None
    return settings


def step_limit() -> int | None:
    """The step limit ``check_determinism(fn)`` set, or None."""
    return _CONTEXT.step_limit


def set_step_limit(limit: int | None) -> int | None:
    """Set the step limit (None: none); returns the previous one so the caller can put it back."""
    previous, _CONTEXT.step_limit = _CONTEXT.step_limit, limit
    return previous
