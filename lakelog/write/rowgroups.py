"""A part file encoded while it fills: row groups handed to an encoder thread, the file written at the end.

Why: encoding a large part file (Parquet, zstd) took a third of the writer's time, and it began only
once the part was full, so a writer behind the training loop (and ``finish`` waiting for it) waited
for all of it. Here, while the writer is behind (``background.Worker.behind``: a ``flush`` or
``finish`` waits for it, or its queue grows), each time a table's buffer holds ``GROUP_ROWS`` rows
that are final (their step is older than the newest step seen), the writer thread converts them to
Arrow and an ``Encoding`` encodes them as one row group on the encoder thread, which releases the GIL
while it works; the writer goes on building rows meanwhile. When the part is cut, its last rows
become the last row group and the whole file is written atomically as before, so a part file still
appears whole or not at all. Row groups are encoded in the order they are added.

A writer that keeps up with training encodes a part when it is cut, as before: nothing waits for it,
and encoding beside it would only take CPU from the training loop (on ``bench_writer.py``'s loop it
added ~0.05 ms a step, a fifth of the overhead).

The encoded tables are kept until the file is written: when the lake is not writable the rows go back
to the buffer and nothing is lost; when a row group cannot be encoded, ``finish`` raises its error and
the part's rows are counted as lost, as for a part encoded at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lakelog.write.losses import Losses
from lakelog.write.partfiles import TableFormat

GROUP_ROWS = 1 << 16
"""Final rows of one table that the writer hands to the encoder as a row group (a few milliseconds of
encoding each; DuckDB reads row groups of this size in parallel)."""

_encoder: tuple[int, ThreadPoolExecutor] | None = None
_encoder_lock = threading.Lock()


def _encoder_thread() -> ThreadPoolExecutor:
    """The one encoder thread of the process (made again after a fork). It is not the part pool:
    a part stored there may wait for its row groups, which must not queue behind it."""
    global _encoder
    with _encoder_lock:
        if _encoder is None or _encoder[0] != os.getpid():
            _encoder = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakelog-encode"))
        return _encoder[1]


def _done_here(fn: Callable[..., None], *args: Any) -> Future:
    """``fn(*args)`` run on this thread, as a finished future (its error kept for ``result``)."""
    done: Future = Future()
    try:
        fn(*args)
    except BaseException as exc:
        done.set_exception(exc)
    else:
        done.set_result(None)
    return done


class Encoding:
    """One part file being encoded: its format, schema, encoded row groups and the tables they hold."""

    def __init__(self, fmt: TableFormat, schema: pa.Schema, compression: str, level: int) -> None:
        self.fmt = fmt
        self.schema = schema
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.nbytes = 0
        self._sink = pa.BufferOutputStream()
        self._writer = pq.ParquetWriter(self._sink, schema, **fmt.options(compression, level))
        self._pending: Future | None = None

    def fits(self, schema: pa.Schema) -> bool:
        return schema.equals(self.schema)

    def add(self, data: pa.Table) -> None:
        """Encode ``data`` (of this schema) as the next row group, on the encoder thread. Never raises:
        a failure is raised by ``finish``, which counts the part's rows as lost."""
        self.tables.append(data)
        self.rows += data.num_rows
        self.nbytes += data.nbytes
        previous = self._pending
        try:
            self._pending = _encoder_thread().submit(self._encode, previous, data)
        except RuntimeError:  # the interpreter is exiting (no new threads): encode it here
            self._pending = _done_here(self._encode, previous, data)

    def _encode(self, previous: Future | None, data: pa.Table) -> None:
        if previous is not None:
            previous.result()  # in order; a failed group fails every later one
        self._writer.write_table(data, row_group_size=data.num_rows)

    def finish(self, tail: pa.Table | None) -> pa.Buffer:
        """The whole file: the row groups so far and ``tail`` (of this schema) as the last one.
        Raises what encoding raised."""
        try:
            if self._pending is not None:
                self._pending.result()
            if tail is not None and tail.num_rows:
                self._writer.write_table(tail, row_group_size=tail.num_rows)
        finally:
            self._writer.close()
        return self._sink.getvalue()

    def abandon(self) -> pa.Table | None:
        """Stop encoding and give the rows back as one table (None when there were none)."""
        try:
            if self._pending is not None:
                self._pending.exception()  # wait; the rows are given back whatever happened
        finally:
            self._writer.close()
        return pa.concat_tables(self.tables, promote_options="permissive") if self.tables else None


class RowGroups:
    """The encodings of one writer's partitions (by table and epoch) and each table's Parquet format;
    rows that cannot be encoded are counted in ``losses``."""

    def __init__(self, losses: Losses, compression: str, level: int) -> None:
        self.losses = losses
        self.compression = compression
        self.level = level
        self._encodings: dict[tuple[str, int], Encoding] = {}
        self._formats: dict[str, TableFormat] = {}

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._encodings

    def held(self, key: tuple[str, int]) -> tuple[int, int]:
        """Rows and bytes the partition has encoded ahead."""
        encoding = self._encodings.get(key)
        return (0, 0) if encoding is None else (encoding.rows, encoding.nbytes)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._encodings.values())

    def format(self, table: str, data: pa.Table) -> TableFormat:
        """The table's Parquet format, chosen from its first rows (again when its columns change)."""
        fmt = self._formats.get(table)
        if fmt is None or not fmt.fits(data.schema):
            fmt = self._formats[table] = TableFormat.choose(data)
        return fmt

    def add(self, key: tuple[str, int], data: pa.Table) -> None:
        """Encode ``data`` (final rows of the partition ``key``) as its next row group."""
        encoding = self._encodings.get(key)
        if encoding is not None and not encoding.fits(data.schema):  # the columns changed: start again
            data, encoding = self._merged(key[0], self._encodings.pop(key), data), None
        if encoding is None:
            try:
                encoding = Encoding(self.format(key[0], data), data.schema, self.compression, self.level)
            except Exception as exc:  # rows Parquet cannot hold: lost, the rest goes on
                self.losses.drop(key[0], data.num_rows, exc)
                return
            self._encodings[key] = encoding
        encoding.add(data)

    def take(self, key: tuple[str, int], data: pa.Table | None) -> tuple[pa.Table | None, Encoding | None]:
        """The partition's encoding (removed), and ``data``, the rows to follow it in the part file. When
        their columns differ, the encoding is abandoned and its rows come back joined to ``data``."""
        encoding = self._encodings.pop(key, None)
        if encoding is None:
            return data, None
        if data is None or not data.num_rows:
            return encoding.tables[0].slice(0, 0), encoding
        if not encoding.fits(data.schema):
            return self._merged(key[0], encoding, data), None
        return data, encoding

    def _merged(self, table: str, encoding: Encoding, data: pa.Table) -> pa.Table:
        """The rows of an abandoned encoding and ``data`` as one table; rows of another kind that cannot
        join them are lost (as when a buffer's batches cannot be merged)."""
        earlier = encoding.abandon()
        if earlier is None:
            return data
        try:
            return pa.concat_tables([earlier, data], promote_options="permissive")
        except pa.ArrowException as exc:
            self.losses.drop(table, data.num_rows, exc)
            return earlier
