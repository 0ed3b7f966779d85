"""Captures handed to the writer thread in batches: whichever of their builders runs first builds the
rows of every capture queued before the next epoch (``rows.build_many``); the others return nothing.

Why: on a small model a capture is a few dozen rows per table, and converting them to Arrow costs
more per call than per row; the writer is woken once per ``WAKE_BYTES`` of queued captures, so
several are queued by the time it runs. The writer runs builders in the order they were submitted,
so the first one of a batch finds its capture at the head of the queue.
"""

from __future__ import annotations

import threading
from collections import deque

import pyarrow as pa

from lakelog.write.telemetry import groups as groups_mod
from lakelog.write.telemetry.rows import Capture, RowsCache, build_many

MAX_BATCH = 32
"""Captures built together at most (a failure loses at most these)."""

_Item = tuple[groups_mod.Layout, Capture, RowsCache, int]


class Batch:
    """The captures of one watcher submitted and not yet built (training thread adds, writer takes)."""

    def __init__(self) -> None:
        self._queue: deque[_Item] = deque()
        self._lock = threading.Lock()

    def builder(self, layout: groups_mod.Layout, capture: Capture, cache: RowsCache, epoch: int) -> Builder:
        with self._lock:
            self._queue.append((layout, capture, cache, epoch))
        return Builder(self, capture)

    def take(self, capture: Capture) -> list[tuple[groups_mod.Layout, Capture, RowsCache]]:
        """The captures to build with ``capture``'s builder: none when an earlier builder built it;
        else it, any left before it (builders the writer did not run), and the ones after it of the
        same epoch."""
        with self._lock:
            queue = self._queue
            if not any(item[1] is capture for item in queue):
                return []
            out, epoch = [], None
            while queue:
                layout, queued, cache, epoch = queue.popleft()
                out.append((layout, queued, cache))
                if queued is capture:
                    break
            while queue and queue[0][3] == epoch and len(out) < MAX_BATCH:
                out.append(queue.popleft()[:3])
            return out


class Builder:
    """``run.submit``'s row builder for one capture: ``steps`` (the smallest and largest step of the
    captures it built) and ``nbytes`` (set by the watcher) are read by the writer."""

    def __init__(self, batch: Batch, capture: Capture) -> None:
        self.batch, self.capture = batch, capture
        self.steps: tuple[int, int] = (capture.step, capture.step)
        self.nbytes = 0

    def __call__(self) -> dict[str, pa.Table | None]:
        items = self.batch.take(self.capture)
        self.capture = None  # type: ignore[assignment]  # built (or not): nothing here holds it any more
        if len(items) > 1:
            stamps = [c.step for _, c, _ in items]
            self.steps = (min(stamps), max(stamps))
        return build_many(items) if items else {}

    def __repr__(self) -> str:  # what a failing builder is called in the writer's log
        first, last = self.steps
        return f"telemetry capture at step {first}" + (f"-{last}" if last != first else "")
