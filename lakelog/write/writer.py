"""The Parquet writer of one run and rank: rows in, whole part files and commits out, never a lost run.

The training thread queues small items on a ``background.Worker`` (a scalar row, or a closure over
host copies); the writer thread builds the columns, buffers them per table partition (a large
partition's final rows are encoded ahead as row groups, ``rowgroups.py``) and writes a part file when
a partition is large, at every periodic flush (``flush_every_s``) and on ``flush()``/``close()``. Part files are written atomically (``Lake.write_bytes_atomic``) and named
after the flush sequence (``part-<seq>-…``); after each flush the writer commits
(``lake.lifecycle``): ``{"step": S, "seq": N}`` says every table holds every row with step ≤ S. A
periodic flush holds back the rows of the newest step (the loop may still be logging it); explicit
``flush()`` and ``close()`` write and commit everything.

Failures cost only what failed. A row builder that raises, or rows that cannot be converted, are
dropped and counted per table (``dropped``), with one warning per table and cause; every other row
and table is written. When the lake cannot be written (disk full, folder removed, read-only) rows stay
in memory up to ``max_buffer_bytes`` and are written when it works again (retried at each flush), with
one rate-limited warning naming the root and the cause; rows past the bound are dropped and counted.
With ``on_error="raise"`` the first failure is raised by the next ``flush()``/``close()`` (and log call).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from lakelog.errors import InvalidArgumentError, WriterFailedError
from lakelog.lake import lifecycle
from lakelog.lake.layout import Lake, part_file_name, partition_dir
from lakelog.write.background import Worker
from lakelog.write.losses import Losses
from lakelog.write.partfiles import Buffer, Part, rows_len, split_before, step_range, store_all
from lakelog.write.rowgroups import GROUP_ROWS, RowGroups

log = logging.getLogger("lakelog")

Rows = pa.Table | Mapping[str, Any]
"""A builder returns, per table, an Arrow table or column chunks (lists, numpy arrays, 2-D arrays for
list columns, Arrow arrays) that are merged and converted in bulk when the part file is written."""
BuildRows = Callable[[], Mapping[str, Rows | None]]
ON_ERROR = ("warn", "raise")
WAKE_BYTES = 1 << 20
"""Queued builders holding less than this many bytes are taken in batches (see ``PartWriter.submit``).
Larger batches save a small model's captures a few percent of CPU at most, and leave a backlog that
``finish`` waits for: on ``benchmarks/bench_writer.py``'s predictions loop, 8 MiB costs 0.25 ms a step
where 1 MiB costs 0.14."""


class PartWriter:
    """One run's (and rank's) writer thread; the public methods are called from the training thread.

    ``seq`` is the flush sequence of the first flush and ``committed`` the step already committed
    (both continue a resumed run's); ``heartbeat`` runs on the writer thread after every flush.
    """

    def __init__(
        self,
        lake: Lake,
        run_dir: str,
        rank: int,
        *,
        max_rows: int = 250_000,
        max_bytes: int = 64 << 20,
        flush_every_s: float = 10.0,
        max_pending: int = 4096,
        max_buffer_bytes: int = 512 << 20,
        compression: str = "zstd",
        compression_level: int = 1,
        on_error: str = "warn",
        seq: int = 1,
        committed: int | None = None,
        heartbeat: Callable[[], None] | None = None,
        last_scalars: dict[str, float] | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise InvalidArgumentError(f"on_error: expected one of {ON_ERROR}, got {on_error!r}")
        self.lake = lake
        self.run_dir = run_dir
        self.rank = rank
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.group_rows = GROUP_ROWS
        """Final rows of a partition encoded ahead as one row group (rowgroups.py)."""
        self.max_buffer_bytes = max_buffer_bytes
        self.flush_every_s = flush_every_s
        self.compression = compression
        self.compression_level = compression_level
        self.on_error = on_error
        self.files_written = 0
        self.rows_written = 0
        self.losses = Losses(run_dir, lake.root)
        self._groups = RowGroups(self.losses, compression, compression_level)  # parts encoded as they fill
        self.last_scalars = {} if last_scalars is None else last_scalars
        self._seq = seq
        self._committed = committed
        self._last_commit: tuple[int | None, bool] | None = None
        self._dirty = True  # files written since the last commit
        self._newest: int | None = committed  # the largest step seen in any row
        self._buffers: dict[tuple[str, int], Buffer] = {}
        self._made_dirs: set[str] = set()
        self._heartbeat = heartbeat
        self._unwoken_bytes = 0  # declared bytes of the builders queued since submit last woke the thread
        self._worker = Worker(
            "lakelog-writer",
            self._handle,
            max_items=max_pending,
            wake_at=min(512, max_pending),
            on_flush=self._flush_all,
            on_close=self._close_all,
            tick=self._periodic,
            tick_every_s=flush_every_s,
        )

    # -- training thread ---------------------------------------------------------------------
    def submit(self, epoch: int, build: BuildRows, *, table: str = "unknown", rows: int = 0) -> None:
        """Queue a row builder; ``table`` and ``rows`` say what is lost if it fails (for the counts).

        Builders that declare their size (``build.nbytes``: the host copies they hold) wake the thread
        once ``WAKE_BYTES`` of them are queued (or ``wake_at`` items): a wake-up per small batch costs
        the writer more than the batch itself, and this bounds what waits in the queue. A builder that
        declares no size wakes it at once."""
        if self.losses.first_error is not None and self.on_error == "raise":
            self.check()
        self._unwoken_bytes += getattr(build, "nbytes", WAKE_BYTES)
        wake = self._unwoken_bytes >= WAKE_BYTES
        if wake:
            self._unwoken_bytes = 0
        self._worker.put((epoch, build, table, rows), wake=wake)

    def submit_scalars(self, row: tuple) -> None:
        """Queue one ``log`` call's row; cheap: the writer thread is not woken for it."""
        self._worker.put(row, wake=False)

    def wake(self) -> None:
        """Ask the writer thread to take what is queued now."""
        self._worker.wake()

    def flush(self) -> None:
        """Return once everything submitted so far is in part files and committed."""
        self._worker.flush()
        self.check()

    def close(self) -> None:
        """Write and commit everything, stop the thread; later submits raise RunClosedError."""
        self._worker.close()
        self.check()

    @property
    def failed(self) -> bool:
        """True once something failed and ``on_error="raise"`` asks for it to be raised."""
        return self.losses.first_error is not None and self.on_error == "raise"

    def check(self) -> None:
        """Raise WriterFailedError for the first failure when ``on_error="raise"`` (else nothing)."""
        exc = self.losses.first_error or self._worker.error
        if exc is not None and (self.on_error == "raise" or exc is self._worker.error):
            detail = "; ".join(f"{t}: {c}" for t, c in self.losses.causes.items()) or str(exc)
            raise WriterFailedError(f"lakelog's background writer failed: {detail}") from exc

    @property
    def committed_step(self) -> int | None:
        return self._committed

    @property
    def dropped(self) -> dict[str, int]:
        """Rows that could not be written, per table (read it after ``flush()``/``close()``)."""
        return self.losses.dropped

    # -- writer thread: taking items ---------------------------------------------------------
    def _handle(self, item: tuple) -> None:
        if len(item) == 7:  # a scalar row (scalar_rows.ScalarRow)
            self._add_scalars(item)
            return
        epoch, build, table, nrows = item
        try:
            built = build()
        except BaseException as exc:
            self.losses.drop(table, nrows, exc)
            return
        steps = getattr(build, "steps", None)  # a builder that knows its rows' (first, last) step says so
        for name, rows in built.items():
            if rows is not None:
                try:
                    self._add(name, epoch, rows, steps)
                except Exception as exc:
                    self.losses.drop(name, rows_len(rows), exc)

    def _add_scalars(self, row: tuple) -> None:
        step, epoch = row[0], row[1]
        try:
            names, values = row[2], row[3]
            if row[5] is not None:
                names = names + row[4]
                values = values + row[5].numpy().reshape(-1).tolist()
        except BaseException as exc:
            self.losses.drop("scalars", len(row[2]) + len(row[4]), exc)
            return
        self.last_scalars.update(zip(names, values, strict=True))
        if self._newest is None or step > self._newest:
            self._newest = step
        buf = self._buffer("scalars", epoch, len(names))
        if buf is not None:
            buf.add_scalars(step, names, values, row[6])
            self._maybe_write("scalars", epoch, buf)

    def _add(self, table: str, epoch: int, rows: Rows, steps: tuple[int, int] | None = None) -> None:
        steps = step_range(rows) if steps is None else steps
        if steps is not None and (self._newest is None or steps[1] > self._newest):
            self._newest = steps[1]
        buf = self._buffer(table, epoch, rows_len(rows))
        if buf is not None:
            buf.add(rows, steps)
            self._maybe_write(table, epoch, buf)

    def _buffer(self, table: str, epoch: int, n: int) -> Buffer | None:
        """The partition's buffer, or None when the lake is not writable and memory is at its bound."""
        if self.losses.io_error is not None and self._buffered_bytes() >= self.max_buffer_bytes:
            self.losses.drop(table, n, self.losses.io_error)
            return None
        buf = self._buffers.get((table, epoch))
        if buf is None:
            buf = self._buffers[(table, epoch)] = Buffer(table)
        return buf

    def _buffered_bytes(self) -> int:
        return sum(b.nbytes for b in self._buffers.values()) + self._groups.nbytes

    def _maybe_write(self, table: str, epoch: int, buf: Buffer) -> None:
        """Cut a part file when the partition is full. Else, while the writer is behind (a flush or finish
        waits for it, or the loop outruns it), encode the partition's final rows ahead once there are
        ``group_rows`` of them (rowgroups.py). The newest step's rows stay for the commit."""
        if self.losses.io_error is not None:
            return
        rows, nbytes = self._groups.held((table, epoch))
        if buf.rows + rows >= self.max_rows or buf.nbytes + nbytes >= self.max_bytes:
            self._write(table, epoch, buf, before=self._newest)
            return
        final = buf.min_step is not None and buf.min_step < self._newest  # rows older than the newest step
        if final and buf.rows >= self.group_rows and self._worker.behind:
            self._encode_ahead(table, epoch, buf)

    def _encode_ahead(self, table: str, epoch: int, buf: Buffer) -> None:
        """The partition's rows older than the newest step, encoded ahead as a row group."""
        data, lost, cause = buf.table()
        if lost:
            self.losses.drop(table, lost, cause)
        if data is None or not data.num_rows:
            buf.clear()
            return
        keep, data = split_before(data, self._newest)
        buf.replace(keep)
        if data.num_rows:
            self._groups.add((table, epoch), data)

    # -- writer thread: part files and commits -----------------------------------------------
    def _periodic(self) -> None:
        self._write_all(before=self._newest)
        if self._heartbeat is not None:
            self._heartbeat()

    def _flush_all(self) -> None:
        self._write_all(before=None)
        if self._heartbeat is not None:
            self._heartbeat()

    def _close_all(self) -> None:
        self._write_all(before=None, final=True)
        for (table, _), buf in list(self._buffers.items()):  # the lake stayed unwritable: these are lost
            if buf.rows:
                self.losses.drop(table, buf.rows, self.losses.io_error or OSError("not written"))
        self._buffers.clear()
        if self._last_commit != (self._newest, True):  # what is on disk is all there will be: say so
            self._dirty = True
            self._commit(self._newest if self._newest is not None else self._committed, final=True)
        if self.losses.io_error is not None:
            log.warning(
                "lakelog: run %s: the lake %s was still not writable at finish (%s); rows not written: %s",
                os.path.basename(self.run_dir),
                self.lake.root,
                self.losses.io_error,
                self.losses.dropped,
            )

    def _write_all(self, *, before: int | None, final: bool = False) -> None:
        """Write every buffer (only rows with ``step < before`` when given), then commit what is whole.

        The part files of one flush are encoded and stored concurrently (Parquet encoding and fsync
        release the GIL): a flush waits about as long as its largest part, not the sum of all."""
        parts = [
            part
            for (table, epoch), buf in list(self._buffers.items())
            if (buf.rows or (table, epoch) in self._groups)
            and (part := self._prepare(table, epoch, buf, before=before)) is not None
        ]
        outcomes = store_all(self._store, parts)
        ok = all([self._stored(part, outcome) for part, outcome in zip(parts, outcomes, strict=True)])
        if not ok:  # the lake is not writable: nothing new is committed
            return
        step = self._newest if before is None else (None if self._newest is None else before - 1)
        held = [b.min_step for b in self._buffers.values() if b.rows and b.min_step is not None]
        if held:  # rows of the newest step wait for the next flush: the commit stops below them
            step = min(held) - 1 if step is None else min(step, min(held) - 1)
        if step is None or (self._committed is not None and step < self._committed):
            step = self._committed
        self._commit(step, final=final)

    def _commit(self, step: int | None, *, final: bool) -> None:
        dirty = self._dirty or self.losses.uncommitted
        if not self.lake.local or (not dirty and self._last_commit == (step, final)):
            return
        body = {"step": step, "seq": self._seq, "final": final}
        if self.losses.dropped:
            body["dropped"] = dict(self.losses.dropped)
        path = lifecycle.commit_path(self.run_dir, self.rank)
        try:
            self._makedirs(os.path.dirname(path))
            self.lake.write_bytes_atomic(path, json.dumps(body).encode())
        except OSError as exc:
            self.losses.lake_trouble(exc, self.max_buffer_bytes)
            return
        self._committed = step
        self._last_commit = (step, final)
        self._dirty = self.losses.uncommitted = False
        self._seq += 1

    def _makedirs(self, folder: str) -> None:
        if folder not in self._made_dirs or (self.lake.local and not os.path.isdir(folder)):
            self.lake.makedirs(folder)
            self._made_dirs.add(folder)

    def _write(self, table: str, epoch: int, buf: Buffer, *, before: int | None) -> bool:
        """Write the buffer's rows (those with ``step < before``); False when the lake is not writable."""
        part = self._prepare(table, epoch, buf, before=before)
        return part is None or self._stored(part, self._store(part))

    def _prepare(self, table: str, epoch: int, buf: Buffer, *, before: int | None) -> Part | None:
        """The partition's rows to write now (the buffer's, after those encoded ahead) and their format
        (None: nothing to write)."""
        data, lost, cause = buf.table()
        if lost:
            self.losses.drop(table, lost, cause)
        keep = None
        held = before is not None and buf.max_step is not None and buf.max_step >= before
        if held and data is not None and data.num_rows:
            keep, data = split_before(data, before)
        data, encoding = self._groups.take((table, epoch), data)
        if data is None or (not data.num_rows and encoding is None):
            buf.replace(keep)
            return None
        try:
            fmt = encoding.fmt if encoding is not None else self._groups.format(table, data)
        except Exception as exc:  # rows Parquet cannot hold: lost, the rest goes on
            self.losses.drop(table, data.num_rows, exc)
            buf.replace(keep)
            return None
        folder = partition_dir(self.run_dir, table, epoch, self.rank, local=self.lake.local)
        path = f"{folder}/{part_file_name(self.rank, self._seq)}"
        return Part(table, buf, data, keep, fmt, folder, path, encoding)

    def _store(self, part: Part) -> BaseException | None:
        """Encode and write one part file (any thread: it changes nothing but the lake); its error."""
        try:
            if part.encoding is not None:
                payload = part.encoding.finish(part.data)
            else:
                payload = part.fmt.encode(part.data, self.compression, self.compression_level)
        except Exception as exc:
            return exc
        try:
            self._makedirs(part.folder)
            self.lake.write_bytes_atomic(part.path, payload)
        except OSError as exc:
            return exc
        return None

    def _stored(self, part: Part, error: BaseException | None) -> bool:
        """Account for one part file's outcome; False when the lake is not writable."""
        if isinstance(error, OSError):
            self._made_dirs.discard(part.folder)
            part.buf.replace(part.all_rows())
            self.losses.lake_trouble(error, self.max_buffer_bytes)
            return False
        if error is not None:  # rows Parquet cannot hold: lost, the rest goes on
            self.losses.drop(part.table, part.rows, error)
            part.buf.replace(part.keep)
            return True
        self.files_written += 1
        self.rows_written += part.rows
        self._dirty = True
        part.buf.replace(part.keep)
        self.losses.lake_writable()
        return True
