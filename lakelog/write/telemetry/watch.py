"""Training telemetry: ``run.watch(model, optimizer)`` and nothing else changes in the training loop.

Two optimizer hooks do the work. The step pre-hook (gradients exist, weights not yet updated)
summarizes and fingerprints the gradients; the post-hook summarizes and fingerprints the weights,
buffers and optimizer state, measures the update since the previous capture, evaluates the holdout
and hands everything to the run's writer thread. On steps that are not captured the hooks only
advance a counter. A capture queues batched device work and starts one non-blocking copy per device;
the Arrow rows are built on the writer thread (``run.submit``).

Step numbering: a capture carries the step of the batch its optimizer step consumes, whatever the
loop's order. A loop that logs a batch (``log_batch``, ``log_predictions``, ``log``) before
``optimizer.step()`` has logged that step when the step pre-hook runs; a loop that logs after
``optimizer.step()`` (no log call between ``watch`` and the first step, or a logged step that lags one
batch behind) logs it after the post-hook, so its capture is held until the next pre-hook (or
``finish``) and stamped with the step logged in between. Optimizer steps with no log call in between
count on from the previous stamp, so gradient accumulation and sparse logging keep one stamp per
optimizer step, and two captures never share a step. A capture happens when its stamp is a multiple of
``every``. A resumed process counts on from the step the run resumes after, and does not capture the
initial state again (the run's true start was captured by the first process). Pass ``step=callable``
(e.g. ``lambda: trainer.global_step``) to set the step exactly, or ``step="optimizer"`` for the
0-based index of the optimizer step.

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
            **_tensor_facts(layout, opt),
        }
    )
    return watcher


def _tensor_facts(layout: groups_mod.Layout, opt: Any) -> dict[str, Any]:
    """What ``doctor`` cannot see in the params table: the model order of the watched parameters (early
    vs late layers), which have ``requires_grad=False`` (with the optimizer group holding each, or None)
    and which the optimizer leaves out. Recorded once, at ``watch`` time."""
    owner: dict[int, str] = {}
    if opt is not None:
        for label, group in zip(layout.opt_groups, opt.param_groups, strict=True):
            owner.update({id(p): label for p in group["params"]})
    return {
        "tensors": [e.name for e in layout.params],
        "requires_grad_off": {
            e.name: owner.get(id(e.tensor)) for e in layout.params if not e.tensor.requires_grad
        },
        "not_in_optimizer": [e.name for e in layout.params if opt is not None and id(e.tensor) not in owner],
    }
