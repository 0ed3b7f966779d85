"""One listing of a lake for every reader: the runs, their part files, and what was left out and why.

Readers skip, never hide: a part file that cannot be a Parquet file (empty, truncated, random bytes,
unreadable) and a run.json that cannot be read (bad JSON, not an object, nested too deep, a field of
the wrong type or range) are left out with one warning naming the file and the reason, and every
other file is read. Run names are never patterns: files are found by listing the named runs'
folders, so a run folder called ``*`` or ``[ab]`` (refused at ``init``, possible in old lakes) reads
exactly itself.

The listing also applies the lake's two on-disk protocols: a rank's commit (``lake.lifecycle``:
rows beyond the last committed step of an unfinished rank are hidden) and pending compactions
(``lake.compact``: a committed merge replaces its parts even before its clean-up finished).
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from lakelog.errors import InvalidArgumentError, RunNotFoundError
from lakelog.lake import compact_protocol as lake_compact
from lakelog.lake.layout import PART_SUFFIX, RUN_FILE, TABLES, Lake
from lakelog.lake.lifecycle import COMMITS_DIR, WRITERS_DIR, RunState, run_state

log = logging.getLogger("lakelog")

MAGIC = b"PAR1"
INT64 = (-(2**63), 2**63 - 1)
MAX_RUN_FILE_BYTES = 16 << 20
"""A run.json larger than this is not read (16 MiB): it is not one lakelog wrote."""
SHALLOW_BRACKETS = 256
"""A JSON text with fewer brackets than this nests fewer levels, far below the recursion limit that
showing it again (``json.dumps``) could hit, so its fields need no trial rendering."""

_PARTITION = re.compile(r"^(epoch|rank)=(-?\d+)$")


@dataclass(frozen=True)
class Problem:
    """A file left out of the views, and why."""

    path: str
    reason: str


@dataclass
class RunEntry:
    """One run folder of a lake: its run.json (None when unreadable) and its reader-side state."""

    lake: Lake
    name: str
    info: dict[str, Any] | None
    state: RunState | None = None

    @property
    def folder(self) -> str:
        return self.lake.join(self.name)


@dataclass
class Scan:
    """Every readable part file per table, the runs they belong to, and every file left out."""

    runs: list[RunEntry] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})
    problems: list[Problem] = field(default_factory=list)
    cuts: list[tuple[str, int, int]] = field(default_factory=list)
    """(run, rank, step): rows of that rank with a larger step were never committed; readers hide them."""
    quiet: bool = False
    """Collect problems without a warning each (``lakelog check`` prints them itself)."""

    def problem(self, path: str, reason: str, *, warn: bool = True) -> None:
        found = Problem(path, reason)
        if found in self.problems:  # a listing made again (a live view) reports a file once
            return
        self.problems.append(found)
        if warn and not self.quiet:
            log.warning("lakelog: left out %s: %s", path, reason)


def locate(target: Any, filesystem: pafs.FileSystem | None = None) -> list[tuple[Lake, list[str]]]:
    """Turn roots, run folders and Run objects into (lake, run names) pairs; clear errors for bad roots."""
    items = list(target) if isinstance(target, list | tuple) else [target]
    located: list[tuple[Lake, list[str]]] = []
    for item in items:
        if hasattr(item, "lake") and hasattr(item, "name"):  # a lakelog Run
            located.append((item.lake, [item.name]))
            continue
        if isinstance(item, pafs.FileSystem):
            continue
        if not isinstance(item, str | os.PathLike):
            raise InvalidArgumentError(
                f"root: expected a lake folder, a run folder, an s3:// URI or a Run, got {type(item).__name__}"
            )
        lake = Lake.open(item, filesystem=filesystem)
        kind = lake.fs.get_file_info(lake.base).type
        if kind == pafs.FileType.NotFound:
            raise RunNotFoundError(f"root: {lake.root!r} does not exist")
        if kind != pafs.FileType.Directory:
            raise InvalidArgumentError(
                f"root: {lake.root!r} is a file, not a lake (a folder of runs) nor a run folder"
            )
        if lake.is_file(lake.join(RUN_FILE)):  # a run folder, not a root
            parent, name = lake.parent()
            located.append((parent, [name]))
        else:
            located.append((lake, _run_names(lake)))
    return located


def _run_names(lake: Lake) -> list[str]:
    """Folders of the root that hold a run.json (readable or not), sorted."""
    if lake.local:
        try:
            with os.scandir(lake.base) as entries:
                dirs = [e.name for e in entries if e.is_dir()]
        except OSError as exc:
            raise RunNotFoundError(f"root: {lake.root!r} cannot be listed: {exc.strerror or exc}") from exc
        return sorted(d for d in dirs if os.path.lexists(os.path.join(lake.base, d, RUN_FILE)))
    return lake.run_names()


def _check_field(info: dict[str, Any], key: str, kinds: tuple[type, ...], bad: list[str]) -> None:
    value = info.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kinds):
        bad.append(f"{key} is {type(value).__name__}, expected {' or '.join(k.__name__ for k in kinds)}")
        info[key] = None
    elif isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        bad.append(f"{key} = {value} is outside the int64 range")
        info[key] = None


def read_run_info(lake: Lake, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """A run's run.json with every field checked, and the reason it (or a field of it) was left out."""
    path = lake.join(name, RUN_FILE)
    try:
        if lake.local:  # the common case, without pyarrow's filesystem layer (a thousand runs add up)
            with open(path, "rb") as f:
                raw = f.read(MAX_RUN_FILE_BYTES + 1)
        else:
            with lake.fs.open_input_stream(path) as f:
                raw = f.read(MAX_RUN_FILE_BYTES + 1)
        if len(raw) > MAX_RUN_FILE_BYTES:
            return None, f"larger than {MAX_RUN_FILE_BYTES} bytes"
        info = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        return None, f"unreadable ({getattr(exc, 'strerror', None) or exc})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except RecursionError:
        return None, "nested too deeply to read"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(info, dict):
        return None, f"not a JSON object (a {type(info).__name__})"
    bad: list[str] = []
    for key in ("name", "created", "finished", "status"):
        _check_field(info, key, (str,), bad)
    for key in ("seed", "world_size"):
        _check_field(info, key, (int,), bad)
    # JSON with few brackets nests too shallowly to fail being shown again: no trial rendering needed
    shallow = raw.count(b"[") + raw.count(b"{") < SHALLOW_BRACKETS
    for key in ("config", "summary", "environment", "watch"):
        _check_field(info, key, (dict,), bad)
        if shallow:
            continue
        try:
            json.dumps(info.get(key))
        except (ValueError, TypeError, RecursionError):
            bad.append(f"{key} cannot be shown as JSON")
            info[key] = None
    summary = info.get("summary") or {}
    duration = summary.get("duration_s")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
        bad.append("summary.duration_s is not a number")
        info["summary"] = {k: v for k, v in summary.items() if k != "duration_s"}
    return info, ("; ".join(bad) or None)


