"""Reading a dump file one tensor at a time, without torch: the read side of compare-dumps.

bf16, which numpy lacks, is widened to float32 from its raw bits; every tensor read is checked
against the checksum its writer stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xxhash
from safetensors import SafetensorError, safe_open

from lakelog.errors import DumpError
from lakelog.lake import dump_layout as L


class UnreadableTensor(Exception):
    """One tensor could not be read (corrupt bytes, a dtype numpy cannot hold); the rest go on."""

    def __init__(self, message: str, reader: DumpReader) -> None:
        super().__init__(message)
        self.reader = reader


_NUMPY = {name: numpy for name, (_, numpy) in L.SAFETENSORS_DTYPES.items() if numpy is not None}


class DumpReader:
    """One dump file: metadata, names (ties included) and one tensor at a time as numpy.

    ``safe_open`` checks the file (header, offsets, length) and gives the metadata without touching
    the data. Tensors are then read one by one with positioned reads (``pread``, safe from several
    threads) into fresh arrays: pages of a memory map would count in the process's resident memory
    until unmapped, a 100 MB dump as 100 MB.
    """

    def __init__(self, path: Path, run: str) -> None:
        self.path, self.run = path, run
        try:
            with safe_open(str(path), framework="numpy") as handle:
                raw_meta, keys = handle.metadata(), set(handle.keys())
            self._fd = os.open(path, os.O_RDONLY)
        except (SafetensorError, OSError) as exc:
            raise DumpError(f"run {run}: {path}: not a readable safetensors dump ({exc})") from exc
        try:  # safe_open has checked the header: this cannot fail short of the file changing under us
            size = int.from_bytes(os.pread(self._fd, 8, 0), "little")
            self._header = json.loads(os.pread(self._fd, size, 8))
        except (OSError, ValueError) as exc:
            os.close(self._fd)
            raise DumpError(f"run {run}: {path}: not a readable safetensors dump ({exc})") from exc
        self._base = 8 + size
        self.meta = L.parse_metadata(raw_meta)
        self.ties: dict[str, str] = self.meta[L.META_TIES]
        order = [n for n in (self.meta[L.META_NAMES] or []) if n in keys or self.ties.get(n) in keys]
        self.names = order + sorted((keys | {a for a, c in self.ties.items() if c in keys}) - set(order))
        opt = self.meta.get(L.META_OPTIMIZER) or {}
        self.param_of = (
            {
                flat: opt["param_names"].get(i, flat)
                for i, entries in opt.get("state", {}).items()
                for flat in entries.values()
            }
            if opt.get("param_names")
            else {}
        )

    def info(self, name: str) -> tuple[str, tuple[int, ...]]:
        entry = self._header[self.ties.get(name, name)]
        return entry["dtype"], tuple(entry["shape"])

    def close(self) -> None:
        os.close(self._fd)


class TensorStream:
    """One tensor of a dump read a chunk at a time into one reused buffer, hashed on the way.

    Memory is a chunk, however large the tensor. ``verify()`` at the end compares the hash with the
    checksum the writer stored, so values from a corrupted file are thrown away, not reported.
    """

    def __init__(self, reader: DumpReader, name: str, chunk: int) -> None:
        self.reader = reader
        self.stored = reader.ties.get(name, name)
        entry = reader._header[self.stored]
        self.kind = entry["dtype"]
        dtype = _NUMPY.get(self.kind)
        if dtype is None:
            raise UnreadableTensor(
                f"tensor {self.stored!r} has dtype {self.kind}, which compare-dumps cannot read", reader
            )
        begin, end = entry["data_offsets"]
        self.itemsize = np.dtype(dtype).itemsize
        self.count = (end - begin) // self.itemsize
        self._offset = reader._base + begin
        self._buffer = np.empty(min(self.count, chunk), dtype=dtype)
        self._hash = xxhash.xxh3_128()

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Elements ``start .. start+count`` (read in order): the stored bits, and values numpy can add up."""
        raw = self._buffer[:count]
        view, done, size = memoryview(raw.view(np.uint8)), 0, count * self.itemsize
        while done < size:  # positioned reads: several threads may read one file at once
            got = os.preadv(self.reader._fd, [view[done:]], self._offset + start * self.itemsize + done)
            if got <= 0:
                raise UnreadableTensor(
                    f"tensor {self.stored!r}: the file ends before its data does", self.reader
                )
            done += got
        self._hash.update(view)
        values = (raw.astype(np.uint32) << 16).view(np.float32) if self.kind == "BF16" else raw
        return raw, values

    def verify(self) -> None:
        expected = self.reader.meta[L.META_CHECKSUMS].get(self.stored)
        if expected is not None and self._hash.hexdigest() != expected:
            raise UnreadableTensor(
                f"tensor {self.stored!r} does not match its checksum: the file is corrupted", self.reader
            )
