"""Full-state dumps: model and optimizer state to safetensors, written off the training thread.

Why safetensors rather than ``torch.save``: loading never runs pickled code, and a reader can take
one tensor at a time without loading the rest. The training thread only
starts host copies (cloned on CPU, ``non_blocking`` into pinned memory on CUDA); a daemon thread
waits for them, writes each file under a temporary name and renames it, then appends a row to the
``dump_index`` table. A bounded queue keeps at most ``max_pending`` dumps in memory.

Tied weights (one tensor under two names) are stored once and the tie is recorded in the
metadata, so ``load_dump`` gives back one tensor under both names. Optimizer state is flattened to
``<param name>.<state key>`` (``fc.weight.exp_avg``, ``fc.weight.momentum_buffer``, ``fc.weight.step``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lakelog.errors import DumpError, InvalidArgumentError, RunClosedError
from lakelog.lake import dump_layout as L
from lakelog.lake.checks import non_negative_int, optional_positive_int
from lakelog.lake.schemas import DUMP_INDEX
from lakelog.write.background import Worker
from lakelog.write.dumps.files import Dump, load_dump, write_dump_files
from lakelog.write.dumps.optim import flatten_optimizer, optimizer_state_dict
from lakelog.write.hostcopy import HostCopy
from lakelog.write.unwrap import unwrap_model

__all__ = ["Dump", "DumpWriter", "flatten_optimizer", "load_dump", "optimizer_state_dict", "write_dump_files"]

log = logging.getLogger("lakelog")


def _host_copy(tensor: torch.Tensor) -> HostCopy:
    """A contiguous CPU copy started on the training thread (``lakelog.write.hostcopy``); dense tensors only."""
    if tensor.layout != torch.strided:
        raise InvalidArgumentError(f"dump: only dense tensors can be dumped, got layout {tensor.layout}")
    return HostCopy(tensor)


def _tie_key(t: torch.Tensor) -> tuple:
    return (t.device, t.dtype, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())


def host_state(items: list[tuple[str, torch.Tensor]]) -> tuple[dict[str, HostCopy], dict[str, str]]:
    """Start one host copy per distinct tensor; a name that is the very same view of another is a tie."""
    seen: dict[tuple, str] = {}
    ties: dict[str, str] = {}
    copies: dict[str, HostCopy] = {}
    for name, tensor in items:
        if tensor.numel() > 0:  # every empty tensor has data_ptr 0: never a tie
            canonical = seen.setdefault(_tie_key(tensor), name)
            if canonical != name:
                ties[name] = canonical
                continue
        copies[name] = _host_copy(tensor)
    return copies, ties


def model_items(model: Any) -> list[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs of a module's state dict, or of a state dict; DDP and compile wrappers are
    unwrapped, so the names are those of a plain run and the two compare."""
    model = unwrap_model(model)
    if isinstance(model, torch.nn.Module):
        state = model.state_dict()
    elif isinstance(model, Mapping):
        state = model
    else:
        raise InvalidArgumentError(
            f"model: expected an nn.Module or a state dict, got {type(model).__name__}"
        )
    items = []
    for name, value in state.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"model: state dict keys must be strings, got {name!r}")
        if isinstance(value, torch.Tensor):
            items.append((name, value))
        else:  # e.g. a module's _extra_state object: not a tensor, safetensors cannot hold it
            log.warning("lakelog: dump skips %r: it is a %s, not a tensor", name, type(value).__name__)
    return items


