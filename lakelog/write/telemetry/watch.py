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

The hooks live in ``watcher.py`` (``Watcher``), the Arrow rows of a capture are built in ``rows.py``,
the options are checked in ``options.py``; this module wires a ``Watcher`` to a run.
"""

from __future__ import annotations

import logging
from typing import Any

from lakelog.errors import InvalidArgumentError
from lakelog.write.telemetry import groups as groups_mod
from lakelog.write.telemetry import holdout as holdout_mod
from lakelog.write.telemetry.options import FINGERPRINT_KINDS, KEEP, Options, parse_options
from lakelog.write.telemetry.watcher import Watcher

__all__ = ["FINGERPRINT_KINDS", "KEEP", "Options", "Watcher", "observe_labels", "watch"]

log = logging.getLogger("lakelog")


def observe_labels(run: Any, labels: Any, *, num_classes: int | None = None) -> None:
    """Feed a batch's labels to every watcher of ``run`` (the hook ``Run.log_predictions`` calls)."""
    for watcher in run.watchers:
        watcher.observe(labels, num_classes=num_classes)


def watch(run: Any, model: Any, optimizer: Any = None, **options: Any) -> Watcher:
    """Watch ``model`` (and ``optimizer``) for ``run``: see the module docstring and ``Options``."""
    opts = parse_options(options)
    module = groups_mod.unwrap_model(model)
    layout = groups_mod.resolve(model, optimizer, opts.groups, prefix=opts.prefix)
    opt = groups_mod.unwrap_optimizer(optimizer)
    watchers = run.watchers
    if opt is not None and any(w.optimizer is opt for w in watchers):
        raise InvalidArgumentError(
            "optimizer: this run already watches it; call watcher.detach() before watching again"
        )
    spec = holdout_mod.parse(opts.holdout, module)
    watcher = Watcher(run, layout, opt, opts, spec, module, index=len(watchers))
    watcher.start()
    run.attach_watcher(watcher)
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
