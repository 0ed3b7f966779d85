"""A training run: its folder, its run.json and its background writer.

``lakelog.init`` creates one and makes it the current run, so a training loop can call the
module-level functions (``lakelog.log``…) without passing it around.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from lakelog.errors import InvalidArgumentError, LakeNotWritableError, RunClosedError, RunExistsError
from lakelog.lake.checks import non_negative_int, positive_number
from lakelog.lake.layout import RUN_FILE, Lake, check_run_name
from lakelog.write import records
from lakelog.write.context import release_current
from lakelog.write.determinism.rng import rng_fingerprints
from lakelog.write.dumps.writer import DumpWriter
from lakelog.write.env import environment, rank_and_world_size
from lakelog.write.telemetry.watch import observe_labels, watch
from lakelog.write.writer import PartWriter

log = logging.getLogger("lakelog")

Mode = Literal["error", "resume", "overwrite"]
_MODES = ("error", "resume", "overwrite")
_live_runs: set[Run] = set()  # strong references: an unfinished run is flushed at exit even if dropped


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


class Run:
    """One training run in a lake; use ``lakelog.init`` to create it."""

    def __init__(
        self,
        root: str | os.PathLike[str] = "runs",
        name: str | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        seed: int | None = None,
        mode: Mode = "error",
        log_every: int = 1,
        flush_every_s: float = 10.0,
        rank: int | None = None,
        world_size: int | None = None,
        tags: Mapping[str, Any] | None = None,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        if mode not in _MODES:
            raise InvalidArgumentError(f"mode: expected one of {_MODES}, got {mode!r}")
        if config is not None and not isinstance(config, Mapping):
            raise InvalidArgumentError(f"config: expected a mapping (dict), got {type(config).__name__}")
        if seed is not None:
            non_negative_int(seed, "seed")
        self.log_every = non_negative_int(log_every, "log_every") or 1
        flush_every_s = positive_number(flush_every_s, "flush_every_s")
        env_rank, env_world = rank_and_world_size()
        self.rank = env_rank if rank is None else non_negative_int(rank, "rank")
        self.world_size = env_world if world_size is None else non_negative_int(world_size, "world_size")
        if name is None and self.world_size > 1:
            log.warning(
                "lakelog.init: no name given with world_size=%d: each rank generates its own run name; "
                "pass name= or lakelog.write.distributed.shared_run_name() so all ranks write one run",
                self.world_size,
            )
        self.name = check_run_name(name) if name is not None else self._generated_name()
        self.lake = Lake.open(root, filesystem=filesystem)
        self.run_dir = self.lake.run_dir(self.name)
        self._step = 0
        self._epoch = 0
        self._log_calls = 0
        self._summary: dict[str, Any] = {}
        self._last_scalars: dict[str, float] = {}
        self._watchers: list[Any] = []
        self._loader_passes: dict[str, int] = {}
        self._finish_callbacks: list[Callable[[], None]] = []
        self._closed = False
        self._started = time.monotonic()
        self._info = self._open_folder(mode, dict(config or {}), seed, dict(tags or {}))
        self._writer = PartWriter(self.lake, self.run_dir, self.rank, flush_every_s=float(flush_every_s))
        self._scalar_rows: collections.deque[records.ScalarRow] = collections.deque()
        self._writer.add_source(records.scalar_source(self._scalar_rows, self._last_scalars))
        self._dumper: Any = None
        self._dump_options: dict[str, Any] = {}
        _live_runs.add(self)

    # -- identity ---------------------------------------------------------------------------
    @staticmethod
    def _generated_name() -> str:
        # uuid4 reads os.urandom: no Python, NumPy or torch random number is drawn.
        return f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"

    @property
    def path(self) -> Path:
        """The run folder on local disk (object-store runs have no local path)."""
        if not self.lake.local:
            raise InvalidArgumentError(
                f"path: run {self.name!r} lives in {self.lake.root}, not on local disk"
            )
        return Path(self.run_dir)

    @property
    def root(self) -> str:
        return self.lake.root

    @property
    def info(self) -> dict[str, Any]:
        """What run.json holds (a copy)."""
        return json.loads(json.dumps(self._info, default=_json_default))

    @property
    def step(self) -> int:
        """The last step given to any log call (0 before the first)."""
        return self._step

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def log_calls(self) -> int:
        """How many log calls (log, log_predictions, log_batch, dump) this process made: lets telemetry
        tell whether the loop logs a batch before or after ``optimizer.step()``."""
        return self._log_calls

    @property
    def closed(self) -> bool:
        return self._closed

    def _open_folder(self, mode: Mode, config: dict, seed: int | None, tags: dict) -> dict[str, Any]:
        lake = self.lake
        if lake.is_file(lake.base):
            raise LakeNotWritableError(
                f"root: {lake.root!r} is a file; expected a folder for the lake (or a new path)"
            )
        run_file = f"{self.run_dir}/{RUN_FILE}" if not lake.local else os.path.join(self.run_dir, RUN_FILE)
        exists = lake.exists(run_file)
        previous: dict[str, Any] = {}
        if exists and self.rank == 0:
            if mode == "error":
                raise RunExistsError(
                    f"run {self.name!r} already exists in {lake.root}: pass mode='resume' to append to it, "
                    "mode='overwrite' to replace it, or another name"
                )
            if mode == "overwrite":
                if lake.local:
                    shutil.rmtree(self.run_dir)
                else:
                    lake.fs.delete_dir(self.run_dir)
                exists = False
            else:
                previous = json.loads(lake.read_text(run_file))
        try:
            lake.makedirs(self.run_dir)
        except (PermissionError, FileNotFoundError, NotADirectoryError, FileExistsError, OSError) as exc:
            raise LakeNotWritableError(f"root: cannot create run folder {self.run_dir!r} ({exc})") from exc
        env = environment(self.rank, self.world_size)
        if previous:
            info = previous
            after_step = (previous.get("summary") or {}).get("last_step")
            info.setdefault("resumes", []).append(
                {"at": _utc_now(), "after_step": after_step, "environment": env}
            )
            if config:
                info["config"] = config
            info["status"] = "running"
        else:
            info = {
                "name": self.name,
                "created": _utc_now(),
                "status": "running",
                "config": config,
                "seed": seed,
                "tags": tags,
                "world_size": self.world_size,
                "environment": env,
                "summary": {},
            }
        if seed is not None:
            info["seed"] = seed
        if self.rank == 0:
            self._write_info(info, run_file)
        self._run_file = run_file
        return info

    def _write_info(self, info: dict[str, Any], run_file: str | None = None) -> None:
        data = json.dumps(info, indent=2, default=_json_default).encode()
        try:
            self.lake.write_bytes_atomic(run_file or self._run_file, data)
        except OSError as exc:
            raise LakeNotWritableError(f"root: cannot write {run_file or self._run_file!r} ({exc})") from exc

    def update_info(self, **fields: Any) -> None:
        """Merge fields into run.json (rank 0 only writes it); used by seeding, watch and summaries."""
        self._info.update(fields)
        if self.rank == 0:
            self._write_info(self._info)

    # -- logging ----------------------------------------------------------------------------
    def _position(self, step: int | None, epoch: int | None) -> tuple[int, int]:
        if self._closed:
            raise RunClosedError(f"run {self.name!r} is finished: start a new one with lakelog.init(...)")
        self._log_calls += 1
        if step is not None:
            self._step = non_negative_int(step, "step")
        if epoch is not None:
            self._epoch = non_negative_int(epoch, "epoch")
        return self._step, self._epoch

    def _queue_epoch(self, epoch: int | None) -> int:
        """The epoch partition for rows queued by helpers; unlike log calls, it never moves the run's epoch."""
        if self._closed:
            raise RunClosedError(f"run {self.name!r} is finished: start a new one with lakelog.init(...)")
        return self._epoch if epoch is None else non_negative_int(epoch, "epoch")

    def _skip(self, step: int, every: int | None) -> bool:
        every = self.log_every if every is None else (non_negative_int(every, "every") or 1)
        return every > 1 and step % every != 0

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, epoch: int | None = None) -> None:
        """Scalars in long format; values may be numbers or one-element tensors on any device."""
        step, epoch = self._position(step, epoch)
        if self._writer.failed:
            self._writer.check()
        rows = self._scalar_rows
        rows.append(records.scalar_row(metrics, step=step, epoch=epoch))  # drained by the writer thread
        if len(rows) > 4096:
            self._writer.wake()

    def log_predictions(
        self,
        logits: Any,
        *,
        step: int | None = None,
        epoch: int | None = None,
        labels: Any = None,
        keys: Mapping[str, Any] | None = None,
        loss: Any = None,
        batch_idx: int | None = None,
        every: int | None = None,
    ) -> None:
        """One row per sample: logits (any number of classes), label, prediction and named key columns."""
        step, epoch = self._position(step, epoch)
        if labels is not None and self._watchers:  # label balance for run.watch, counted on the device
            observe_labels(
                self, labels, num_classes=logits.shape[-1] if getattr(logits, "ndim", 0) == 2 else None
            )
        if self._skip(step, every):
            return
        job = records.predictions_job(
            logits, step=step, labels=labels, keys=keys, loss=loss, batch_idx=batch_idx
        )
        self._writer.submit(epoch, job)

    def log_batch(
        self,
        *,
        sample_ids: Any,
        inputs: Any = None,
        step: int | None = None,
        epoch: int | None = None,
        batch_idx: int | None = None,
        rng: bool = False,
        every: int | None = None,
    ) -> None:
        """The batch's sample ids in order and an exact fingerprint of its input tensors."""
        step, epoch = self._position(step, epoch)
        if self._skip(step, every):
            return
        rng_states = None
        if rng:
            rng_states = rng_fingerprints()
        job = records.batch_job(
            step=step, sample_ids=sample_ids, inputs=inputs, batch_idx=batch_idx, rng=rng_states
        )
        self._writer.submit(epoch, job)

    def write_rows(self, table: str, rows: Mapping[str, Any] | pa.Table, *, epoch: int | None = None) -> None:
        """Append prepared rows to any table (used by telemetry, dumps and integrations); thread-safe."""
        epoch = self._queue_epoch(epoch)
        data = rows if isinstance(rows, pa.Table) else pa.table(dict(rows))
        self._writer.submit(epoch, lambda: {table: data})

    def submit(self, build: Callable[[], Mapping[str, pa.Table | None]], *, epoch: int | None = None) -> None:
        """Queue a row builder that runs on the writer thread (for work that waits on device copies)."""
        self._writer.submit(self._queue_epoch(epoch), build)

    # -- telemetry and dumps (implemented in their own modules) -------------------------------
    def watch(self, model: Any, optimizer: Any = None, **options: Any) -> Any:
        """Capture per-parameter summaries every N optimizer steps; see ``lakelog.write.telemetry.watch``."""
        return watch(self, model, optimizer, **options)

    def configure_dumps(
        self, *, every: int | None = None, keep_first: int | None = None, keep_every: int | None = None
    ) -> None:
        """Options for ``dump``: dump every N-th step, keep only the first K, or every N-th dump."""
        self._dump_options = {"every": every, "keep_first": keep_first, "keep_every": keep_every}
        if self._dumper is not None:
            self._dumper.configure(**self._dump_options)

    def dump(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        step: int | None = None,
        epoch: int | None = None,
        loss: float | None = None,
        acc: float | None = None,
        every: int | None = None,
    ) -> Path | None:
        """Model (and optimizer) state to safetensors under ``dumps/step=<s>/``, written off the training thread."""
        step, epoch = self._position(step, epoch)
        if every is not None and self._dump_options.get("every") != every:
            self.configure_dumps(**{**self._dump_options, "every": every})
        if self._dumper is None:
            self._dumper = DumpWriter(self, **self._dump_options)
            self.on_finish(lambda d=self._dumper: d.close())
        return self._dumper.dump(model, optimizer, step=step, epoch=epoch, loss=loss, acc=acc)

    # -- lifecycle --------------------------------------------------------------------------
    def summary(self, **metrics: Any) -> None:
        """Final metrics of the run (accuracy, recall…), stored in run.json for leaderboards."""
        self._summary.update(metrics)

    @property
    def watchers(self) -> tuple[Any, ...]:
        """The telemetry watchers attached to this run (``run.watch``), in the order they were attached."""
        return tuple(self._watchers)

    def attach_watcher(self, watcher: Any) -> None:
        """Register a watcher: it is fed the labels of ``log_predictions`` and detached at ``finish``."""
        self._watchers.append(watcher)
        self.on_finish(watcher.detach)

    def detach_watcher(self, watcher: Any) -> None:
        """Forget a watcher (its ``detach`` calls this); unknown watchers are ignored."""
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    @property
    def loader_passes(self) -> dict[str, int]:
        """Passes (epochs) seen per recorded DataLoader name: shared by loaders rebuilt under one name."""
        return self._loader_passes

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Call this before the writer closes (telemetry detaches, dumps drain)."""
        self._finish_callbacks.append(callback)

    def flush(self) -> None:
        """Block until everything logged so far is in part files readers can see."""
        self._writer.flush()

    def finish(self, *, status: str = "finished") -> None:
        """Write everything buffered, record the duration and summary in run.json, close the run."""
        if self._closed:
            return
        errors: list[BaseException] = []
        for callback in self._finish_callbacks:
            try:
                callback()
            except BaseException as exc:  # finish the rest, report the first failure
                errors.append(exc)
        self._closed = True
        try:
            self._writer.close()
        except BaseException as exc:
            errors.append(exc)
        summary = {**self._info.get("summary", {}), **self._last_scalars, **self._summary}
        summary["duration_s"] = round(time.monotonic() - self._started, 3)
        summary["last_step"] = self._step
        summary["last_epoch"] = self._epoch
        self._info.update(status=status, finished=_utc_now(), summary=summary)
        if self.rank == 0:
            self._write_info(self._info)
        release_current(self)
        _live_runs.discard(self)
        if errors:
            raise errors[0]

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._info["error"] = f"{exc_type.__name__}: {exc}"
        self.finish(status="failed" if exc_type is not None else "finished")

    def __repr__(self) -> str:
        state = "finished" if self._closed else "running"
        return f"Run(name={self.name!r}, root={self.lake.root!r}, rank={self.rank}, {state})"


@atexit.register
def _close_at_exit() -> None:
    """Interpreter exit writes what is buffered: nothing logged is lost to a normal exit."""
    for run in list(_live_runs):
        if not run.closed:
            try:
                run.finish(status="exited")
            except Exception as exc:
                log.error("lakelog: could not finish run %s at exit: %s", run.name, exc)
