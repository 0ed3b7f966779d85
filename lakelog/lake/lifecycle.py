"""A run's lifecycle on disk: who writes it (claims), how far it is committed (commits), its state.

Two small JSON files per rank, next to the tables:

- ``<run>/_writers/rank=<r>.json``, the **claim**: the live writer of that rank (``pid``, ``host``,
  ``started``, ``heartbeat`` — refreshed by the writer thread at every flush — and a random
  ``token``). It is created with ``O_EXCL``, so two writers of one rank never both hold it, and
  removed by ``finish()``.
- ``<run>/_commits/rank=<r>.json``, the **commit**: ``{"step": S, "seq": N, "final": bool}`` written
  atomically after each flush. Every table of that rank holds every row with ``step <= S``; part files
  carry the flush sequence that wrote them (``part-<seq>-…``), so the parts of flushes after ``N`` are
  the ones a crash left uncommitted. ``final`` is set by ``finish()``: nothing of that rank is hidden.

``run_state`` turns these and run.json into what readers report: ``running`` (a live claim),
``crashed`` (run.json says running but no live writer holds the run), or the status run.json records;
and per rank the last committed step, beyond which readers hide rows of an unfinished rank.

A claim is live when its process runs: on the same host its pid exists (with the same process start
time where ``/proc`` tells it); on another host its heartbeat is younger than ``STALE_AFTER_S``.
Object-store lakes have neither file (no exclusive create there): their runs keep run.json's status.
Only this module knows the formats; it imports neither torch nor DuckDB.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from lakelog.lake.layout import RUN_FILE, Lake

WRITERS_DIR = "_writers"
COMMITS_DIR = "_commits"
STALE_AFTER_S = 300.0
"""A claim from another host is taken over only when its heartbeat is older than this (seconds)."""


def claim_path(run_dir: str, rank: int) -> str:
    return os.path.join(run_dir, WRITERS_DIR, f"rank={int(rank)}.json")


def commit_path(run_dir: str, rank: int) -> str:
    return os.path.join(run_dir, COMMITS_DIR, f"rank={int(rank)}.json")


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` as the kernel records it (Linux), so a reused pid is told apart."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def hostname() -> str:
    return socket.gethostname()


def read_json(path: str) -> dict[str, Any] | None:
    """A small JSON object file, or None when it is missing, unreadable or not an object."""
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def holder_alive(
    claim: dict[str, Any], *, now: float | None = None, stale_after_s: float = STALE_AFTER_S
) -> bool:
    """Whether the writer that holds ``claim`` may still be running (see the module docstring)."""
    pid = claim.get("pid")
    if claim.get("host") == hostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        recorded, current = claim.get("pid_start"), process_start(pid)
        return recorded is None or current is None or recorded == current
    beat = claim.get("heartbeat")
    if not isinstance(beat, int | float):
        return False
    return ((time.time() if now is None else now) - beat) < stale_after_s


def describe_holder(claim: dict[str, Any]) -> str:
    """``pid 123 on host h (started …, heartbeat 4 s ago)`` for error messages."""
    beat = claim.get("heartbeat")
    age = f", heartbeat {time.time() - beat:.0f} s ago" if isinstance(beat, int | float) else ""
    return f"pid {claim.get('pid')} on host {claim.get('host')!r} (started {claim.get('started')}{age})"


@dataclass(frozen=True)
class Commit:
    """How far one rank is committed: every table holds every row with ``step <= step``."""

    step: int | None  # None: nothing committed yet
    seq: int  # the flush sequence of the last committed flush
    final: bool = False  # written by finish(): the rank is complete, nothing to hide


def read_commit(run_dir: str, rank: int) -> Commit | None:
    """The rank's commit, or None when the run predates commits (or the file is unreadable)."""
    data = read_json(commit_path(run_dir, rank))
    if data is None:
        return None
    step, seq = data.get("step"), data.get("seq")
    if not (step is None or type(step) is int) or type(seq) is not int:
        return None
    return Commit(step, seq, bool(data.get("final")))


def commit_bytes(commit: Commit) -> bytes:
    return json.dumps({"step": commit.step, "seq": commit.seq, "final": commit.final}).encode()


def _ranks(run_dir: str, folder: str) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        names = os.listdir(os.path.join(run_dir, folder))
    except OSError:
        return out
    for name in names:
        if name.startswith("rank=") and name.endswith(".json") and name[5:-5].isdigit():
            out[int(name[5:-5])] = os.path.join(run_dir, folder, name)
    return out


@dataclass(frozen=True)
class RunState:
    """What readers report for one run (see ``run_state``)."""

    status: str  # running, crashed, or run.json's status (finished, failed, exited…)
    committed: dict[int, int | None] = field(default_factory=dict)  # rank -> last committed step
    hide_after: dict[int, int] = field(default_factory=dict)  # rank -> rows with a larger step are hidden
    writers: dict[int, dict[str, Any]] = field(default_factory=dict)  # rank -> live claim

    @property
    def last_committed_step(self) -> int | None:
        """The step every rank has committed (the smallest), or None when unknown."""
        steps = [s for s in self.committed.values() if s is not None]
        return min(steps) if steps and len(steps) == len(self.committed) else None


def run_state(
    lake: Lake, run_name: str, info: dict[str, Any] | None = None, *, stale_after_s: float = STALE_AFTER_S
) -> RunState:
    """The state of run ``run_name`` in ``lake``: status, last committed step per rank, live writers.

    ``info`` is the run's run.json when the caller has read it already. A run whose run.json says
    ``running`` while no live writer claims any rank is ``crashed``; rows beyond a rank's committed
    step belong to a flush that never finished (readers hide them: ``hide_after``). Runs written
    before claims existed (no ``_writers`` folder) and object-store runs keep run.json's status.
    """
    stored = (info or {}).get("status") if info is not None else None
    if info is None and lake.local:
        stored = (read_json(os.path.join(lake.join(run_name), RUN_FILE)) or {}).get("status")
    if not lake.local:
        return RunState(str(stored or "unknown"))
    run_dir = lake.join(run_name)
    now = time.time()
    live: dict[int, dict[str, Any]] = {}
    for rank, path in _ranks(run_dir, WRITERS_DIR).items():
        claim = read_json(path)
        if claim is not None and holder_alive(claim, now=now, stale_after_s=stale_after_s):
            live[rank] = claim
    committed: dict[int, int | None] = {}
    hide_after: dict[int, int] = {}
    for rank in _ranks(run_dir, COMMITS_DIR):
        commit = read_commit(run_dir, rank)
        if commit is None:
            continue
        committed[rank] = commit.step
        if not commit.final:
            hide_after[rank] = -1 if commit.step is None else commit.step
    if live:
        status = "running"
    elif stored in (None, "running") and os.path.isdir(os.path.join(run_dir, WRITERS_DIR)):
        status = "crashed"
    else:
        status = str(stored or "unknown")
    return RunState(status, committed, hide_after, live)
