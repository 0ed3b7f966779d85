"""Hugging Face ``transformers.Trainer``: ``LakelogCallback`` records the run, its logs and per-parameter telemetry.

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[LakelogCallback("runs", name="gpt2-tiny")])

What lands where: ``run.json`` gets the TrainingArguments and the model config (``config``) and the
seed (``args.seed``); every ``on_log`` becomes scalars (``loss``, ``lr`` from ``learning_rate``,
``grad_norm_unclipped`` from HF's ``grad_norm``, which is measured before clipping, ``eval_*``…);
``run.watch`` captures weights, gradients (after clipping, as the optimizer sees them) and
optimizer state every ``watch_every`` optimizer steps (default: ``args.logging_steps``).

Steps follow the Trainer: ``state.global_step`` after the optimizer step, so the parameters captured
after the k-th update and the loss HF logs at step k share step k. On several processes every rank
writes its own partitions of one run whose name rank 0 chooses. Per-sample predictions are not
visible to a callback: call ``lakelog.log_predictions`` from a ``compute_loss`` override (the
callback makes its run the current one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from lakelog.integrations import check_watch_every, finish_owned, open_run
from lakelog.write.distributed import shared_run_name
from lakelog.write.run import Run
from lakelog.write.unwrap import unwrap_optimizer

log = logging.getLogger("lakelog")

__all__ = ["LakelogCallback"]

RENAMED = {"learning_rate": "lr", "grad_norm": "grad_norm_unclipped"}
"""HF log keys stored under another name: ``lr`` as in lakelog's ``lr/<group>``, and HF's grad norm
(taken before clipping) kept apart from telemetry's ``grad_norm`` (after clipping)."""
FINAL_KEYS = (
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "total_flos",
    "train_loss",
)
"""Logged once at the end of training: they go to the run's summary rather than its scalars."""


def _config(args: Any, model: Any) -> dict[str, Any]:
    config: dict[str, Any] = {}
    try:
        config["training_args"] = args.to_sanitized_dict()
    except Exception as exc:
        log.debug("lakelog: TrainingArguments not recorded: %r", exc)
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "to_dict"):
        config["model_config"] = model_config.to_dict()
    return config


class LakelogCallback(TrainerCallback):
    """Opens a lakelog run when training begins, watches the model, logs what the Trainer logs, finishes at the end.

    ``watch_every``: capture every N optimizer steps (None: ``args.logging_steps``); ``watch=False``
    turns telemetry off. ``groups``: name parameter groups by module prefix (see ``run.watch``).
    Any other keyword (``config``, ``mode``, ``tags``, ``filesystem``…) goes to ``lakelog.init``;
    pass ``run=`` to write to a run you opened.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "runs",
        name: str | None = None,
        *,
        run: Run | None = None,
        watch: bool = True,
        watch_every: int | None = None,
        groups: Any = None,
        **init_options: Any,
    ) -> None:
        check_watch_every(watch_every)
        self.root = root
        self.name = name
        self.watch = watch
        self.watch_every = watch_every
        self.groups = groups
        self._init_options = init_options
        self.run: Run | None = run
        self._owns_run = False
        self._watcher: Any = None
        self._state: Any = None

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any
    ) -> None:
        self._state = state
        if self.run is not None and self.run.closed and self._owns_run:  # train() again: a new run
            self.run, self._watcher = None, None
        if self.run is None:
            # Called on every process, before the first step: the place for the name broadcast.
            self.run = open_run(
                self.root,
                shared_run_name(self.name),
                self._init_options,
                config=_config(args, model),
                seed=args.seed,
                rank=args.process_index,
                world_size=args.world_size,
            )
            self._owns_run = True
        if self.watch and model is not None and self._watcher is None:
            # state.logging_steps is args.logging_steps resolved (a fraction of max_steps becomes steps).
            every = self.watch_every or max(1, int(state.logging_steps or args.logging_steps or 1))
            # The stamp is read in the optimizer's pre-hook, before HF increments global_step. The
            # torch optimizer inside accelerate's AcceleratedOptimizer is the one whose hooks fire.
            self._watcher = self.run.watch(
                model,
                unwrap_optimizer(optimizer),
                every=every,
                groups=self.groups,
                step=lambda: self._state.global_step + 1,
            )

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        run = self.run
        if run is None or run.closed or not logs:
            return
        values: dict[str, float] = {}
        final: dict[str, float] = {}
        for key, value in logs.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            (final if key in FINAL_KEYS else values)[RENAMED.get(key, key)] = float(value)
        epoch = int(state.epoch) if state.epoch is not None else None
        if values:
            run.log(values, step=state.global_step, epoch=epoch)
        if final:
            run.summary(**final)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is None or not self._owns_run or self.run.closed:
            return
        self.run.summary(global_step=state.global_step)
        finish_owned(self.run, self._owns_run)
