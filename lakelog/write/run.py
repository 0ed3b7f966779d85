"""A training run: its folder, its run.json and its background writer.

``lakelog.init`` creates one and makes it the current run, so a training loop can call the
module-level functions (``lakelog.log``…) without passing it around.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs

from lakelog.errors import InvalidArgumentError, LakeNotWritableError, RunClosedError
from lakelog.lake.checks import INT64_MAX, non_negative_int, positive_number
from lakelog.lake.layout import Lake, check_run_name
from lakelog.write import batch_rows, records
from lakelog.write.attachments import Attachments
from lakelog.write.context import release_current
from lakelog.write.determinism.rng import rng_fingerprints
from lakelog.write.env import rank_and_world_size
from lakelog.write.runfolder import RunRequest, info_bytes, json_default, open_run_folder, utc_now
from lakelog.write.scalar_rows import scalar_row
from lakelog.write.telemetry.watch import observe_labels
from lakelog.write.writer import ON_ERROR, PartWriter

log = logging.getLogger("lakelog")

Mode = Literal["error", "resume", "overwrite"]
_MODES = ("error", "resume", "overwrite")
_live_runs: set[Run] = set()  # strong references: an unfinished run is flushed at exit even if dropped


class Run(Attachments):
    """One training run (one rank of it) in a lake; ``lakelog.init`` creates one and makes it current."""

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
        on_error: Literal["warn", "raise"] = "warn",
    ) -> None:
        """Open run ``name`` under ``root`` for writing and start its background writer.

        Args:
            root: the lake: a local folder (created if missing) or an object-store URI (``s3://…``).
            name: the run's folder name; generated (date and a random suffix) when None. A plain name:
                no '/', '\\', '=', glob characters ``* ? [ ] { }``, control characters or leading '.',
                at most 200 bytes.
            config: hyper-parameters, stored in run.json (values that are not JSON are stored as text).
            seed: the run's seed, stored in run.json (an int in 0..2**63-1).
            mode: ``"error"`` refuses an existing run; ``"resume"`` appends to it after its last committed
                step (``resumed_from``), starting it when it does not exist (with a warning), and is allowed
                on a finished run; ``"overwrite"`` replaces it.
            log_every: default ``every`` of ``log_predictions``/``log_batch`` (0 or 1: every call).
            flush_every_s: seconds between periodic flushes (part files, commit, heartbeat).
            rank, world_size: this process's DDP rank and the world size (default: from the environment).
            tags: free-form labels stored in run.json.
            filesystem: a configured pyarrow filesystem for object-store roots.
            on_error: ``"warn"`` (default): rows the writer cannot write are dropped, counted per table in
                run.json ``dropped`` and warned about once; an unwritable lake is retried, training goes on;
                ``flush``/``finish`` never raise for rows already accepted. ``"raise"``: the first such
                failure is raised (WriterFailedError) by the next log call, ``flush`` or ``finish``.

        Raises:
            InvalidArgumentError: an argument has the wrong type or range (the message names it).
            RunExistsError: ``mode="error"`` and the run exists.
            RunInUseError: a live writer holds this run and rank (any mode); the message names it.
            LakeNotWritableError: the root is a file, or the run folder cannot be created or written.
        """
        if mode not in _MODES:
            raise InvalidArgumentError(f"mode: expected one of {_MODES}, got {mode!r}")
        if on_error not in ON_ERROR:
            raise InvalidArgumentError(f"on_error: expected one of {ON_ERROR}, got {on_error!r}")
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
        self._min_step = 0  # a resumed run's steps continue after its committed step
        self._epoch = 0
        self._log_calls = 0
        self._summary: dict[str, Any] = {}
        self._last_scalars: dict[str, float] = {}
        self._watchers: list[Any] = []
        self._loader_passes: dict[str, int] = {}
        self._finish_callbacks: list[Callable[[], None]] = []
        self._closed = False
        self._started = time.monotonic()
        request = RunRequest(self.rank, self.world_size, mode, dict(config or {}), seed, dict(tags or {}))
        opened = open_run_folder(self.lake, self.run_dir, self.name, request)
        self._info, self._run_file, self._claim = opened.info, opened.run_file, opened.claim
        self._resumed_from = opened.resumed_from
        self._key_types = opened.key_types
        self._on_error = on_error
        self._info_warned = False
        if opened.resumed_from is not None:
            self._step = opened.resumed_from
            self._min_step = opened.resumed_from + 1
        self._writer = PartWriter(
            self.lake,
            self.run_dir,
            self.rank,
            flush_every_s=float(flush_every_s),
            on_error=on_error,
            seq=opened.seq,
            committed=opened.resumed_from,
            heartbeat=None if self._claim is None else self._claim.refresh,
            last_scalars=self._last_scalars,
        )
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
        return json.loads(json.dumps(self._info, default=json_default))

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

    @property
    def resumed_from(self) -> int | None:
        """The committed step a resumed run continues after (every table holds every row up to it);
        None for a new run. Log calls of a resumed run take steps after it."""
        return self._resumed_from

    def _write_info(self, info: dict[str, Any]) -> None:
        """Write run.json; a lake that became unwritable is warned about once (``on_error="raise"``: raised)."""
        try:
            self.lake.write_bytes_atomic(self._run_file, info_bytes(info))
        except OSError as exc:
            if self._on_error == "raise":
                raise LakeNotWritableError(f"root: cannot write {self._run_file!r} ({exc})") from exc
            if not self._info_warned:
                self._info_warned = True
                log.warning(
                    "lakelog: cannot write %s (%s); it is written again at the next change",
                    self._run_file,
                    exc,
                )

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
            if type(step) is not int or not self._step <= step <= INT64_MAX or step < self._min_step:
                self._check_step(non_negative_int(step, "step"))
            self._step = int(step)
        if epoch is not None:
            self._epoch = non_negative_int(epoch, "epoch")
        return self._step, self._epoch

    def _check_step(self, step: int) -> None:
        """Steps never go backwards in a run (one step may be logged by many calls): a smaller step is an
        error, and a resumed run's steps come after the step it resumed from."""
        if step < self._min_step:
            raise InvalidArgumentError(
                f"step: {step} is not after step {self._min_step - 1}, the step run {self.name!r} was resumed "
                "from (its rows up to that step are committed); log steps after it, or resume into a new run "
                "name to restart from an earlier checkpoint"
            )
        if step < self._step:
            raise InvalidArgumentError(
                f"step: {step} is before step {self._step} already logged to run {self.name!r}; steps must not "
                "go backwards within a run (log evaluation at the current training step, or in its own run)"
            )

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
        self._writer.submit_scalars(scalar_row(metrics, step=step, epoch=epoch))

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
            logits,
            step=step,
            labels=labels,
            keys=keys,
            loss=loss,
            batch_idx=batch_idx,
            key_types=self._key_types,
        )
        self._writer.submit(epoch, job, table="predictions", rows=job.rows)

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
        job = batch_rows.batch_job(
            step=step, sample_ids=sample_ids, inputs=inputs, batch_idx=batch_idx, rng=rng_states
        )
        self._writer.submit(epoch, job, table="batches", rows=1)

    def write_rows(self, table: str, rows: Mapping[str, Any] | pa.Table, *, epoch: int | None = None) -> None:
        """Append prepared rows to any table (used by telemetry, dumps and integrations); thread-safe."""
        epoch = self._queue_epoch(epoch)
        data = rows if isinstance(rows, pa.Table) else pa.table(dict(rows))
        self._writer.submit(epoch, lambda: {table: data}, table=table, rows=data.num_rows)

    def submit(
        self,
        build: Callable[[], Mapping[str, pa.Table | None]],
        *,
        epoch: int | None = None,
        table: str = "unknown",
        rows: int = 0,
    ) -> None:
        """Queue a row builder that runs on the writer thread (for work that waits on device copies);
        ``table`` and ``rows`` say what a failing builder costs, for the ``dropped`` counts."""
        self._writer.submit(self._queue_epoch(epoch), build, table=table, rows=rows)

    # -- lifecycle --------------------------------------------------------------------------
    def summary(self, **metrics: Any) -> None:
        """Final metrics of the run (accuracy, recall…), stored in run.json for leaderboards."""
        self._summary.update(metrics)

    def flush(self) -> None:
        """Block until everything logged so far is in part files readers can see, and committed.

        Raises WriterFailedError only with ``on_error="raise"`` (see ``__init__``)."""
        self._writer.flush()

    @property
    def dropped(self) -> dict[str, int]:
        """Rows the writer could not write, per table (also in run.json ``dropped`` after finish)."""
        return dict(self._writer.dropped)

    def finish(self, *, status: str = "finished") -> None:
        """Write everything buffered, record the duration, summary and any dropped rows in run.json,
        release the run's claim and close it. Idempotent; raises only what ``on_error="raise"`` asks for
        (and a failing finish callback's error)."""
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
        self._info.update(status=status, finished=utc_now(), summary=summary)
        if self._writer.dropped:
            dropped = dict(self._info.get("dropped") or {})
            for table, n in self._writer.dropped.items():
                dropped[table] = dropped.get(table, 0) + n
            self._info["dropped"] = dropped
        if self.rank == 0:
            try:
                self._write_info(self._info)
            except BaseException as exc:
                errors.append(exc)
        if self._claim is not None:
            self._claim.release()
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
