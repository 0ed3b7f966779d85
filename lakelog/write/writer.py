"""The background writer: buffers rows per table partition and writes whole Parquet part files.

The training thread only enqueues small jobs (a closure over host copies); this thread waits for
device copies, builds the columns, and writes a part file when a partition's buffer is large
enough, when ``flush_every_s`` has passed, or on ``flush()``/``close()``. Every part file is
written under a temporary name and renamed, so a reader, or a process killed with SIGKILL, never
sees half a file. The queue is bounded: a loop that logs faster than the disk can take waits
instead of letting memory run away.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakelog.errors import RunClosedError, WriterFailedError
from lakelog.lake.layout import Lake, part_file_name, partition_dir
from lakelog.lake.schemas import SCHEMAS

log = logging.getLogger("lakelog")

Rows = pa.Table | Mapping[str, Any]
"""A builder returns, per table, an Arrow table or column chunks (lists, numpy arrays, 2-D arrays for
list columns, Arrow arrays) that are merged and converted in bulk when the part file is written."""
BuildRows = Callable[[], Mapping[str, Rows | None]]


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


_CLOSE = object()


@dataclass
class _Buffer:
    """Rows waiting for a part file: Arrow tables, and column chunks merged into Arrow only at write time."""

    tables: list[pa.Table] = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=dict)
    rows: int = 0
    nbytes: int = 0

    def add(self, rows: Rows) -> int:
        if isinstance(rows, pa.Table):
            self.tables.append(rows)
            self.nbytes += rows.nbytes
            return rows.num_rows
        n = _chunk_len(next(iter(rows.values())))
        if self.columns and rows.keys() != self.columns.keys():  # the columns changed: seal what we have
            self.tables.append(_chunks_to_table(self.columns))
            self.columns = {}
        for name, chunk in rows.items():
            self.columns.setdefault(name, []).append(chunk)
            self.nbytes += chunk.nbytes if isinstance(chunk, np.ndarray | pa.Array) else 16 * n
        return n

    def table(self, name: str) -> pa.Table:
        tables = list(self.tables)
        if self.columns:
            tables.append(_chunks_to_table(self.columns, SCHEMAS.get(name)))
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def _chunk_len(chunk: Any) -> int:
    return len(chunk) if not isinstance(chunk, np.ndarray) else int(chunk.shape[0])


def _list_array(values: np.ndarray) -> pa.Array:
    n, width = values.shape
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def _chunk_to_array(chunk: Any, kind: pa.DataType | None) -> pa.Array:
    if isinstance(chunk, pa.Array):
        return chunk
    if isinstance(chunk, np.ndarray):
        return _list_array(chunk) if chunk.ndim == 2 else pa.array(chunk, type=kind)
    return pa.array(chunk, type=kind)


def _column(chunks: list, kind: pa.DataType | None) -> pa.Array:
    """One Arrow array from many chunks, with one conversion call where the chunks allow it."""
    first = chunks[0]
    if all(isinstance(c, np.ndarray) and c.ndim == first.ndim for c in chunks) and (
        first.ndim == 1 or len({c.shape[1] for c in chunks}) == 1
    ):
        return _chunk_to_array(np.concatenate(chunks), kind)
    if all(isinstance(c, list) for c in chunks):
        values = list(itertools.chain.from_iterable(chunks))
        if kind is None and values and isinstance(values[0], str):
            kind = pa.string()  # naming the type skips pyarrow's inference, ~7x the cost of converting
        return pa.array(values, type=kind)
    return pa.concat_arrays([_chunk_to_array(c, kind) for c in chunks])


def _chunks_to_table(columns: Mapping[str, list], schema: pa.Schema | None = None) -> pa.Table:
    arrays = {}
    for name, chunks in columns.items():
        kind = schema.field(name).type if schema is not None and name in schema.names else None
        arrays[name] = _column(chunks, kind)
    return pa.table(arrays)


def _encodings(data: pa.Table) -> tuple[list[str], list[str]]:
    """Dictionary-encode repetitive columns only, byte-stream-split floats: logits files shrink by ~2x."""
    dictionary, split = [], []
    for column, fld in zip(data.columns, data.schema, strict=True):
        kind = fld.type
        if pa.types.is_list(kind) and pa.types.is_floating(kind.value_type):
            split.append(f"{fld.name}.list.element")
        elif pa.types.is_floating(kind):
            split.append(fld.name)
        elif pa.types.is_string(kind):
            if len(column) and pc.count_distinct(column).as_py() <= len(column) // 4:
                dictionary.append(fld.name)
        elif not pa.types.is_nested(kind):
            dictionary.append(fld.name)
    return dictionary, split


class PartWriter:
    """One run's writer thread; the public methods are called from the training thread."""

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
        compression: str = "zstd",
        compression_level: int = 6,
    ) -> None:
        self.lake = lake
        self.run_dir = run_dir
        self.rank = rank
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.flush_every_s = flush_every_s
        self.compression = compression
        self.compression_level = compression_level
        self.files_written = 0
        self.rows_written = 0
        # Jobs wait in a deque: an append costs ~0.05 us and wakes nobody; the writer thread wakes every
        # `poll_s`, when `wake_at` jobs are waiting, or for a flush, and takes them all in one go.
        self._pending: collections.deque[Any] = collections.deque()
        self._max_pending = max_pending
        self._wake_at = min(512, max_pending)
        self._poll_s = 0.1
        self._wake = threading.Event()
        self._drained = threading.Event()
        self._sources: list[Callable[[], Mapping[tuple[str, int], Rows]]] = []
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._made_dirs: set[str] = set()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lakelog-writer", daemon=True)
        self._thread.start()

    # -- training thread ---------------------------------------------------------------------
    def submit(self, epoch: int, build: BuildRows) -> None:
        """Queue a row builder; raises if the writer failed earlier or was closed."""
        if self._error is not None or self._closed:
            self._check()
        pending = self._pending
        pending.append((epoch, build))
        if len(pending) >= self._wake_at:
            self._wake.set()
            if len(pending) > self._max_pending:  # back-pressure instead of unbounded memory
                self._drained.clear()
                while len(pending) > self._max_pending // 2 and self._thread.is_alive():
                    self._drained.wait(0.1)

    def add_source(self, drain: Callable[[], Mapping[tuple[str, int], Rows]]) -> None:
        """Register a callable the writer thread drains on every wake-up, for rows kept in a cheaper
        structure than a job per call (a run's scalars: one deque append per ``log``)."""
        self._sources.append(drain)

    def wake(self) -> None:
        """Ask the writer thread to drain its sources now (back-pressure for the sources)."""
        self._wake.set()

    def flush(self) -> None:
        """Return once everything submitted so far is in part files on disk."""
        self._check()
        marker = _Flush()
        self._pending.append(marker)
        self._wake.set()
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
            self._pending.append(_CLOSE)
            self._wake.set()
            self._thread.join()
        if self._error is not None:
            raise WriterFailedError(f"lakelog's background writer failed: {self._error}") from self._error

    @property
    def failed(self) -> bool:
        return self._error is not None

    def check(self) -> None:
        """Raise if the writer failed or is closed."""
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise WriterFailedError(f"lakelog's background writer failed: {self._error}") from self._error
        if self._closed:
            raise RunClosedError("this run is finished: start a new one with lakelog.init(...)")

    # -- writer thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        last_flush = time.monotonic()
        while True:
            self._wake.wait(min(self._poll_s, max(0.0, self.flush_every_s - (time.monotonic() - last_flush))))
            self._wake.clear()
            self._drain_sources()
            while self._pending:
                item = self._pending.popleft()
                try:
                    if item is _CLOSE:
                        self._drain_sources()
                        self._write_all()
                        return
                    if isinstance(item, _Flush):
                        self._drain_sources()
                        self._write_all()
                        last_flush = time.monotonic()
                        item.done.set()
                    else:
                        self._take(*item)
                        time.sleep(
                            0
                        )  # hand the GIL back between jobs: the training thread never waits a switch interval
                except BaseException as exc:  # keep the thread alive so flush()/close() can report it
                    log.error("lakelog writer error: %s", exc)
                    self._error = exc
                    if isinstance(item, _Flush):
                        item.done.set()
                    if item is _CLOSE:
                        self._drained.set()
                        return
            self._drained.set()
            if time.monotonic() - last_flush >= self.flush_every_s:
                try:
                    self._write_all()
                except BaseException as exc:
                    log.error("lakelog writer error: %s", exc)
                    self._error = exc
                last_flush = time.monotonic()

    def _drain_sources(self) -> None:
        for drain in self._sources:
            try:
                for (table, epoch), rows in drain().items():
                    self._add(table, epoch, rows)
            except BaseException as exc:
                log.error("lakelog writer error: %s", exc)
                self._error = exc

    def _take(self, epoch: int, build: BuildRows) -> None:
        for table, rows in build().items():
            if rows is not None:
                self._add(table, epoch, rows)

    def _add(self, table: str, epoch: int, rows: Rows) -> None:
        buf = self._buffers.setdefault((table, epoch), _Buffer())
        buf.rows += buf.add(rows)
        if buf.rows >= self.max_rows or buf.nbytes >= self.max_bytes:
            self._write(table, epoch, buf)

    def _write_all(self) -> None:
        for (table, epoch), buf in list(self._buffers.items()):
            if buf.rows:
                self._write(table, epoch, buf)

    def _write(self, table: str, epoch: int, buf: _Buffer) -> None:
        data = buf.table(table)
        folder = partition_dir(self.run_dir, table, epoch, self.rank, local=self.lake.local)
        if folder not in self._made_dirs:
            self.lake.makedirs(folder)
            self._made_dirs.add(folder)
        sink = pa.BufferOutputStream()
        dictionary, split = _encodings(data)
        pq.write_table(
            data,
            sink,
            compression=self.compression,
            compression_level=self.compression_level,
            use_dictionary=dictionary,
            use_byte_stream_split=split,
        )
        self.lake.write_bytes_atomic(f"{folder}/{part_file_name(self.rank)}", sink.getvalue())
        self.files_written += 1
        self.rows_written += data.num_rows
        self._buffers[(table, epoch)] = _Buffer()
