"""The background writer: buffers rows per table partition and writes whole Parquet part files.

The training thread only enqueues small jobs (a closure that builds an Arrow batch from host
copies); this thread waits for device copies, builds the columns, and writes a part file when a
partition's buffer is large enough, when ``flush_every_s`` has passed, or on ``flush()``/``close()``.
Every part file is written under a temporary name and renamed, so a reader, or a process killed
with SIGKILL, never leaves half a file behind. The queue is bounded: a training loop that logs
faster than the disk can take waits instead of letting memory run away.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import RunClosedError, WriterFailedError
from .layout import Lake, part_file_name, partition_dir

log = logging.getLogger("lakelog")

BuildRows = Callable[[], "Mapping[str, pa.Table | None]"]
"""Called on the writer thread; returns the rows to append, keyed by table name."""


@dataclass
class _Job:
    epoch: int
    build: BuildRows


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


_CLOSE = object()


@dataclass
class _Buffer:
    batches: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0


class PartWriter:
    """One run's writer thread; all public methods are called from the training thread."""

    def __init__(
        self,
        lake: Lake,
        run_dir: str,
        rank: int,
        *,
        max_rows: int = 200_000,
        max_bytes: int = 64 << 20,
        flush_every_s: float = 10.0,
        queue_size: int = 2048,
        compression: str = "zstd",
    ) -> None:
        self.lake = lake
        self.run_dir = run_dir
        self.rank = rank
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.flush_every_s = flush_every_s
        self.compression = compression
        self.files_written = 0
        self.rows_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._made_dirs: set[str] = set()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lakelog-writer", daemon=True)
        self._thread.start()

    # -- training thread ---------------------------------------------------------------------
    def submit(self, epoch: int, build: BuildRows) -> None:
        """Queue a row builder; raises if the writer failed earlier or was closed."""
        self._check()
        self._queue.put(_Job(epoch, build))

    def flush(self) -> None:
        """Return once everything submitted so far is in part files on disk."""
        self._check()
        marker = _Flush()
        self._queue.put(marker)
        while not marker.done.wait(0.5):
            if not self._thread.is_alive():
                break
        self._check()

    def close(self) -> None:
        """Write what is buffered and stop the thread; later submits raise."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(_CLOSE)
            self._thread.join()
        if self._error is not None:
            raise WriterFailedError(f"lakelog's background writer failed: {self._error}") from self._error

    def _check(self) -> None:
        if self._error is not None:
            raise WriterFailedError(f"lakelog's background writer failed: {self._error}") from self._error
        if self._closed:
            raise RunClosedError("this run is finished: start a new one with lakelog.init(...)")

    # -- writer thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            timeout = max(0.05, self.flush_every_s - (time.monotonic() - last_flush))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            try:
                if item is _CLOSE:
                    self._write_all()
                    return
                if isinstance(item, _Flush):
                    self._write_all()
                    last_flush = time.monotonic()
                    item.done.set()
                elif isinstance(item, _Job):
                    self._take(item)
                if time.monotonic() - last_flush >= self.flush_every_s:
                    self._write_all()
                    last_flush = time.monotonic()
            except BaseException as exc:  # keep the thread alive so flush()/close() can report it
                log.error("lakelog writer error: %s", exc)
                self._error = exc
                if isinstance(item, _Flush):
                    item.done.set()
                if item is _CLOSE:
                    return

    def _take(self, job: _Job) -> None:
        for table, batch in job.build().items():
            if batch is None or batch.num_rows == 0:
                continue
            buf = self._buffers.setdefault((table, job.epoch), _Buffer())
            buf.batches.append(batch)
            buf.rows += batch.num_rows
            buf.nbytes += batch.nbytes
            if buf.rows >= self.max_rows or buf.nbytes >= self.max_bytes:
                self._write(table, job.epoch, buf)

    def _write_all(self) -> None:
        for (table, epoch), buf in list(self._buffers.items()):
            if buf.rows:
                self._write(table, epoch, buf)

    def _write(self, table: str, epoch: int, buf: _Buffer) -> None:
        data = pa.concat_tables(buf.batches, promote_options="permissive")
        folder = partition_dir(self.run_dir, table, epoch, self.rank, local=self.lake.local)
        if folder not in self._made_dirs:
            self.lake.makedirs(folder)
            self._made_dirs.add(folder)
        path = f"{folder}/{part_file_name(self.rank)}"
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, compression=self.compression)
        self.lake.write_bytes_atomic(path, sink.getvalue())
        self.files_written += 1
        self.rows_written += data.num_rows
        buf.batches.clear()
        buf.rows = 0
        buf.nbytes = 0
