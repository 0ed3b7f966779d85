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

from lakelog.errors import InvalidArgumentError
from lakelog.integrations import check_watch_every, finish_owned, open_run
from lakelog.write import api
from lakelog.write.run import Run

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


def _global_seed() -> int | None:
    """The seed ``seed_everything`` left in PL_GLOBAL_SEED (an explicit ``seed=`` wins over it)."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value and value.lstrip("-").isdigit() and int(value) >= 0 else None


class LakelogLogger(Logger):
    """A Lightning logger: ``self.log(...)`` values and hyperparameters land in the run's scalars and run.json.

    Use one logger per ``fit``: its run finishes with it. It opens its run on rank 0 (Lightning
    asks for ``experiment`` before training); a ``LakelogCallback`` in the same Trainer writes to
    that run too and opens it on the other ranks, so each rank's values land in its own partition.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "runs",
        name: str | None = None,
        *,
        run: Run | None = None,
        prefix: str = "",
        **init_options: Any,
    ) -> None:
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
        """Write to ``run`` (opened by someone else, who finishes it) instead of opening one."""
        self._run = run
        self._owns_run = False

    JOIN_OPTIONS = ("filesystem", "flush_every_s", "log_every")  # init keywords that hold on every rank

    def join(self, root: str, name: str, *, rank: int, world_size: int) -> Run:
        """Open and write to rank ``rank``'s partitions of the run rank 0 opened (``root``/``name``), with this
        logger's writer options: ``LakelogCallback`` on ranks > 0. The caller finishes the run."""
        options = {k: v for k, v in self._init_options.items() if k in self.JOIN_OPTIONS}
        run = api.init(root, name=name, rank=rank, world_size=world_size, **options)
        self.attach(run)
        return run

    @property
    def experiment(self) -> Run | None:
        """The lakelog Run (None on ranks > 0 when no callback shares its run)."""
        if self._run is None and rank_zero_only.rank == 0:
            self._run = open_run(self._root, self._name, self._init_options, seed=_global_seed())
            self._owns_run = True
        return self._run

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        run = self.experiment
        if run is None:
            return
        values = (
            vars(params)
            if hasattr(params, "__dict__") and not isinstance(params, Mapping)
            else dict(params or {})
        )
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
        finish_owned(self._run, self._owns_run, status="finished" if status == "success" else "failed")


