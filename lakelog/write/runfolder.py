"""Opening a run's folder for writing: the mode, the claim, run.json, and where a resume continues.

``open_run_folder`` runs once per ``Run``, before anything is logged:

1. the root must be a folder (or a new path) and the run folder path short enough for its files;
2. ``mode="error"`` refuses a run that exists, before anything is touched;
3. the rank's claim is taken (local lakes): a live second writer gets RunInUseError in every mode;
4. ``overwrite`` removes the old run (refused while another rank's writer is live); ``resume`` reads
   run.json and the rank's commit, removes the part files of flushes after the last commit (a crash
   left them; readers already hid them) and leftover temporary files, and continues after the
   committed step S: the run's ``resumed_from`` is S and its next flush sequence follows the commit's;
5. run.json (rank 0) and the rank's first commit are written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from lakelog.errors import InvalidArgumentError, LakeNotWritableError, RunExistsError, RunInUseError
from lakelog.lake import lifecycle
from lakelog.lake.files import TEMP_SUFFIX, write_bytes_atomic
from lakelog.lake.layout import MAX_PATH_BYTES, PART_SUFFIX, RUN_FILE, TABLES, Lake, part_seq
from lakelog.lake.schemas import PREDICTIONS
from lakelog.write.claim import Claim
from lakelog.write.env import environment

log = logging.getLogger("lakelog")
_PROCESS_START = time.monotonic()  # about when this process started (this module loads with lakelog.write)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def info_bytes(info: dict[str, Any]) -> bytes:
    return json.dumps(info, indent=2, default=json_default).encode()


@dataclass
class Opened:
    """What ``open_run_folder`` found and made."""

    info: dict[str, Any]
    run_file: str
    claim: Claim | None
    resumed_from: int | None = None  # the committed step a resume continues after
    seq: int = 1  # the flush sequence of the writer's first flush
    key_types: dict[str, str] = field(default_factory=dict)  # key column types fixed by earlier batches


@dataclass(frozen=True)
class RunRequest:
    """What ``Run.__init__`` asks of the folder (its arguments, checked)."""

    rank: int
    world_size: int
    mode: str
    config: dict[str, Any]
    seed: int | None
    tags: dict[str, Any]


def open_run_folder(lake: Lake, run_dir: str, name: str, request: RunRequest) -> Opened:
    """Open (create, resume or overwrite) the run folder; see the module docstring for the steps."""
    if lake.is_file(lake.base):
        raise LakeNotWritableError(
            f"root: {lake.root!r} is a file; expected a folder for the lake (or a new path)"
        )
    if lake.local and len(run_dir.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidArgumentError(
            f"root/name: the run folder path is {len(run_dir.encode())} bytes; its files need it under "
            f"{MAX_PATH_BYTES} bytes: use a shorter root or name"
        )
    run_file = lake.under(run_dir, RUN_FILE)
    rank, mode = request.rank, request.mode
    if mode == "error" and rank == 0 and lake.exists(run_file):
        raise _exists(name, lake)
    try:
        lake.makedirs(run_dir)
    except OSError as exc:
        raise LakeNotWritableError(f"root: cannot create run folder {run_dir!r} ({exc})") from exc
    claim = None
    if lake.local:
        try:
            claim = Claim.take(run_dir, name, rank)
        except RunInUseError:  # an OSError too (a FileExistsError): not a file system failure
            raise
        except OSError as exc:
            raise LakeNotWritableError(f"root: cannot write in run folder {run_dir!r} ({exc})") from exc
    try:
        return _open_claimed(lake, run_dir, name, run_file, claim, request)
    except BaseException:
        if claim is not None:
            claim.release()
        raise


def _exists(name: str, lake: Lake) -> RunExistsError:
    return RunExistsError(
        f"run {name!r} already exists in {lake.root}: pass mode='resume' to append to it, "
        "mode='overwrite' to replace it, or another name"
    )


def _open_claimed(
    lake: Lake, run_dir: str, name: str, run_file: str, claim: Claim | None, request: RunRequest
) -> Opened:
    rank, mode, config, seed = request.rank, request.mode, request.config, request.seed
    exists = lake.exists(run_file)
    previous: dict[str, Any] = {}
    if exists and rank == 0 and mode == "error":  # created by a writer that started with us and finished
        raise _exists(name, lake)
    if exists and rank == 0 and mode == "overwrite":
        _remove_run(lake, run_dir, rank)
        exists = False
    if exists and mode == "resume":
        try:
            previous = json.loads(lake.read_text(run_file))
        except (OSError, ValueError) as exc:
            raise RunExistsError(
                f"run {name!r}: cannot resume: {run_file} is not valid JSON ({exc})"
            ) from exc
        if not isinstance(previous, dict):
            raise RunExistsError(f"run {name!r}: cannot resume: {run_file} does not hold a JSON object")
    elif mode == "resume" and rank == 0:
        log.warning("lakelog: run %r does not exist in %s: mode='resume' starts it", name, lake.root)
    opened = Opened({}, run_file, claim)
    if lake.local:
        _continue_after_commit(run_dir, name, rank, previous, opened, fresh=not previous)
    env = environment(rank, request.world_size)
    if previous:
        info = previous
        info.setdefault("resumes", []).append(
            {"at": utc_now(), "after_step": opened.resumed_from, "rank": rank, "environment": env}
        )
        if config:
            info["config"] = config
        info["status"] = "running"
        info.pop("finished", None)
    else:
        info = {
            "name": name,
            "created": utc_now(),
            "status": "running",
            "config": config,
            "seed": seed,
            "tags": request.tags,
            "world_size": request.world_size,
            "environment": env,
            "summary": {},
        }
    if seed is not None:
        info["seed"] = seed
    if rank == 0:
        try:
            lake.write_bytes_atomic(run_file, info_bytes(info))
        except OSError as exc:
            raise LakeNotWritableError(f"root: cannot write {run_file!r} ({exc})") from exc
    opened.info = info
    return opened


PEERS_WITHIN_S = 120.0
"""Writers of other ranks that claimed the run less than this before this process started are taken
for peers of this job (DDP ranks start together), not for another job's live writers."""


