"""Rows waiting for a part file, and how a table's part files are encoded.

A ``Buffer`` keeps what one table partition received since its last part file: Arrow tables, column
chunks (one per submitted batch, converted to Arrow in bulk at write time) and scalar rows appended
to plain lists. When a bulk conversion fails, each batch is converted alone and only the batches that
cannot be are lost, so one bad batch never costs its neighbours.

``TableFormat`` is chosen once per table (not per part file): dictionary encoding for repetitive
columns, byte-stream-split for floats, and Parquet min/max statistics for every column except floating
ones. Statistics that leave NaN out make DuckDB skip row groups holding NaN (``isnan(value)`` would
find nothing), and nothing prunes on float ranges anyway.

``store_all`` encodes and writes the part files of one flush together on a small thread pool.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakelog.lake.schemas import SCHEMAS


class Row:
    """One row of a built-in table (``SCHEMAS``): its values in the schema's order, and about how many
    bytes it holds. Builders of one row per batch (batch order, prediction digests) return one; the
    buffer keeps the row as it is and makes every column at once when the part file is written."""

    __slots__ = ("nbytes", "values")

    def __init__(self, values: tuple, nbytes: int = 128) -> None:
        self.values = values
        self.nbytes = nbytes


def _chunk_len(chunk: Any) -> int:
    return len(chunk) if not isinstance(chunk, np.ndarray) else int(chunk.shape[0])


def rows_len(rows: Any) -> int:
    """Rows in an Arrow table, a ``Row`` or a mapping of column chunks (0 when it is none of them)."""
    if type(rows) is Row:
        return 1
    if isinstance(rows, pa.Table):
        return rows.num_rows
    if isinstance(rows, Mapping) and rows:
        try:
            return _chunk_len(next(iter(rows.values())))
        except TypeError:
            return 0
    return 0


def _chunk_range(chunk: Any) -> tuple[int, int] | None:
    if isinstance(chunk, np.ndarray):
        return (int(chunk.min()), int(chunk.max())) if chunk.size else None
    if isinstance(chunk, pa.ChunkedArray | pa.Array):
        found = pc.min_max(chunk).as_py()
        return None if found["min"] is None else (int(found["min"]), int(found["max"]))
    values = [v for v in chunk if v is not None]
    return (int(min(values)), int(max(values))) if values else None


def step_range(rows: Any) -> tuple[int, int] | None:
    """The smallest and largest ``step`` in the rows, or None without a step column."""
    if type(rows) is Row:  # every built-in schema starts with its step
        return (rows.values[0], rows.values[0]) if rows.values[0] is not None else None
    if isinstance(rows, pa.Table):
        return _chunk_range(rows["step"]) if "step" in rows.column_names and rows.num_rows else None
    chunk = rows.get("step") if isinstance(rows, Mapping) else None
    return None if chunk is None else _chunk_range(chunk)


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
        return _chunk_to_array(np.concatenate(chunks) if len(chunks) > 1 else first, kind)
    if all(isinstance(c, list) for c in chunks):
        values = list(itertools.chain.from_iterable(chunks)) if len(chunks) > 1 else first
        if kind is None and values and isinstance(values[0], str):
            kind = pa.string()  # naming the type skips pyarrow's inference, ~7x the cost of converting
        return pa.array(values, type=kind)
    return pa.concat_arrays([_chunk_to_array(c, kind) for c in chunks])


def _chunks_to_table(columns: Mapping[str, list], schema: pa.Schema | None) -> pa.Table:
    arrays = {}
    for name, chunks in columns.items():
        kind = schema.field(name).type if schema is not None and name in schema.names else None
        arrays[name] = _column(chunks, kind)
    return pa.table(arrays)


def _rows_to_table(rows: list[Row], schema: pa.Schema) -> pa.Table:
    """Rows as one table: one conversion per column, whatever the number of rows."""
    columns = zip(*[r.values for r in rows], strict=True)
    return pa.Table.from_arrays(
        [pa.array(values, type=fld.type) for values, fld in zip(columns, schema, strict=True)], schema=schema
    )


class Buffer:
    """Rows of one table partition waiting for a part file (see the module docstring)."""

    def __init__(self, table: str) -> None:
        self.name = table
        self.schema = SCHEMAS.get(table)
        self.clear()

    def clear(self) -> None:
        self.tables: list[pa.Table] = []
        self.columns: dict[str, list] = {}
        self.counts: list[int] = []  # rows of each chunk in ``columns``
        self.scalars: tuple[list, list, list, list] | None = None
        self.row_list: list[Row] = []
        self.rows = 0
        self.nbytes = 0
        self.min_step: int | None = None
        self.max_step: int | None = None
        self.lost = 0  # rows that could not be converted, and why
        self.cause: BaseException | None = None

    def replace(self, table: pa.Table | None) -> None:
        """Keep only ``table`` (rows held back for the next part file)."""
        self.clear()
        if table is not None and table.num_rows:
            self.add(table)

    def _note(self, lo: int, hi: int) -> None:
        self.min_step = lo if self.min_step is None else min(self.min_step, lo)
        self.max_step = hi if self.max_step is None else max(self.max_step, hi)

    def _seal_columns(self) -> None:
        if self.columns:
            self.tables.extend(self._convert_columns())
            self.columns, self.counts = {}, []

    def add(self, rows: pa.Table | Mapping[str, Any], steps: tuple[int, int] | None = None) -> None:
        """Keep ``rows``; ``steps`` is their (smallest, largest) step when the caller knows it."""
        found = step_range(rows) if steps is None else steps
        if found is not None:
            self._note(*found)
        if type(rows) is Row:
            self.row_list.append(rows)
            self.nbytes += rows.nbytes
            self.rows += 1
            return
        if isinstance(rows, pa.Table):
            self.tables.append(rows)
            self.nbytes += rows.nbytes
            self.rows += rows.num_rows
            return
        n = rows_len(rows)
        if self.columns and rows.keys() != self.columns.keys():  # the columns changed: seal what we have
            self._seal_columns()
        columns, nbytes = self.columns, 0
        for name, chunk in rows.items():
            chunks = columns.get(name)
            if chunks is None:
                columns[name] = [chunk]
            else:
                chunks.append(chunk)
            nbytes += chunk.nbytes if type(chunk) is np.ndarray else 16 * n  # an estimate for the others
        self.nbytes += nbytes
        self.counts.append(n)
        self.rows += n

    def add_scalars(self, step: int, names: list[str], values: list[float], stamp: int) -> None:
        """One ``log`` call: appended to plain lists, turned into columns when the part file is written."""
        if self.scalars is None:
            self.scalars = ([], [], [], [])
        n = len(names)
        steps, all_names, all_values, times = self.scalars
        steps.extend([step] * n)
        all_names.extend(names)
        all_values.extend(values)
        times.extend([stamp] * n)
        self.rows += n
        self.nbytes += 48 * n
        self._note(step, step)

    def _convert_columns(self) -> list[pa.Table]:
        """The column chunks as Arrow: in one go, or batch by batch when one of them is bad."""
        try:
            return [_chunks_to_table(self.columns, self.schema)]
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        tables = []
        for i, n in enumerate(self.counts):
            try:
                tables.append(_chunks_to_table({k: [v[i]] for k, v in self.columns.items()}, self.schema))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                self.lost, self.cause = self.lost + n, exc
        return tables

    def _convert_rows(self) -> list[pa.Table]:
        """The ``Row`` rows as Arrow: in one go, or row by row when one of them is bad."""
        if self.schema is None:
            self.lost, self.cause = self.lost + len(self.row_list), TypeError(f"no schema for {self.name}")
            return []
        try:
            return [_rows_to_table(self.row_list, self.schema)]
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        tables = []
        for row in self.row_list:
            try:
                tables.append(_rows_to_table([row], self.schema))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                self.lost, self.cause = self.lost + 1, exc
        return tables

    def table(self) -> tuple[pa.Table | None, int, BaseException | None]:
        """All buffered rows as one table, the number of rows that could not be converted and why."""
        tables = list(self.tables)
        if self.columns:
            tables.extend(self._convert_columns())
        if self.row_list:
            tables.extend(self._convert_rows())
        lost, cause = self.lost, self.cause
        if self.scalars is not None:
            steps, names, values, times = self.scalars
            try:
                tables.append(
                    pa.table(
                        {
                            "step": pa.array(steps, pa.int64()),
                            "name": pa.array(names, pa.string()),
                            "value": pa.array(values, pa.float64()),
                            "time": pa.array(times, pa.int64()).cast(SCHEMAS["scalars"].field("time").type),
                        }
                    )
                )
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                lost, cause = lost + len(steps), exc
        if not tables:
            return None, lost, cause
        if len(tables) == 1:
            return tables[0], lost, cause
        try:
            return pa.concat_tables(tables, promote_options="permissive"), lost, cause
        except pa.ArrowException as exc:  # batches whose columns cannot be merged: keep the first kind
            kept = [t for t in tables if t.schema.equals(tables[0].schema)]
            lost += sum(t.num_rows for t in tables) - sum(t.num_rows for t in kept)
            return pa.concat_tables(kept), lost, exc


_SAMPLE = 8192
"""Rows of a table's first part file that decide its string columns' encoding."""


@dataclass
class TableFormat:
    """Parquet options of one table, chosen from its first part file and reused for every later one.

    Floats (and float lists): byte-stream-split, no statistics. Strings: a dictionary when the first
    rows repeat (at most one distinct value in four), else delta-encoded (file names and ids share
    prefixes: ~15% smaller than plain). Other flat columns: a dictionary (steps, labels, indices repeat).
    """

    names: tuple[str, ...]
    dictionary: list[str]
    encodings: dict[str, str]
    statistics: list[str]

    @classmethod
    def choose(cls, data: pa.Table) -> TableFormat:
        dictionary, encodings, statistics = [], {}, []
        for column, fld in zip(data.columns, data.schema, strict=True):
            kind = fld.type
            if pa.types.is_list(kind) and pa.types.is_floating(kind.value_type):
                encodings[f"{fld.name}.list.element"] = "BYTE_STREAM_SPLIT"
                continue
            if pa.types.is_floating(kind):
                encodings[fld.name] = "BYTE_STREAM_SPLIT"
                continue
            statistics.append(fld.name)
            if pa.types.is_string(kind):
                sample = column.slice(0, _SAMPLE)  # the first rows tell repetitive columns apart
                if len(sample) and pc.count_distinct(sample).as_py() <= len(sample) // 4:
                    dictionary.append(fld.name)
                else:
                    encodings[fld.name] = "DELTA_BYTE_ARRAY"
            elif not pa.types.is_nested(kind):
                dictionary.append(fld.name)
        return cls(tuple(data.schema.names), dictionary, encodings, statistics)

    def fits(self, schema: pa.Schema) -> bool:
        return tuple(schema.names) == self.names

    def options(self, compression: str, level: int) -> dict[str, Any]:
        """The keyword arguments of ``pq.write_table`` and ``pq.ParquetWriter`` for this format."""
        return {
            "compression": compression,
            "compression_level": level,
            "use_dictionary": self.dictionary,
            "column_encoding": self.encodings,
            "write_statistics": self.statistics,
        }

    def encode(self, data: pa.Table, compression: str, level: int) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, **self.options(compression, level))
        return sink.getvalue()


PART_THREADS = max(1, min(4, os.cpu_count() or 1))
"""Part files of one flush encoded and stored at once (most of that time is spent without the GIL)."""


def split_before(data: pa.Table, before: int) -> tuple[pa.Table, pa.Table]:
    """(rows with step >= before, rows with step < before). Rows arrive in step order, so the held-back
    rows are usually a suffix: two zero-copy slices; otherwise a filter."""
    steps = data["step"].to_numpy()
    if steps.size < 2 or bool((steps[1:] >= steps[:-1]).all()):
        cut = int(np.searchsorted(steps, before, side="left"))
        return data.slice(cut), data.slice(0, cut)
    mask = pc.less(data["step"], before)
    return data.filter(pc.invert(mask)), data.filter(mask)


@dataclass
class Part:
    """One part file on its way: the rows to write, those held back, where and how it is written."""

    table: str
    buf: Buffer
    data: pa.Table
    keep: pa.Table | None
    fmt: TableFormat
    folder: str
    path: str
    encoding: Any = None
    """The part's earlier rows, encoded ahead as row groups (a ``rowgroups.Encoding``), or None."""

    @property
    def rows(self) -> int:
        return self.data.num_rows + (self.encoding.rows if self.encoding is not None else 0)

    def all_rows(self) -> pa.Table:
        """Every row of the part, the held-back ones included (to keep them when it is not written)."""
        tables = [*(self.encoding.tables if self.encoding is not None else ()), self.data]
        if self.keep is not None:
            tables.append(self.keep)
        return pa.concat_tables(tables, promote_options="permissive")


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _part_pool() -> ThreadPoolExecutor:
    """The threads that encode and store the part files of one flush together (made again after a fork)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(max_workers=PART_THREADS, thread_name_prefix="lakelog-part"),
            )
        return _pool[1]


def store_all(store: Callable[[Part], BaseException | None], parts: list[Part]) -> list:
    """``store`` of every part, on the pool when there are several; one by one once the interpreter is
    exiting (it refuses new threads then, and an unfinished run is written at exit)."""
    if len(parts) > 1:
        try:
            return list(_part_pool().map(store, parts))
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            pass
    return [store(part) for part in parts]