def _scalar(value: Any, arg: str) -> float | HostCopy | None:
    """A loss or accuracy; a tensor is copied without ``.item()``, which would wait for the device."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InvalidArgumentError(
                f"{arg}: expected a number or a one-element tensor, got shape {tuple(value.shape)}"
            )
        return _host_copy(value.reshape(()))
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return float(value)
    raise InvalidArgumentError(
        f"{arg}: expected a number, a one-element tensor or None, got {type(value).__name__}"
    )


@dataclass
class _Job:
    step: int
    epoch: int
    model: dict[str, HostCopy]
    names: list[str]
    ties: dict[str, str]
    optimizer: dict[str, HostCopy] | None
    optimizer_meta: dict[str, Any] | None
    optimizer_ties: dict[str, str] | None
    loss: float | HostCopy | None
    acc: float | HostCopy | None
    extra: dict[str, str]
    done: threading.Event = field(default_factory=threading.Event)
    row: pa.Table | None = None  # the dump_index row, once the files are on disk

    def index_row(self) -> dict[str, pa.Table | None]:
        """Runs on the run's Parquet writer thread: waits until this dump's files are written."""
        self.done.wait()
        return {L.INDEX_TABLE: self.row}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class DumpWriter:
    """Writes a run's dumps on one daemon thread; ``run.dump`` creates it once per run.

    ``every=N`` dumps only steps divisible by N. Of the dumps that remain (numbered ``step // every``,
    or by call when ``every`` is None), ``keep_first=K`` keeps the first K and ``keep_every=M`` keeps
    every M-th after those; with both unset every call dumps. Only rank 0 dumps: DDP replicas are equal.
    """

    def __init__(
        self,
        run: Any,
        every: int | None = None,
        keep_first: int | None = None,
        keep_every: int | None = None,
        *,
        max_pending: int = 2,
    ) -> None:
        self.run = run
        self.configure(every=every, keep_first=keep_first, keep_every=keep_every)
        self.written: list[Path] = []
        self._calls = 0
        self._estimated = False
        self._closed = False
        self._error: BaseException | None = None
        # The shared background design (lakelog.write.background): a bounded queue of dumps, one daemon
        # thread started by the first dump, flush() blocking until the queued dumps are written.
        self._worker = Worker(
            "lakelog-dumps",
            self._handle,
            max_items=optional_positive_int(max_pending, "max_pending") or 2,
            start=False,
        )

    def configure(
        self, *, every: int | None = None, keep_first: int | None = None, keep_every: int | None = None
    ) -> None:
        """Change which steps are dumped; dumps already written or queued stay as they are."""
        self.every = optional_positive_int(every, "every")
        self.keep_first = optional_positive_int(keep_first, "keep_first")
        self.keep_every = optional_positive_int(keep_every, "keep_every")

    # -- training thread ---------------------------------------------------------------------
    def wanted(self, step: int) -> bool:
        """Whether a dump at ``step`` is kept under the every/keep options (counts the call)."""
        if self.every and step % self.every:
            return False
        index = step // self.every if self.every else self._calls
        self._calls += 1
        first, nth = self.keep_first, self.keep_every
        if first is None and nth is None:
            return True
        if first is not None and index < first:
            return True
        return nth is not None and (index - (first or 0)) % nth == 0

    def dump(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        step: int | None = None,
        epoch: int | None = None,
        loss: Any = None,
        acc: Any = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Path | None:
        """Queue one dump; returns its step folder, or None when the options (or the rank) skip it."""
        self._check()
        step = self.run.step if step is None else non_negative_int(step, "step")
        epoch = self.run.epoch if epoch is None else epoch
        if getattr(self.run, "rank", 0) != 0 or not self.wanted(step):
            return None
        items = model_items(model)
        copies, ties = host_state(items)
        job = _Job(
            step,
            int(epoch or 0),
            copies,
            [n for n, _ in items],
            ties,
            None,
            None,
            None,
            _scalar(loss, "loss"),
            _scalar(acc, "acc"),
            {str(k): str(v) for k, v in (metadata or {}).items()},
        )
        if optimizer is not None:
            flat, job.optimizer_meta = flatten_optimizer(optimizer, model)
            job.optimizer, job.optimizer_ties = host_state(flat)
        if not self._estimated:
            self._estimate(job)
        self._worker.put(job)  # waits while max_pending dumps are in flight: memory stays bounded
        submit = getattr(self.run, "submit", None)
        if submit is not None:  # queued here, on the training thread, so the row keeps the run's order
            submit(job.index_row, epoch=job.epoch, table=L.INDEX_TABLE, rows=1)
        return L.step_dir(self.run.path, step)

    def flush(self) -> None:
        """Return once every queued dump is on disk; raises DumpError if one failed."""
        if not self._worker.closed:
            self._worker.flush()
        self._raise_error()

    def close(self) -> None:
        """Wait for every pending dump, stop the thread; later dumps raise."""
        if self._closed:
            return
        self._closed = True
        self._worker.close()
        self._raise_error()

    def _check(self) -> None:
        self._raise_error()
        if self._closed:
            raise RunClosedError(f"run {self.run.name!r}: dumps are closed (the run is finished)")

    def _raise_error(self) -> None:
        if self._error is not None:
            raise DumpError(f"run {self.run.name!r}: writing a dump failed: {self._error}") from self._error

    def _estimate(self, job: _Job) -> None:
        """Say how big dumps are before the first one lands, so 100 GB of them is no surprise."""
        self._estimated = True
        model = sum(c.tensor.nbytes for c in job.model.values())
        opt = sum(c.tensor.nbytes for c in (job.optimizer or {}).values())
        per = model + opt
        msg = (
            f"lakelog: each dump of run {self.run.name!r} is about {_size(per)} "
            f"(model {_size(model)}, optimizer {_size(opt)}) under {self.run.path / L.DUMPS_DIR}"
        )
        if self.keep_first is not None and self.keep_every is None:
            msg += f"; keep_first={self.keep_first} caps them at about {_size(per * self.keep_first)}"
        elif self.every:
            rate = per * 1000 / self.every / (self.keep_every or 1)
            msg += f"; with every={self.every} that is about {_size(rate)} per 1000 steps"
        else:
            msg += "; every call to dump() adds that much (run.configure_dumps(every=, keep_first=, keep_every=) keeps fewer)"
        log.warning(msg)

    # -- dump thread -------------------------------------------------------------------------
    def _handle(self, job: _Job) -> None:
        """One dump, on the dump thread; after a failure the later dumps are skipped (the first error is
        kept and raised by the next dump()/flush()/close())."""
        try:
            if self._error is None:
                self._write(job)
        except BaseException as exc:
            log.error("lakelog: dump of run %r failed: %s", self.run.name, exc)
            self._error = exc
        finally:
            job.done.set()  # the dump_index row builder waits on this

    def _write(self, job: _Job) -> None:
        def value(v: float | HostCopy | None) -> float | None:
            return None if v is None else float(v.get().item() if isinstance(v, HostCopy) else v)

        loss, acc = value(job.loss), value(job.acc)
        created = datetime.now(UTC)
        meta = {
            **job.extra,
            L.META_FORMAT: L.FORMAT,
            L.META_STEP: str(job.step),
            L.META_EPOCH: str(job.epoch),
            L.META_LOSS: "" if loss is None else repr(loss),
            L.META_ACC: "" if acc is None else repr(acc),
            L.META_RUN: str(self.run.name),
            L.META_RANK: str(getattr(self.run, "rank", 0)),
            L.META_CREATED: created.isoformat(timespec="milliseconds"),
        }
        model = {n: c.get() for n, c in job.model.items()}
        opt = None if job.optimizer is None else {n: c.get() for n, c in job.optimizer.items()}
        folder = L.step_dir(self.run.path, job.step)
        model_bytes, opt_bytes = write_dump_files(
            folder,
            model,
            opt,
            meta,
            names=job.names,
            ties=job.ties,
            optimizer_meta=job.optimizer_meta,
            optimizer_ties=job.optimizer_ties,
        )
        self.written.append(folder)
        row = {
            "step": [job.step],
            "path": [f"{L.DUMPS_DIR}/step={job.step}/{L.MODEL_FILE}"],
            "model_bytes": [model_bytes],
            "optimizer_bytes": [opt_bytes],
            "n_tensors": [len(model) + len(opt or {})],
            "loss": [loss],
            "acc": [acc],
            "created": [created],
        }
        job.row = pa.table(row, schema=DUMP_INDEX)
        if getattr(self.run, "submit", None) is None:  # a run-like object without a row queue
            self.run.write_rows(L.INDEX_TABLE, job.row, epoch=job.epoch)