def _check_part(path: str) -> str | None:
    """Why a local file cannot be a Parquet part (None when it can): the cheap checks, no decoding."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return "empty (0 bytes)"
        if size < 12:
            return f"truncated ({size} bytes, too small to be Parquet)"
        if os.pread(fd, 4, 0) != MAGIC:
            return "not a Parquet file (no PAR1 header)"
        if os.pread(fd, 4, size - 4) != MAGIC:
            return "truncated or corrupt (no PAR1 footer)"
        footer = int.from_bytes(os.pread(fd, 4, size - 8), "little")
        if footer <= 0 or footer > size - 12:
            return f"corrupt footer (length {footer} in a {size}-byte file)"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    finally:
        os.close(fd)
    return None


def _scandir(path: str, scan: Scan) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []
    except OSError as exc:
        scan.problem(path, f"folder unreadable ({exc.strerror})")
        return []


def _is_key(entry: os.DirEntry, key: str) -> bool:
    """``entry`` is a ``key=<integer>`` folder (what hive partition readers type as BIGINT)."""
    name = entry.name
    return name.startswith(key) and name[len(key) :].lstrip("-").isdigit() and entry.is_dir()


def _local_parts(run_dir: str, table: str, scan: Scan) -> list[str]:
    out: list[str] = []
    for epoch in _scandir(os.path.join(run_dir, table), scan):
        if _is_key(epoch, "epoch="):
            for rank in _scandir(epoch.path, scan):
                if _is_key(rank, "rank="):
                    out.extend(
                        p.path
                        for p in _scandir(rank.path, scan)
                        if p.name.endswith(PART_SUFFIX) and not p.name.startswith(".")
                    )
    return out


def folder_names(entry: RunEntry, scan: Scan) -> set[str]:
    """The sub-folders of a local run folder: its tables and its protocol folders (``_writers``…)."""
    return {e.name for e in _scandir(entry.folder, scan) if e.is_dir()}


def _list_local(entry: RunEntry, scan: Scan) -> tuple[set[str], dict[str, list[str]]]:
    present = folder_names(entry, scan)
    files = {table: list(_local_parts(entry.folder, table, scan)) for table in TABLES if table in present}
    return present, files


def _list_remote(entry: RunEntry, scan: Scan) -> tuple[set[str], dict[str, list[str]]]:
    lake, base = entry.lake, entry.folder
    try:
        infos = lake.fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError as exc:
        scan.problem(base, f"folder unreadable ({exc})")
        return set(), {}
    files: dict[str, list[str]] = {}
    present: set[str] = set()
    for info in infos:
        rel = info.path[len(base) :].lstrip("/").split("/")
        present.add(rel[0])
        if info.type != pafs.FileType.File or len(rel) != 4 or rel[0] not in TABLES:
            continue
        if not (_PARTITION.match(rel[1]) and _PARTITION.match(rel[2])):
            continue
        if not rel[3].endswith(PART_SUFFIX) or rel[3].startswith("."):
            continue
        if info.size is not None and info.size < 12:
            scan.problem(info.path, "empty (0 bytes)" if info.size == 0 else f"truncated ({info.size} bytes)")
            continue
        files.setdefault(rel[0], []).append(info.path)
    return present, files


def signature(entry: RunEntry) -> tuple[int, int] | None:
    """What changes when a finished run's files change: the mtimes of its folder and its ``_compact`` folder.

    run.json is replaced (a rename in the run folder) when a run is resumed, and ``compact`` creates
    and removes ``_compact`` (and writes its manifests there), so a listing of a run that is not
    being written stays valid while this is unchanged. None for object stores (no folder mtimes).
    """
    if not entry.lake.local:
        return None
    try:
        run = os.stat(entry.folder).st_mtime_ns
    except OSError:
        return (0, 0)
    try:
        staged = os.stat(os.path.join(entry.folder, lake_compact.STAGING_DIR)).st_mtime_ns
    except OSError:
        staged = 0
    return (run, staged)


def list_run(
    entry: RunEntry, scan: Scan, *, check_files: bool = True, listed: tuple | None = None
) -> dict[str, list[str]]:
    """The readable part files of one run per table, with pending compactions applied; problems go to ``scan``."""
    present, files = listed or (_list_local(entry, scan) if entry.lake.local else _list_remote(entry, scan))
    out = _readable(entry, present, files, scan, check_files=check_files)
    refresh_state(entry, present)
    return out


def list_table(
    entry: RunEntry, table: str, present: set[str], scan: Scan, *, check_files: bool = True
) -> list[str]:
    """The readable part files of one table of one local run (``present``: its folder names, as
    ``folder_names`` gives them), pending compactions applied; problems go to ``scan``."""
    files = {table: _local_parts(entry.folder, table, scan) if table in present else []}
    return _readable(entry, present, files, scan, check_files=check_files)[table]


def refresh_state(entry: RunEntry, present: set[str]) -> None:
    """Read the run's claims and commits again (``lake.lifecycle``) when its folder has them."""
    if WRITERS_DIR in present or COMMITS_DIR in present:
        entry.state = run_state(entry.lake, entry.name, entry.info or {})


