"""Training telemetry: ``run.watch(model, optimizer)`` and nothing else changes in the training loop.

Two optimizer hooks do the work. The step pre-hook (gradients exist, weights not yet updated)
summarizes and fingerprints the gradients; the post-hook summarizes and fingerprints the weights,
buffers and optimizer state, measures the update since the previous capture, evaluates the holdout
and hands everything to the run's writer thread. On steps that are not captured the hooks only
advance a counter. A capture queues batched device work and starts one non-blocking copy per device;
the Arrow rows are built on the writer thread (``run.submit``).

Step numbering: a capture is stamped with the step of your latest log call plus the optimizer steps
taken since that call was first seen (before any log call: the run's step at ``watch`` time plus the
optimizer steps taken), and happens when that stamp is a multiple of ``every``. So when you log the
iteration's step before ``optimizer.step()`` (``log_batch`` at the top of the loop, ``log_predictions``
after the forward, ``log`` of the loss after ``backward``), the params and holdout rows carry the same
step as your other rows. Pass ``step=callable`` (e.g. ``lambda: trainer.global_step``) to set it
exactly, or ``step="optimizer"`` for the 0-based index of the optimizer step.

The hooks live in lakelog/telemetry_watcher.py (``Watcher``), the Arrow rows of a capture are built in
lakelog/telemetry_rows.py; this module checks the options and wires a ``Watcher`` to a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

from . import groups as groups_mod
from . import holdout as holdout_mod
from .errors import InvalidArgumentError
from .telemetry_watcher import Watcher

__all__ = ["FINGERPRINT_KINDS", "KEEP", "Options", "Watcher", "observe_labels", "watch"]

log = logging.getLogger("lakelog")

FINGERPRINT_KINDS = ("param", "grad", "buffer", "optim")
KEEP = ("device", "cpu", "disk", None)


@dataclass
class Options:
    """What ``watch`` accepts besides the model and optimizer (see the README's Telemetry section)."""

    every: int = 100
    groups: Any = None
    holdout: Any = None
    holdout_every: int | None = None
    keep_previous: str | None = "cpu"
    fingerprints: Any = True
    step: Any = None
    prefix: str = ""
    initial: bool = True


def _positive(value: Any, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{arg}: expected a positive int, got {value!r}")
    return value


def _options(options: dict[str, Any]) -> Options:
    names = [f.name for f in fields(Options)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise InvalidArgumentError(f"watch: unknown option(s) {unknown}; expected some of {names}")
    opts = Options(**options)
    _positive(opts.every, "every")
    if opts.holdout_every is None:
        opts.holdout_every = opts.every
    if _positive(opts.holdout_every, "holdout_every") % opts.every:
        raise InvalidArgumentError(
            f"holdout_every: expected a multiple of every={opts.every}, got {opts.holdout_every}"
        )
    if opts.keep_previous == "none":
        opts.keep_previous = None
    if opts.keep_previous not in KEEP:
        raise InvalidArgumentError(f"keep_previous: expected one of {KEEP}, got {opts.keep_previous!r}")
    if opts.step is not None and opts.step != "optimizer" and not callable(opts.step):
        raise InvalidArgumentError(
            f"step: expected None, 'optimizer' or a callable returning the step, got {opts.step!r}"
        )
    fp = opts.fingerprints
    kinds = set(FINGERPRINT_KINDS) if fp is True else set() if fp is False or fp is None else None
    if kinds is None:
        kinds = {fp} if isinstance(fp, str) else set(fp) if isinstance(fp, list | tuple | set) else {None}
        if not kinds <= set(FINGERPRINT_KINDS):
            raise InvalidArgumentError(
                f"fingerprints: expected True, False or some of {FINGERPRINT_KINDS}, got {fp!r}"
            )
    opts.fingerprints = kinds
    return opts


def observe_labels(run: Any, labels: Any, *, num_classes: int | None = None) -> None:
    """Feed a batch's labels to every watcher of ``run`` (the hook ``Run.log_predictions`` calls)."""
    for watcher in list(getattr(run, "_watchers", ())):
        watcher.observe(labels, num_classes=num_classes)


def watch(run: Any, model: Any, optimizer: Any = None, **options: Any) -> Watcher:
    """Watch ``model`` (and ``optimizer``) for ``run``: see the module docstring and ``Options``."""
    opts = _options(options)
    module = groups_mod.unwrap_model(model)
    layout = groups_mod.resolve(model, optimizer, opts.groups, prefix=opts.prefix)
    opt = groups_mod.unwrap_optimizer(optimizer)
    watchers: list[Watcher] = run.__dict__.setdefault("_watchers", [])
    if opt is not None and any(w.optimizer is opt for w in watchers):
        raise InvalidArgumentError(
            "optimizer: this run already watches it; call watcher.detach() before watching again"
        )
    spec = holdout_mod.parse(opts.holdout, module)
    watcher = Watcher(run, layout, opt, opts, spec, module, index=len(watchers))
    watcher.start()
    watchers.append(watcher)
    run.on_finish(watcher.detach)
    if opt is None:
        log.info("lakelog.watch: no optimizer given; call watcher.capture() to capture")
    run.update_info(
        watch={
            "every": opts.every,
            "holdout_every": opts.holdout_every,
            "keep_previous": opts.keep_previous,
            "groups": sorted({e.group or "" for e in layout.params}),
            "fingerprints": sorted(opts.fingerprints),
            "prefix": opts.prefix,
        }
    )
    return watcher
