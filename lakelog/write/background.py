"""The one design of lakelog's background writers: a bounded FIFO, one daemon thread, blocking flush.

The Parquet writer (every table, scalars included) and the dump writer both use ``Worker``:

- the training thread ``put``s items; a put is a lock, an append and, when the thread sleeps and the
  item asks for it, one notify. ``max_items`` bounds what is queued or being handled: a loop that
  produces faster than the disk takes waits on a condition (never a sleep loop) instead of letting
  memory run away;
- one daemon thread handles the items in order; between items it sleeps on the same condition until
  there is work or the next ``tick`` is due (the periodic flush), so it never polls;
- ``flush()`` queues a marker and blocks until the thread has handled everything before it and run
  ``on_flush``; ``close()`` does the same with ``on_close`` and stops the thread;
- an exception escaping ``handle`` is logged, the first one is kept (``error``) for the owner to
  report, and the thread goes on with the next item.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lakelog.errors import RunClosedError

log = logging.getLogger("lakelog")


class _Marker:
    """A flush or stop request in the queue: ``done`` is set once everything before it is handled."""

    __slots__ = ("done", "stop")

    def __init__(self, stop: bool = False) -> None:
        self.done = threading.Event()
        self.stop = stop


def _nothing() -> None:
    return None


_BATCH = 256
"""Items taken from the queue under one lock."""
_YIELD_S = 0.0002
"""The writer thread hands the GIL back after this much work (cheap items are handled in runs)."""


class Worker:
    """A daemon thread handling queued items in order (see the module docstring)."""

    def __init__(
        self,
        name: str,
        handle: Callable[[Any], None],
        *,
        max_items: int = 4096,
        wake_at: int = 1,
        on_flush: Callable[[], None] = _nothing,
        on_close: Callable[[], None] | None = None,
        tick: Callable[[], None] | None = None,
        tick_every_s: float | None = None,
        start: bool = True,
    ) -> None:
        self.name = name
        self.error: BaseException | None = None
        self._handle = handle
        self._on_flush = on_flush
        self._on_close = on_close or on_flush
        self._tick = tick
        self._tick_every_s = tick_every_s
        self._max_items = max(1, max_items)
        self._wake_at = max(1, wake_at)
        self._items: collections.deque[Any] = collections.deque()
        self._unfinished = 0  # queued or being handled: what max_items bounds
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the thread waits here for items or its next tick
        self._space = threading.Condition(self._lock)  # producers wait here while the queue is full
        self._idle = False
        self._markers = 0  # flushes and closes queued and not yet handled
        self._woke_with = 0  # items queued when the thread last woke from an empty queue
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if start:
            with self._lock:
                self._start()

    # -- any thread --------------------------------------------------------------------------
    def put(self, item: Any, *, wake: bool = True) -> None:
        """Queue ``item``; waits while ``max_items`` are queued. ``wake=False`` lets cheap items wait for
        ``wake_at`` others (or the next tick), so a loop of tiny calls does not wake the thread each time.
        Raises RunClosedError after ``close()``."""
        with self._lock:
            if self._closed:
                raise RunClosedError("this run is finished: start a new one with lakelog.init(...)")
            if self._thread is None:
                self._start()
            self._items.append(item)
            self._unfinished += 1
            if self._idle and (wake or len(self._items) >= self._wake_at):
                self._work.notify()
            while self._unfinished > self._max_items and self._thread.is_alive():
                self._space.wait()

    def wake(self) -> None:
        """Have the thread take what is queued now, without waiting for ``wake_at`` items or a tick."""
        with self._lock:
            if self._idle:
                self._work.notify()

    def flush(self) -> None:
        """Block until every item queued before this call is handled and ``on_flush`` has run."""
        marker = _Marker()
        with self._lock:
            self._markers += 1
        try:
            self.put(marker)
        except BaseException:
            with self._lock:
                self._markers -= 1
            raise
        marker.done.wait()

    def close(self) -> None:
        """Handle what is queued, run ``on_close``, stop the thread; later puts raise. Idempotent."""
        # The race this lock closes: finish() on the training thread and the exit hook (or two threads
        # finishing one run) would both queue a stop marker and join. Taking ``_lock`` to set _closed
        # and queue the marker means a concurrent put either lands before the marker (and is written)
        # or is refused; no item is ever queued behind the stop marker where nobody would handle it.
        with self._close_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                thread = self._thread
                if thread is not None:
                    marker = _Marker(stop=True)
                    self._items.append(marker)
                    self._markers += 1
                    self._unfinished += 1
                    if self._idle:
                        self._work.notify()
            if thread is None:
                self._run(self._on_close)
                return
            thread.join()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def behind(self) -> bool:
        """True when someone waits for the thread: a ``flush`` or ``close`` waits for the items queued
        before it, or twice as many items wait as when the thread woke (its producer outruns it). A
        thread that keeps up works through what woke it and rests."""
        return self._markers > 0 or self._unfinished > 2 * self._woke_with

    @property
    def pending(self) -> int:
        """Items queued or being handled."""
        return self._unfinished

    # -- the worker thread -------------------------------------------------------------------
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # keep the thread alive; the owner reports the first error
            if self.error is None:
                self.error = exc
            log.error("lakelog: %s: %s: %s", self.name, type(exc).__name__, exc)

    def _loop(self) -> None:
        every = self._tick_every_s
        next_tick = time.monotonic() + every if every else None
        with self._lock:
            self._woke_with = self._unfinished  # what is queued when the thread starts woke it
        while True:
            with self._lock:
                while not self._items:
                    timeout = None if next_tick is None else next_tick - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        break
                    self._idle = True
                    self._work.wait(timeout)
                    self._idle = False
                    self._woke_with = self._unfinished
                batch = [self._items.popleft() for _ in range(min(len(self._items), _BATCH))]
            if not batch:  # the tick is due and nothing is queued
                self._run(self._tick or _nothing)
                next_tick = time.monotonic() + every if every else None
                continue
            yielded, reported = time.perf_counter(), 0
            for done, item in enumerate(batch, 1):
                if isinstance(item, _Marker):
                    self._run(self._on_close if item.stop else self._on_flush)
                    with self._lock:
                        self._markers -= 1
                    self._finished(done - reported)
                    reported = done
                    item.done.set()
                    if item.stop:
                        return
                    if every:
                        next_tick = time.monotonic() + every
                    continue
                self._run(self._handle, item)
                if time.perf_counter() - yielded > _YIELD_S:
                    time.sleep(0)  # hand the GIL back: the training thread never waits a switch interval
                    yielded = time.perf_counter()
            self._finished(len(batch) - reported)
            if next_tick is not None and time.monotonic() >= next_tick:
                self._run(self._tick or _nothing)
                next_tick = time.monotonic() + every

    def _finished(self, n: int) -> None:
        """``n`` items are handled: producers waiting for room may go on."""
        if n:
            with self._lock:
                self._unfinished -= n
                self._space.notify_all()
