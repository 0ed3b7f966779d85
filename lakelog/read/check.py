"""``lakelog check``: every file of a lake that readers leave out, and why (read side: no torch).

Readers skip what they cannot read, with a warning (``read.scan``); this lists all of it at once:
run.json files that cannot be read, part files that cannot be Parquet (empty, truncated, random
bytes, unreadable), and, with ``deep`` (the default), part files whose footer or data pages fail to
decode. It also names compactions a kill interrupted (finished by the next ``lakelog compact``)
and temporary files writers left behind; those are notes, not damage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lakelog.lake import compact_protocol as lake_compact
from lakelog.lake.layout import TABLES, TEMP_SUFFIX
from lakelog.lake.progress import progress
from lakelog.read.scan import Problem, Scan, list_run, locate, read_runs


@dataclass
class CheckReport:
    """The outcome of ``check``: runs and files looked at, what is damaged, and notes."""

    root: str
    runs: int = 0
    files: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"{p.path}: {p.reason}" for p in self.problems]
        lines += [f"note: {p.path}: {p.reason}" for p in self.notes]
        verdict = "no damaged files" if self.ok else f"{len(self.problems)} damaged files left out by readers"
        lines.append(f"checked {self.runs} runs, {self.files} part files in {self.root}: {verdict}")
        return "\n".join(lines)


def _decode(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        return f"cannot be decoded ({str(exc).splitlines()[0]})"
    return None


def _temp_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    except OSError:
        return []
    return [i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(TEMP_SUFFIX)]


def check(
    root: Any = "runs",
    *,
    deep: bool = True,
    filesystem: pafs.FileSystem | None = None,
    show_progress: bool | None = None,
) -> CheckReport:
    """Look at every run.json and part file under ``root`` (a lake, a run folder, or a list of them).

    ``deep`` decodes every part file (reads all of it); without it only the cheap checks readers
    make run. Raises ``RunNotFoundError``/``InvalidArgumentError`` for a missing root or a file.
    """
    located = locate(root, filesystem)
    scan = Scan(quiet=True)
    entries = read_runs(located, scan)
    report = CheckReport(root=", ".join(sorted({lake.root for lake, _ in located})) or str(root))
    listed: list[tuple[pafs.FileSystem, str]] = []
    for entry in entries:
        files = list_run(entry, scan, check_files=True)
        listed.extend((entry.lake.fs, p) for table in TABLES for p in files.get(table, ()))
        for path, manifest in lake_compact.pending(entry.lake, entry.folder):
            report.notes.append(
                Problem(
                    path, f"an interrupted compaction of {manifest['partition']}: lakelog compact finishes it"
                )
            )
        report.notes.extend(
            Problem(p, "a temporary file left by a killed writer")
            for p in _temp_files(entry.lake.fs, entry.folder)
        )
    report.runs = len(entries)
    report.files = len(listed)
    if deep:
        for fs, path in progress(listed, desc="checking", unit="file"):
            reason = _decode(fs, path)
            if reason is not None:
                scan.problem(path, reason)
    report.problems = list(scan.problems)
    return report


__all__ = ["CheckReport", "check"]
