"""Compaction: many small part files of a partition merged into one large file, safe for readers.

Every flush writes one part file per table and partition, so a long run makes thousands of small
files; readers slow down with file count long before data size. ``compact`` merges the parts of each
finished partition (``<run>/<table>/epoch=<e>/rank=<r>``) into one file, split only past
``max_file_bytes`` (1 GiB by default, so a partition up to that size becomes a single file).

Which partitions: every partition of a finished or crashed run, and the older epochs of a live run
(a live writer appends to its latest epoch). Parts a crash left uncommitted (``lake.lifecycle``:
a flush sequence after the rank's committed one) are never merged, so a resume still finds them.

The merge is safe for concurrent readers and for ``kill -9`` at any point: see
``lake.compact_protocol`` (the staging, manifest and recovery steps) for how.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lakelog.errors import InvalidArgumentError, RunNotFoundError
from lakelog.lake import compact_protocol as protocol
from lakelog.lake import files as lake_files
from lakelog.lake.checks import positive_int
from lakelog.lake.layout import PART_SUFFIX, RUN_FILE, TABLES, Lake, join_path, part_seq
from lakelog.lake.lifecycle import (
    read_commit,
    run_state,
)
from lakelog.lake.progress import bar, note

log = logging.getLogger("lakelog")

MAX_FILE_BYTES = 1 << 30
"""A merged file holds at most about this many bytes of Arrow data (1 GiB); larger partitions split."""
ROW_GROUP_ROWS = 1 << 20
"""Rows per Parquet row group of a merged file: large enough for DuckDB to scan it in parallel."""

_PARTITION = re.compile(r"^(epoch|rank)=(-?\d+)$")


def _is_partition(name: str, key: str) -> bool:
    match = _PARTITION.match(name)
    return bool(match and match.group(1) == key)


@dataclass
class CompactResult:
    """What one ``compact`` call did: partitions merged, part files before and after, rows moved."""

    runs: list[str] = field(default_factory=list)
    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0
    bytes_written: int = 0
    recovered: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        ratio = self.files_before / self.files_after if self.files_after else 0.0
        text = (
            f"compacted {self.partitions} partitions of {len(self.runs)} runs: {self.files_before} files -> "
            f"{self.files_after} ({ratio:.0f}x fewer), {self.rows} rows, {self.bytes_written / 1e6:.1f} MB "
            f"written in {self.seconds:.1f} s"
        )
        if self.recovered:
            text += f"; finished {self.recovered} interrupted compactions"
        if self.skipped:
            text += f"; left {len(self.skipped)} files unmerged (unreadable, see the warnings)"
        return text


def _partitions(lake: Lake, run_dir: str) -> list[tuple[str, int, int, list[pafs.FileInfo]]]:
    """(table, epoch, rank, part infos) of every partition folder of a run."""
    out = []
    for table in TABLES:
        base = join_path(lake.local, run_dir, table)
        try:
            infos = lake.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError:
            continue
        groups: dict[tuple[int, int], list[pafs.FileInfo]] = {}
        for info in infos:
            rel = info.path[len(base) :].lstrip("/").split("/")
            if info.type != pafs.FileType.File or len(rel) != 3:
                continue
            if not (_is_partition(rel[0], "epoch") and _is_partition(rel[1], "rank")):
                continue
            if rel[2].endswith(PART_SUFFIX) and not rel[2].startswith("."):
                groups.setdefault((int(rel[0][6:]), int(rel[1][5:])), []).append(info)
        out.extend(
            (table, e, r, sorted(p, key=lambda i: i.base_name)) for (e, r), p in sorted(groups.items())
        )
    return out


def _eligible(lake: Lake, run: str, info: dict[str, Any]) -> tuple[bool, dict[int, int | None]]:
    """Whether the run is live, and per rank the last committed flush sequence (None: all committed)."""
    state = run_state(lake, run, info)
    seqs: dict[int, int | None] = {}
    for rank in state.hide_after:
        commit = read_commit(lake.join(run), rank)
        seqs[rank] = None if commit is None or commit.step is None else commit.seq
    return state.status == "running", seqs


def _read_parts(
    lake: Lake, parts: Sequence[pafs.FileInfo], result: CompactResult
) -> tuple[list[pa.Table], list[str]]:
    tables, names = [], []
    for info in parts:
        try:
            tables.append(pq.read_table(info.path, filesystem=lake.fs))
            names.append(info.base_name)
        except (OSError, pa.ArrowException) as exc:
            result.skipped.append(info.path)
            log.warning("lakelog: compact leaves %s as it is: unreadable (%s)", info.path, exc)
    return tables, names


def _write_parquet(lake: Lake, path: str, data: pa.Table) -> int:
    def write(target: Any) -> None:
        pq.write_table(data, target, compression="zstd", row_group_size=ROW_GROUP_ROWS)

    if lake.local:
        lake_files.write_atomic(path, lambda tmp: write(str(tmp)))
        return os.path.getsize(path)
    with lake.fs.open_output_stream(path) as f:
        write(f)
    return lake.fs.get_file_info(path).size or 0


def _merge_partition(
    lake: Lake,
    run_dir: str,
    table: str,
    epoch: int,
    rank: int,
    parts: list[pafs.FileInfo],
    result: CompactResult,
    max_bytes: int,
) -> int:
    tables, names = _read_parts(lake, parts, result)
    if len(names) < 2:
        return len(parts)
    try:
        data = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    except pa.ArrowException as exc:  # parts whose column types disagree stay as they are
        log.warning(
            "lakelog: compact leaves %s/%s/epoch=%s/rank=%s as it is: %s", run_dir, table, epoch, rank, exc
        )
        return len(parts)
    seq = max((part_seq(n) or 0) for n in names)
    cid = uuid.uuid4().hex[:12]
    partition = f"{table}/epoch={epoch}/rank={rank}"
    pieces = max(1, -(-data.nbytes // max_bytes))
    step = -(-data.num_rows // pieces) if data.num_rows else 1
    merged = [f"part-{seq:06d}-compact-{cid}-{i:03d}{PART_SUFFIX}" for i in range(pieces)]
    staging = join_path(
        lake.local, run_dir, protocol.STAGING_DIR, cid, table, f"epoch={epoch}", f"rank={rank}"
    )
    lake.makedirs(staging)
    for i, name in enumerate(merged):
        result.bytes_written += _write_parquet(
            lake, join_path(lake.local, staging, name), data.slice(i * step, step)
        )
    manifest = {"id": cid, "table": table, "partition": partition, "merged": merged, "replaces": names}
    if lake.local:  # the staged folder becomes the whole partition, swapped in at once where possible
        manifest["mode"] = "exchange"
        protocol.carry(join_path(True, run_dir, partition), staging, set(names))
    manifest_path = join_path(lake.local, run_dir, protocol.STAGING_DIR, f"{cid}.json")
    lake.write_bytes_atomic(manifest_path, json.dumps(manifest).encode())  # the commit point
    protocol.finish(lake, run_dir, manifest_path, manifest)
    result.rows += data.num_rows
    return len(parts) - len(names) + len(merged)


def _plan(lake: Lake, name: str, run_dir: str, result: CompactResult) -> list[tuple[Any, ...]]:
    """The partitions of one run to merge now, with the parts to merge in each."""
    try:
        info = json.loads(lake.read_text(lake.join(name, RUN_FILE)))
    except (OSError, ValueError, RecursionError):
        info = {}
    live, seqs = _eligible(lake, name, info if isinstance(info, dict) else {})
    partitions = _partitions(lake, run_dir)
    last_epoch: dict[tuple[str, int], int] = {}
    for table, epoch, rank, _ in partitions:
        last_epoch[(table, rank)] = max(epoch, last_epoch.get((table, rank), epoch))
    work = []
    for table, epoch, rank, parts in partitions:
        result.files_before += len(parts)
        if live and epoch >= last_epoch[(table, rank)]:  # a live writer may still append here
            result.files_after += len(parts)
            continue
        if rank in seqs:  # an unfinished rank: its uncommitted parts stay for a resume to find
            limit = -1 if seqs[rank] is None else seqs[rank]
            kept = [p for p in parts if (part_seq(p.base_name) or 0) <= limit]
            result.files_after += len(parts) - len(kept)
            parts = kept
        if len(parts) < 2:
            result.files_after += len(parts)
            continue
        work.append((run_dir, table, epoch, rank, parts))
    return work


def compact(
    root: str | os.PathLike[str],
    runs: Sequence[str] | str | None = None,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    filesystem: pafs.FileSystem | None = None,
    show_progress: bool | None = None,
) -> CompactResult:
    """Merge the small part files of every finished partition of ``runs`` (all runs when None).

    Row count, content and every query's answer are the same before and after; readers running
    meanwhile, and after a kill at any point, see each row exactly once (see the module docstring).
    Interrupted compactions are finished first. ``max_file_bytes`` caps a merged file's Arrow size.
    Returns a ``CompactResult``; raises ``RunNotFoundError`` for a missing root or run.
    """
    started = time.perf_counter()
    max_file_bytes = positive_int(max_file_bytes, "max_file_bytes")
    lake = Lake.open(root, filesystem=filesystem)
    kind = lake.fs.get_file_info(lake.base).type
    if kind == pafs.FileType.NotFound:
        raise RunNotFoundError(f"root: {lake.root!r} does not exist")
    if kind != pafs.FileType.Directory:
        raise InvalidArgumentError(f"root: {lake.root!r} is a file, not a lake (a folder of runs)")
    known = lake.run_names()
    if runs is None:
        names = known
    else:
        names = [runs] if isinstance(runs, str) else list(runs)
        missing = [n for n in names if n not in known]
        if missing:
            raise RunNotFoundError(
                f"runs: {', '.join(map(repr, missing))} not found in {lake.root} (runs there: {', '.join(known[:20]) or 'none'})"
            )
    result = CompactResult(runs=list(names))
    with contextlib.ExitStack() as locks:
        work = []
        for name in names:
            run_dir = lake.join(name)
            locks.enter_context(protocol.claim(lake, run_dir))
            result.recovered += protocol.recover(lake, run_dir)
            work.extend(_plan(lake, name, run_dir, result))
        with bar(len(work), desc="compacting", unit="partition", show=show_progress) as line:
            for run_dir, table, epoch, rank, parts in work:
                note(line, f"{os.path.basename(run_dir)}/{table}/epoch={epoch}/rank={rank}")
                result.files_after += _merge_partition(
                    lake, run_dir, table, epoch, rank, parts, result, max_file_bytes
                )
                result.partitions += 1
                line.update(1)
    result.seconds = time.perf_counter() - started
    return result
