"""The one atomic file write on local disk: a reader sees the whole new file or the old one, never half.

Every writer in lakelog that puts a finished file on local disk (Parquet parts, run.json, dumps, the
previous-weights file, worker seed records, reports, cached bundles) goes through ``write_atomic``:
the content is written under a temporary name in the same folder, flushed to disk with ``fsync``,
then renamed onto the final name (a rename within one folder is atomic on POSIX and Windows), and
the folder is synced so the rename itself survives a power cut. When writing fails, the temporary
file is removed and the final name keeps what it had. Object stores need none of this: a PUT is
whole or absent (``Lake.write_bytes_atomic`` sends those directly).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"
"""Every temporary name ends so; table globs (``*.parquet``, ``*.json``) never match one."""


def temp_path(final: str | os.PathLike[str]) -> Path:
    """A fresh temporary name next to ``final`` (hidden, unique per process and call)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # folders cannot be opened for fsync on Windows; NTFS journals renames
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (e.g. certain network mounts) refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    mode: int | None = None,
    durable: bool = True,
) -> Path:
    """Create ``path`` atomically by letting ``write`` fill a temporary file next to it.

    ``write`` receives the temporary path and writes the whole content there (through ``open``, or a
    library that takes a file name such as ``safetensors.torch.save_file``). ``mode`` sets the file's
    permission bits before the rename (libraries that create files 0600 would otherwise decide them).
    ``durable=False`` skips both fsyncs: for scratch files only this process reads back (the previous
    weights of ``watch(keep_previous="disk")``), where waiting for the disk at each capture buys nothing.
    Raises whatever ``write`` or the file system raises; the temporary file is removed first.
    """
    final = Path(path)
    tmp = temp_path(final)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(final.parent)
    return final


def write_stream_atomic(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], None], *, durable: bool = True
) -> Path:
    """Create ``path`` atomically from a callback that writes to an open binary file (piece by piece)."""

    def _fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return write_atomic(path, _fill, durable=durable)


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes | bytearray | memoryview, *, durable: bool = True
) -> Path:
    """Create ``path`` atomically with ``data`` as its whole content."""
    return write_stream_atomic(path, lambda f: f.write(data), durable=durable)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Create ``path`` atomically with ``text`` encoded as UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)
