"""PyTorch Lightning: ``LakelogCallback`` (run, telemetry, predictions, batches) and ``LakelogLogger`` (``self.log``).

    trainer = Trainer(callbacks=[LakelogCallback("runs", name="baseline", watch_every=10)],
                      logger=LakelogLogger())

The callback opens the run at ``setup`` (every rank, one shared name), watches the module, and reads
what ``training_step`` returns. The contract: return a dict, and the keys it knows are used::

    return {"loss": loss,                       # Lightning's own key
            "logits": logits,                   # (batch, classes): one predictions row per sample
            "labels": y,                        # class ids, stored with the logits
            "keys": {"image": names},           # named per-sample id columns
            "sample_loss": per_sample_loss,     # optional per-sample loss column
            "sample_ids": ids}                  # the batch's sample ids in order (batches table)

Steps follow Lightning's logger: a batch's step is ``trainer.global_step`` when it starts (the
number of optimizer steps taken before it), so predictions, ``self.log`` scalars and parameter
captures of one batch share a step. Nothing here synchronises the device: tensors are handed to the
run, which copies them off the training thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers.logger import Logger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
except ImportError:  # the standalone pytorch_lightning package
    from pytorch_lightning.callbacks import Callback
    from pytorch_lightning.loggers.logger import Logger
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

from .. import api
from ..errors import InvalidArgumentError
from ..run import Run

log = logging.getLogger("lakelog")

__all__ = ["LakelogCallback", "LakelogLogger"]


def _numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The loggable scalars: numbers and one-element tensors (left on their device; the run copies them)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() == 1 and not value.is_complex():
                out[name] = value.detach()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out


def _batch_tensors(batch: Any) -> Any:
    """The tensors of a batch (a tensor, or a list/tuple/dict holding some) for the input fingerprint."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        found = {str(k): v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    elif isinstance(batch, list | tuple):
        found = {str(i): v for i, v in enumerate(batch) if isinstance(v, torch.Tensor)}
    else:
        return None
    return found or None


def _seed(options: dict[str, Any]) -> int | None:
    """``seed_everything`` leaves the seed in PL_GLOBAL_SEED; an explicit ``seed=`` wins."""
    if options.get("seed") is not None:
        return options["seed"]
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value and value.lstrip("-").isdigit() and int(value) >= 0 else None


class LakelogLogger(Logger):
    """A Lightning logger: ``self.log(...)`` values and hyperparameters land in the run's scalars and run.json.

    Alone, it opens a run on rank 0 only (a logger cannot agree on a name across ranks); with a
    ``LakelogCallback`` in the same Trainer it writes to the callback's run on every rank, so each
    rank's logged values land in its own partition.
    """

    def __init__(self, root: str | os.PathLike[str] = "runs", name: str | None = None, *, run: Run | None = None,
                 prefix: str = "", **init_options: Any) -> None:
        super().__init__()
        self._root = root
        self._name = name
        self._prefix = prefix
        self._init_options = init_options
        self._run = run
        self._owns_run = False

    @property
    def name(self) -> str:
        return "lakelog"

    @property
    def version(self) -> str:
        return self._run.name if self._run is not None else (self._name or "")

    @property
    def save_dir(self) -> str | None:
        return self._run.root if self._run is not None else str(self._root)

    def attach(self, run: Run) -> None:
        """Write to ``run`` (the callback's) instead of opening one."""
        self._run = run
        self._owns_run = False

    @property
    def experiment(self) -> Run | None:
        """The lakelog Run (None on ranks > 0 when no callback shares its run)."""
        if self._run is None and rank_zero_only.rank == 0:
            options = dict(self._init_options)
            options["seed"] = _seed(options)
            self._run = api.init(self._root, name=self._name, **options)
            self._owns_run = True
        return self._run

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        run = self.experiment
        if run is None:
            return
        values = vars(params) if hasattr(params, "__dict__") and not isinstance(params, Mapping) else dict(params or {})
        run.update_info(config={**run.info.get("config", {}), **values})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        run = self.experiment
        if run is None or run.closed:
            return
        epoch = metrics.get("epoch")
        values = _numbers({k: v for k, v in metrics.items() if k != "epoch"})
        if self._prefix:
            values = {f"{self._prefix}{self.group_separator}{k}": v for k, v in values.items()}
        if values:
            run.log(values, step=step, epoch=int(epoch) if isinstance(epoch, int | float) else None)

    def save(self) -> None:
        """Nothing to do: the run's writer thread flushes on its own schedule and at finish."""

    def finalize(self, status: str) -> None:
        if self._run is not None and self._owns_run and not self._run.closed:
            self._run.finish(status="finished" if status == "success" else "failed")