class LakelogCallback(Callback):
    """Opens a lakelog run for ``Trainer.fit``, watches the module, logs predictions, batches and scalars.

    ``watch_every``: capture per-parameter summaries and fingerprints every N optimizer steps (None:
    every ``trainer.log_every_n_steps``); ``watch=False`` turns telemetry off. ``groups``: e.g.
    ``{"backbone": "encoder.", "head": "classifier."}`` (default: the optimizers' param groups).
    ``predictions_every``: log the ``logits`` of every N-th step (default: every step).
    ``scalars``: log what is new in ``trainer.callback_metrics`` every ``trainer.log_every_n_steps``
    steps and after validation and each epoch; ``"auto"`` does it unless a ``LakelogLogger``
    receives them. Any other keyword (``config``, ``seed``, ``mode``, ``tags``, ``filesystem``…)
    goes to ``lakelog.init``; pass ``run=`` to use an open run. With a ``LakelogLogger`` in the
    Trainer, the callback writes to the logger's run (its root, name and options), on every rank.
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
        predictions_every: int | None = None,
        log_batches: bool = True,
        fingerprint_inputs: bool = True,
        scalars: bool | str = "auto",
        **init_options: Any,
    ) -> None:
        super().__init__()
        if scalars not in (True, False, "auto"):
            raise InvalidArgumentError(f"scalars: expected True, False or 'auto', got {scalars!r}")
        check_watch_every(watch_every)
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
        self._scalars = scalars is True
        self._init_options = init_options
        self.run: Run | None = run
        self._owns_run = False
        self._from_setup = False
        self._watcher: Any = None
        self._step = 0
        self._optimizer_steps = 0
        self._logged: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # Called on every rank: the one place a collective (the name broadcast) is allowed.
        if stage != "fit":
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, LakelogLogger)]
        self._scalars = self.scalars is True or (self.scalars == "auto" and not loggers)
        if self.run is not None and self.run.closed and self._from_setup:  # a second fit: a new run
            self.run, self._watcher, self._logged = None, None, {}
        if self.run is not None:
            return
        self._from_setup = True
        if loggers:
            self.run = self._logger_run(trainer, loggers[0])
            return
        self.run = open_run(
            self.root,
            self.name or trainer.strategy.broadcast(Run._generated_name(), src=0),
            self._init_options,
            config=_hparams(pl_module),
            seed=_global_seed(),
            rank=trainer.global_rank,
            world_size=trainer.world_size,
        )
        self._owns_run = True

    def _logger_run(self, trainer: Any, logger: LakelogLogger) -> Run:
        """Share the logger's run: Lightning opened it on rank 0 before ``setup``; other ranks join it."""
        run = logger.experiment
        where = trainer.strategy.broadcast((run.root, run.name) if run is not None else None, src=0)
        if self.name is not None and self.name != where[1]:
            log.warning(
                "lakelog: LakelogCallback(name=%r) writes to the LakelogLogger's run %r", self.name, where[1]
            )
        if run is None:  # a rank > 0: its own partitions of rank 0's run
            run = logger.join(where[0], where[1], rank=trainer.global_rank, world_size=trainer.world_size)
            self._owns_run = True
        return run

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.run is None or not self.watch:
            return
        self._every = self.watch_every or max(1, int(trainer.log_every_n_steps))
        # The optimizer is not handed to watch: Lightning runs forward and backward inside
        # optimizer.step(closure), where an optimizer pre-hook would see the previous step's
        # gradients. Captures happen at the end of the batch instead, with this step's gradients.
        groups = self.groups if self.groups is not None else _optimizer_groups(pl_module, trainer.optimizers)
        self._watcher = self.run.watch(pl_module, None, every=self._every, groups=groups)
        self._optimizer_steps = trainer.global_step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        run = self.run
        if run is None or run.closed:
            return
        step, epoch = self._step, trainer.current_epoch
        if isinstance(outputs, Mapping):
            self._log_outputs(run, outputs, batch, step=step, epoch=epoch, batch_idx=batch_idx)
        stepped = trainer.global_step > self._optimizer_steps
        self._optimizer_steps = trainer.global_step
        if stepped and self._watcher is not None and step % self._every == 0:
            metrics = {
                f"lr/{label}": float(group["lr"])
                for label, group in _param_groups(trainer.optimizers)
                if isinstance(group.get("lr"), int | float)
            }
            if metrics:
                run.log(metrics, step=step, epoch=epoch)
            if self._watcher.error is None:
                self._watcher.capture(step=step)
        if self._scalars and step % max(1, trainer.log_every_n_steps) == 0:
            self._log_callback_metrics(trainer, step)

    def _log_outputs(
        self, run: Run, outputs: Mapping[str, Any], batch: Any, *, step: int, epoch: int, batch_idx: int
    ) -> None:
        if self.log_batches and outputs.get("sample_ids") is not None:
            inputs = _batch_tensors(batch) if self.fingerprint_inputs else None
            run.log_batch(
                sample_ids=outputs["sample_ids"], inputs=inputs, step=step, epoch=epoch, batch_idx=batch_idx
            )
        logits = outputs.get("logits")
        if logits is None:
            return
        if isinstance(logits, torch.Tensor):
            logits = logits.detach()
        loss = outputs.get("sample_loss")
        run.log_predictions(
            logits,
            step=step,
            epoch=epoch,
            labels=outputs.get("labels"),
            keys=outputs.get("keys"),
            loss=loss.detach() if isinstance(loss, torch.Tensor) else loss,
            batch_idx=batch_idx,
            every=self.predictions_every,
        )

    def _log_callback_metrics(self, trainer: Any, step: int, *, by_value: bool = False) -> None:
        """Log the callback metrics Lightning updated since the last call.

        Within training a new value is a new tensor, so identity tells without a device sync. At the
        end of validation or an epoch Lightning rebuilds the tensors, so values are compared: one
        sync there, where Lightning syncs anyway.
        """
        if not self._scalars or self.run is None or self.run.closed:
            return
        fresh = {k: v for k, v in trainer.callback_metrics.items() if not self._same(k, v, by_value)}
        self._logged.update(fresh)
        values = _numbers(fresh)
        if values:
            self.run.log(values, step=step, epoch=trainer.current_epoch)

    def _same(self, key: str, value: Any, by_value: bool) -> bool:
        last = self._logged.get(key)
        if last is value:
            return True
        if not by_value or last is None:
            return False
        if isinstance(last, torch.Tensor) and isinstance(value, torch.Tensor):
            return last.shape == value.shape and bool(torch.equal(last, value.to(last.device)))
        return last == value

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._log_callback_metrics(trainer, self._step, by_value=True)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._log_callback_metrics(trainer, self._step, by_value=True)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.run is not None and self._owns_run and not self.run.closed:
            self.run.update_info(error=f"{type(exception).__name__}: {exception}")
            finish_owned(self.run, self._owns_run, status="failed")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self.run is not None and self._owns_run and not self.run.closed:
            summary = _numbers(trainer.callback_metrics)
            self.run.summary(**{k: float(v) for k, v in summary.items()})  # once, at the end: a sync is fine
            finish_owned(self.run, self._owns_run)


def _param_groups(optimizers: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each optimizer param group with its label: its ``name`` key, else ``group_<j>`` (``opt<i>_group_<j>``)."""
    out = []
    for i, optimizer in enumerate(optimizers):
        for j, group in enumerate(optimizer.param_groups):
            default = f"group_{j}" if len(optimizers) == 1 else f"opt{i}_group_{j}"
            label = group.get("name") if isinstance(group.get("name"), str) and group.get("name") else default
            out.append((label.replace("/", "_"), group))
    return out


def _optimizer_groups(pl_module: Any, optimizers: list[Any]) -> dict[str, Any] | None:
    """Parameter groups for ``watch`` from the optimizers' param groups (as watch does when given the optimizer)."""
    names = {id(p): n for n, p in pl_module.named_parameters()}
    groups: dict[str, Any] = {}
    seen: set[str] = set()
    for label, group in _param_groups(optimizers):
        members = frozenset(names[id(p)] for p in group["params"] if id(p) in names)
        if members and label not in groups:
            groups[label] = lambda name, members=members: name in members
            seen |= members
    rest = frozenset(names.values()) - seen
    if rest and groups:
        groups["not_optimized"] = lambda name: name in rest
    return groups or None


def _hparams(pl_module: Any) -> dict[str, Any]:
    hparams = getattr(pl_module, "hparams", None)
    try:
        return dict(hparams) if hparams else {}
    except (TypeError, ValueError):
        return {}
