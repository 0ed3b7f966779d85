"""The live-writer claim of one run and rank (the format and the liveness rules are in ``lake.lifecycle``).

``Claim.take`` creates ``<run>/_writers/rank=<r>.json`` with ``O_EXCL`` while holding an advisory
lock on ``_writers/.lock``, so of two writers starting together exactly one gets it, and taking
over a stale claim (its process is gone) cannot race another newcomer. A claim held by a live writer
raises RunInUseError naming it: a second writer is refused in every mode. The writer thread refreshes
the heartbeat at every flush; ``finish()`` releases the claim.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from lakelog.errors import RunInUseError
from lakelog.lake import files, lifecycle

try:
    import fcntl
except ImportError:  # Windows: O_EXCL alone guards the first create
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("lakelog")


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    """Hold ``<folder>/.lock`` exclusively (released by the kernel if this process dies)."""
    if fcntl is None:
        yield
        return
    fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Claim:
    """This process's claim on one run and rank."""

    def __init__(self, path: str, body: dict[str, Any]) -> None:
        self.path = path
        self.body = body
        self._lost = False

    @classmethod
    def take(
        cls, run_dir: str, run_name: str, rank: int, *, stale_after_s: float = lifecycle.STALE_AFTER_S
    ) -> Claim:
        """Claim ``run_name`` rank ``rank``; raises RunInUseError when a live writer holds it."""
        path = lifecycle.claim_path(run_dir, rank)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        now = time.time()
        body = {
            "pid": os.getpid(),
            "host": lifecycle.hostname(),
            "pid_start": lifecycle.process_start(os.getpid()),
            "started": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "heartbeat": now,
            "rank": rank,
            "token": uuid.uuid4().hex,
        }
        data = json.dumps(body).encode()
        with _locked(folder):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = lifecycle.read_json(path)
                if holder is not None and lifecycle.holder_alive(
                    holder, now=now, stale_after_s=stale_after_s
                ):
                    raise RunInUseError(_in_use(run_name, rank, holder, path, stale_after_s)) from None
                log.warning(
                    "lakelog: run %r rank %d: taking over the claim of a writer that is no longer running (%s)",
                    run_name,
                    rank,
                    lifecycle.describe_holder(holder or {}),
                )
                files.write_bytes_atomic(path, data)
            else:
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return cls(path, body)

    def _ours(self) -> bool:
        holder = lifecycle.read_json(self.path)
        return holder is not None and holder.get("token") == self.body["token"]

    def refresh(self) -> None:
        """Write a new heartbeat (writer thread, at every flush); a lost claim is reported once."""
        if self._lost:
            return
        holder = lifecycle.read_json(self.path)
        if holder is not None and holder.get("token") != self.body["token"]:
            self._lost = True
            log.warning(
                "lakelog: the claim %s is no longer this process's (another writer took it over after "
                "%.0f s without a heartbeat); rows are still written, but two writers now share the rank",
                self.path,
                lifecycle.STALE_AFTER_S,
            )
            return
        self.body["heartbeat"] = time.time()
        with contextlib.suppress(OSError):  # a full disk must not stop training; the next flush retries
            os.makedirs(os.path.dirname(self.path), exist_ok=True)  # the run folder may have been removed
            files.write_bytes_atomic(self.path, json.dumps(self.body).encode(), durable=False)

    def release(self) -> None:
        """Remove the claim if it is still this process's."""
        with contextlib.suppress(OSError):
            if self._ours():
                os.unlink(self.path)


def _in_use(run_name: str, rank: int, holder: dict[str, Any], path: str, stale_after_s: float) -> str:
    message = (
        f"run {run_name!r} rank {rank} is being written by {lifecycle.describe_holder(holder)}; "
        "two writers of one run and rank would mix their rows. Use another name (or rank), or wait for it to finish"
    )
    if holder.get("host") != lifecycle.hostname():
        beat = holder.get("heartbeat")
        until = (
            datetime.fromtimestamp(beat + stale_after_s, UTC).strftime("%H:%M:%S UTC")
            if isinstance(beat, int | float)
            else "now"
        )
        message += (
            f". It runs on another host, so lakelog cannot see whether it is alive: its claim expires "
            f"{stale_after_s:.0f} s after its last heartbeat (at {until}); if you know it is dead, delete {path}"
        )
    return message