class LakelogCallback(Callback):
    """Opens a lakelog run for ``Trainer.fit``, watches the module, logs predictions, batches and scalars.

    ``watch_every``: capture per-parameter summaries and fingerprints every N optimizer steps (None:
    every ``trainer.log_every_n_steps``); ``watch=False`` turns telemetry off. ``groups``: ``{"backbone": "encoder.", "head": "classifier."}`` (see ``run.watch``).
    ``predictions_every``: log the ``logits`` of every N-th step (default: every step). ``scalars``:
    log ``trainer.callback_metrics`` every ``trainer.log_every_n_steps`` steps; ``"auto"`` does it
    unless a ``LakelogLogger`` already receives them. Any other keyword (``config``, ``seed``,
    ``mode``, ``tags``, ``filesystem``…) goes to ``lakelog.init``; pass ``run=`` to use an open run.
    """

    def __init__(self, root: str | os.PathLike[str] = "runs", name: str | None = None, *, run: Run | None = None,
                 watch: bool = True, watch_every: int | None = None, groups: Any = None, predictions_every: int | None = None,
                 log_batches: bool = True, fingerprint_inputs: bool = True, scalars: bool | str = "auto",
                 **init_options: Any) -> None:
        super().__init__()
        if scalars not in (True, False, "auto"):
            raise InvalidArgumentError(f"scalars: expected True, False or 'auto', got {scalars!r}")
        if watch_every is not None and (isinstance(watch_every, bool) or not isinstance(watch_every, int)
                                        or watch_every < 1):
            raise InvalidArgumentError(f"watch_every: expected a positive int or None, got {watch_every!r}")
        self.root = root
        self.name = name
        self.watch = watch
        self.watch_every = watch_every
        self._every = 1
        self.groups = groups
        self.predictions_every = predictions_every
        self.log_batches = log_batches
        self.fingerprint_inputs = fingerprint_inputs
        self.scalars = scalars
        self._init_options = init_options
        self.run: Run | None = run
        self._owns_run = False
        self._watcher: Any = None
        self._step = 0
        self._optimizer_steps = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        if self.run is None:
            # Called on every rank: the one place a collective (the name broadcast) is allowed.
            name = self.name or trainer.strategy.broadcast(Run._generated_name(), src=0)
            options = dict(self._init_options)
            options["seed"] = _seed(options)
            config = {**_hparams(pl_module), **(options.pop("config", None) or {})}
            options.setdefault("rank", trainer.global_rank)
            options.setdefault("world_size", trainer.world_size)
            self.run = api.init(self.root, name=name, config=config, **options)
            self._owns_run = True
        loggers = [lg for lg in trainer.loggers if isinstance(lg, LakelogLogger)]
        for logger in loggers:
            if logger._run is None:
                logger.attach(self.run)
        if self.scalars == "auto":
            self.scalars = not any(lg.experiment is self.run for lg in loggers)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.run is None or not self.watch:
            return
        self._every = self.watch_every or max(1, int(trainer.log_every_n_steps))
        # The optimizer is not handed to watch: Lightning runs forward and backward inside
        # optimizer.step(closure), where an optimizer pre-hook would see the previous step's
        # gradients. Captures happen at the end of the batch instead, with this step's gradients.
        self._watcher = self.run.watch(pl_module, None, every=self._every, groups=self.groups)
        self._optimizer_steps = trainer.global_step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        run = self.run
        if run is None or run.closed:
            return
        step, epoch = self._step, trainer.current_epoch
        if isinstance(outputs, Mapping):
            self._log_outputs(run, outputs, batch, step=step, epoch=epoch, batch_idx=batch_idx)
        stepped = trainer.global_step > self._optimizer_steps
        self._optimizer_steps = trainer.global_step
        if stepped and self._watcher is not None and step % self._every == 0:
            metrics = {}
            for i, optimizer in enumerate(trainer.optimizers):
                for j, group in enumerate(optimizer.param_groups):
                    label = group.get("name") or (f"group_{j}" if len(trainer.optimizers) == 1 else f"opt{i}_group_{j}")
                    if isinstance(group.get("lr"), int | float):
                        metrics[f"lr/{label}"] = float(group["lr"])
            if metrics:
                run.log(metrics, step=step, epoch=epoch)
            if self._watcher.error is None:
                self._watcher.capture(step=step)
        if self.scalars and step % max(1, trainer.log_every_n_steps) == 0:
            values = _numbers({k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_epoch")})
            if values:
                run.log(values, step=step, epoch=epoch)

    def _log_outputs(self, run: Run, outputs: Mapping[str, Any], batch: Any, *, step: int, epoch: int,
                     batch_idx: int) -> None:
        if self.log_batches and outputs.get("sample_ids") is not None:
            inputs = _batch_tensors(batch) if self.fingerprint_inputs else None
            run.log_batch(sample_ids=outputs["sample_ids"], inputs=inputs, step=step, epoch=epoch, batch_idx=batch_idx)
        logits = outputs.get("logits")
        if logits is None:
            return
        if isinstance(logits, torch.Tensor):
            logits = logits.detach()
        loss = outputs.get("sample_loss")
        run.log_predictions(
            logits, step=step, epoch=epoch, labels=outputs.get("labels"), keys=outputs.get("keys"),
            loss=loss.detach() if isinstance(loss, torch.Tensor) else loss, batch_idx=batch_idx,
            every=self.predictions_every,
        )

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.scalars and self.run is not None and not self.run.closed:
            values = _numbers({k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")})
            if values:
                self.run.log(values, step=self._step, epoch=trainer.current_epoch)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.scalars and not trainer.sanity_checking and self.run is not None and not self.run.closed:
            values = _numbers({k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")})
            if values:
                self.run.log(values, step=self._step, epoch=trainer.current_epoch)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.run is not None and self._owns_run and not self.run.closed:
            self.run.update_info(error=f"{type(exception).__name__}: {exception}")
            self.run.finish(status="failed")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self.run is not None and self._owns_run and not self.run.closed:
            summary = _numbers(trainer.callback_metrics)
            self.run.summary(**{k: float(v) for k, v in summary.items()})  # once, at the end: a sync is fine
            self.run.finish()


def _hparams(pl_module: Any) -> dict[str, Any]:
    hparams = getattr(pl_module, "hparams", None)
    try:
        return dict(hparams) if hparams else {}
    except (TypeError, ValueError):
        return {}
