"""Where things live in a lake: run folders, table partitions and part-file names.

Shared by the write side and the read side, so it imports neither torch nor DuckDB.
A lake root is a local folder (the default) or an object-store URI such as ``s3://bucket/runs``;
both are reached through a pyarrow filesystem so the writer and readers need one code path.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from lakelog.errors import InvalidArgumentError
from lakelog.lake import files
from lakelog.lake.schemas import SCHEMAS

RUN_FILE = "run.json"
TABLES: tuple[str, ...] = tuple(SCHEMAS)
"""Every Parquet table a run may hold; each is ``<run>/<table>/epoch=<e>/rank=<r>/part-….parquet``."""

PART_SUFFIX = ".parquet"
TEMP_SUFFIX = files.TEMP_SUFFIX

_RUN_NAME_FORBIDDEN = re.compile(r"[/\\=*?\[\]{}\x00-\x1f\x7f]")
MAX_RUN_NAME_BYTES = 200
"""A run name is one folder name: file systems allow 255 bytes; the rest is kept for suffixes (temp names)."""
MAX_PATH_BYTES = 4000
"""Longest run folder path accepted: part files add about 100 bytes below it, Linux allows 4096."""
_part_counter = itertools.count()


def check_run_name(name: str) -> str:
    """Return ``name`` if it can be a run folder name and a plain (never a pattern) name, else raise.

    Refused: empty names, '/', '\\', '=' (looks like a partition), glob characters ``* ? [ ] { }``
    (readers build file patterns from run names), control characters, a leading '.', and names over
    ``MAX_RUN_NAME_BYTES`` bytes in UTF-8.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(f"name: expected a non-empty string, got {name!r}")
    bad = _RUN_NAME_FORBIDDEN.search(name)
    if bad or name in (".", "..") or name.startswith("."):
        what = f"{bad.group()!r}" if bad else "a leading '.'"
        raise InvalidArgumentError(
            f"name: {name!r} cannot be a run name: it contains {what}; run names are plain folder "
            "names without '/', '\\', '=', glob characters (* ? [ ] { }), control characters or a leading '.'"
        )
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if size > MAX_RUN_NAME_BYTES:
        raise InvalidArgumentError(
            f"name: expected at most {MAX_RUN_NAME_BYTES} bytes (UTF-8), got {size} bytes ({name[:40]!r}…)"
        )
    return name


def is_uri(root: str | os.PathLike[str]) -> bool:
    """True for object-store roots such as ``s3://bucket/runs``; local paths stay plain paths."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


def _object_store_uri(uri: str) -> str:
    """Ask pyarrow's S3 filesystem to delay opening output streams unless the URI says otherwise.

    A delayed open sends a small part file (most of them) as one PutObject, which is atomic like a
    multipart upload but one round trip instead of three.
    """
    if not uri.startswith("s3://") or "allow_delayed_open=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}allow_delayed_open=true"


@dataclass(frozen=True)
class Lake:
    """A lake root resolved to a pyarrow filesystem and a base path inside it."""

    root: str
    fs: pafs.FileSystem
    base: str
    local: bool

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, filesystem: pafs.FileSystem | None = None) -> Lake:
        if isinstance(root, str) and root.startswith("file://"):
            root = root[len("file://") :]
        if filesystem is not None and not isinstance(filesystem, pafs.LocalFileSystem):
            return cls(
                str(root), filesystem, str(root).split("://", 1)[-1].split("?", 1)[0].rstrip("/"), False
            )
        if is_uri(root):
            fs, base = pafs.FileSystem.from_uri(_object_store_uri(str(root)))
            return cls(str(root), fs, base.rstrip("/"), False)
        path = Path(root).expanduser().absolute()
        return cls(str(path), pafs.LocalFileSystem(), str(path), True)

    def join(self, *parts: str) -> str:
        """``parts`` below the lake's base folder, as its file system spells paths."""
        return join_path(self.local, self.base, *parts)

    def under(self, folder: str, *parts: str) -> str:
        """``parts`` below ``folder``, a path this lake gave out (a run folder, a partition)."""
        return join_path(self.local, folder, *parts)

    def location(self, *parts: str) -> str:
        """``parts`` below the root as a user names them, which ``Lake.open`` and ``lakelog.connect`` take.

        A local path, or the root's URI with the parts appended before its query (``?endpoint_override=…``).
        """
        if self.local:
            return self.join(*parts)
        uri, sep, query = self.root.partition("?")
        return join_path(False, uri.rstrip("/"), *parts) + sep + query

    def parent(self) -> tuple[Lake, str]:
        """The lake one folder up and this folder's name: a run folder given as a root is (its lake, its run)."""
        if self.local:
            folder, name = os.path.split(self.base)
            return Lake(folder, self.fs, folder, True), name
        folder, _, name = self.base.rpartition("/")
        uri, sep, query = self.root.partition("?")
        return Lake(uri.rstrip("/").rsplit("/", 1)[0] + sep + query, self.fs, folder, False), name

    def run_dir(self, run: str) -> str:
        return self.join(check_run_name(run))

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_file(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def run_names(self) -> list[str]:
        """Names of the runs under the root: folders holding a run.json, sorted."""
        info = self.fs.get_file_info(self.base)
        if info.type == pafs.FileType.NotFound:
            return []
        names = []
        for entry in self.fs.get_file_info(pafs.FileSelector(self.base)):
            if entry.type == pafs.FileType.Directory and self.is_file(self.join(entry.base_name, RUN_FILE)):
                names.append(entry.base_name)
        return sorted(names)

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")

    def write_bytes_atomic(self, path: str, data: bytes | memoryview) -> None:
        """Write a whole file so readers see all of it or nothing (rename locally; object stores PUT whole)."""
        if self.local:
            files.write_bytes_atomic(path, data)  # temp file, fsync, rename; the temp file never stays
        else:
            with self.fs.open_output_stream(path) as f:
                f.write(data)

    def makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.create_dir(path, recursive=True)


def join_path(local: bool, *parts: str) -> str:
    """The one path join of the lake: ``os.path`` on local disk, '/' in object stores (``Lake.join``)."""
    return os.path.join(*parts) if local else "/".join(parts)


def partition_dir(run_dir: str, table: str, epoch: int, rank: int, *, local: bool = True) -> str:
    return join_path(local, run_dir, table, f"epoch={int(epoch)}", f"rank={int(rank)}")


PART_NAME = re.compile(r"^part-(\d{6,})-\d{6,}-")
"""Part file names start with the flush sequence that wrote them (``part-<seq>-…``)."""


def part_file_name(rank: int, seq: int = 0) -> str:
    """A name no other writer can produce, led by the writer's flush sequence ``seq``.

    The sequence lets a resumed writer find the parts of flushes that were never committed; the
    counter, host, pid and random suffix keep names of ranks and processes apart.
    """
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:32]
    return (
        f"part-{int(seq):06d}-{next(_part_counter):06d}-{host}-{os.getpid()}-r{rank}-"
        f"{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
    )


def part_seq(file_name: str) -> int | None:
    """The flush sequence a part file name starts with, or None for names without one."""
    match = PART_NAME.match(file_name)
    return int(match.group(1)) if match else None