def _remove_run(lake: Lake, run_dir: str, rank: int) -> None:
    """Everything of the old run but the claims; refused while another job's writer of a rank is live."""
    if not lake.local:
        lake.fs.delete_dir(run_dir)
        return
    state = lifecycle.run_state(lake, os.path.basename(run_dir), {})
    since = time.time() - (time.monotonic() - _PROCESS_START) - PEERS_WITHIN_S
    others = {r: c for r, c in state.writers.items() if r != rank and _claimed_at(c) < since}
    if others:
        r, holder = next(iter(others.items()))
        raise RunInUseError(
            f"run {os.path.basename(run_dir)!r}: cannot overwrite it while rank {r} is being written by "
            f"{lifecycle.describe_holder(holder)}"
        )
    for entry in os.scandir(run_dir):
        if entry.name == lifecycle.WRITERS_DIR:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _claimed_at(claim: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(claim.get("started"))).timestamp()
    except ValueError:
        return 0.0


def _continue_after_commit(
    run_dir: str, name: str, rank: int, previous: dict[str, Any], opened: Opened, *, fresh: bool
) -> None:
    """Cut the rank's files back to its last commit and write the commit the new writer starts from."""
    commit = None if fresh else lifecycle.read_commit(run_dir, rank)
    if commit is not None:
        removed = _remove_uncommitted(run_dir, rank, commit.seq)
        if removed:
            log.warning(
                "lakelog: run %r rank %d: removed %d part file(s) of flushes after the last commit (step %s); "
                "the resume continues after step %s",
                name,
                rank,
                removed,
                commit.step,
                commit.step,
            )
        opened.resumed_from, opened.seq = commit.step, commit.seq + 1
    elif not fresh:  # a run written before commits existed: keep every file, continue after its last step
        last = (previous.get("summary") or {}).get("last_step")
        opened.resumed_from = last if type(last) is int else None
        _remove_uncommitted(run_dir, rank, None)
    if not fresh:
        opened.key_types = _key_types(run_dir)
    path = lifecycle.commit_path(run_dir, rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    start = lifecycle.Commit(opened.resumed_from, opened.seq - 1, False)
    write_bytes_atomic(path, lifecycle.commit_bytes(start))


def _rank_folders(run_dir: str, rank: int) -> list[str]:
    folders = []
    for table in TABLES:
        base = os.path.join(run_dir, table)
        if not os.path.isdir(base):
            continue
        for epoch in os.listdir(base):
            folder = os.path.join(base, epoch, f"rank={rank}")
            if os.path.isdir(folder):
                folders.append(folder)
    return folders


def _remove_uncommitted(run_dir: str, rank: int, last_seq: int | None) -> int:
    """Remove temporary files, and part files of flushes after ``last_seq`` (None: none of them)."""
    removed = 0
    for folder in _rank_folders(run_dir, rank):
        for file in os.listdir(folder):
            path = os.path.join(folder, file)
            if file.endswith(TEMP_SUFFIX):
                os.unlink(path)
            elif last_seq is not None and file.endswith(PART_SUFFIX):
                seq = part_seq(file)
                if seq is not None and seq > last_seq:
                    os.unlink(path)
                    removed += 1
    return removed


def _key_types(run_dir: str) -> dict[str, str]:
    """The key columns' types in the predictions already written (any rank): fixed for the whole run."""
    base = os.path.join(run_dir, "predictions")
    for root, _, names in os.walk(base):
        for file in names:
            if not file.endswith(PART_SUFFIX):
                continue
            try:
                schema = pq.read_schema(os.path.join(root, file))
            except Exception:  # an unreadable file says nothing about the types: try the next one
                continue
            kinds = {}
            for fld in schema:
                if fld.name in PREDICTIONS.names or fld.name in ("epoch", "rank"):
                    continue
                kinds[fld.name] = "str" if str(fld.type) in ("string", "large_string") else "int"
            return kinds
    return {}