def _readable(
    entry: RunEntry, present: set[str], files: dict[str, list[str]], scan: Scan, *, check_files: bool
) -> dict[str, list[str]]:
    if lake_compact.STAGING_DIR in present:
        files = lake_compact.visible_files(entry.lake, entry.folder, files)
    out: dict[str, list[str]] = {}
    for table, paths in files.items():
        if check_files and entry.lake.local:
            kept = []
            for path in paths:
                reason = _check_part(path)
                if reason is None:
                    kept.append(path)
                else:
                    scan.problem(path, reason)
            paths = kept
        out[table] = sorted(paths)
    return out


def read_runs(located: list[tuple[Lake, list[str]]], scan: Scan) -> list[RunEntry]:
    """The named runs with their run.json read and checked (problems go to ``scan``)."""
    entries = [RunEntry(lake, name, None) for lake, names in located for name in names]
    for entry in entries:
        info, reason = read_run_info(entry.lake, entry.name)
        if reason:
            scan.problem(entry.lake.join(entry.name, RUN_FILE), reason)
        entry.info = info
    return entries


def scan_lake(located: list[tuple[Lake, list[str]]], *, check_files: bool = True) -> Scan:
    """List the named runs: their run.json, their readable part files, the cuts of unfinished ranks.

    ``check_files`` runs the cheap per-file checks on local lakes (size and the Parquet magic bytes at
    both ends, a few microseconds per file); remote files are checked when they are read.
    """
    scan = Scan()
    entries = read_runs(located, scan)
    listed: dict[int, tuple[set[str], dict[str, list[str]]]] = {}
    remote = [e for e in entries if not e.lake.local]
    if remote:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for entry, result in zip(remote, pool.map(lambda e: _list_remote(e, scan), remote), strict=True):
                listed[id(entry)] = result
    for entry in entries:
        files = list_run(entry, scan, check_files=check_files, listed=listed.get(id(entry)))
        for table, paths in files.items():
            scan.files[table].extend(paths)
        scan.runs.append(entry)
    add_cuts(scan)
    return scan


def add_cuts(scan: Scan) -> None:
    """Record the committed step of every unfinished rank of a run no live writer holds (crashed)."""
    for entry in scan.runs:
        if entry.state is not None and entry.state.status != "running":
            scan.cuts.extend((entry.name, rank, step) for rank, step in entry.state.hide_after.items())
