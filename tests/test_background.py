"""The one background-writer design (lakelog.write.background.Worker) with real threads."""

from __future__ import annotations

import threading
import time

import pytest

from lakelog.errors import RunClosedError
from lakelog.write.background import Worker


def test_flush_blocks_until_everything_queued_before_it_is_handled():
    done: list[int] = []
    flushed: list[int] = []
    worker = Worker(
        "t", lambda i: (time.sleep(0.001), done.append(i)), on_flush=lambda: flushed.append(len(done))
    )
    for i in range(50):
        worker.put(i, wake=False)  # none of these wakes the thread: flush must
    worker.flush()
    assert done == list(range(50)) and flushed == [50]
    worker.close()


def test_the_queue_is_bounded_and_a_full_queue_waits_instead_of_growing():
    release = threading.Event()
    seen: list[int] = []
    worker = Worker("t", lambda i: (release.wait(), seen.append(i)), max_items=3)
    producer = threading.Thread(target=lambda: [worker.put(i) for i in range(10)])
    producer.start()
    time.sleep(0.2)
    assert producer.is_alive() and worker.pending <= 4  # waiting on the condition, not queueing more
    release.set()
    producer.join(10)
    worker.close()
    assert seen == list(range(10))


def test_first_error_is_kept_and_the_thread_goes_on():
    seen: list[int] = []

    def handle(i: int) -> None:
        if i in (2, 5):
            raise ValueError(f"bad item {i}")
        seen.append(i)

    worker = Worker("t", handle)
    for i in range(8):
        worker.put(i)
    worker.flush()
    assert seen == [0, 1, 3, 4, 6, 7] and str(worker.error) == "bad item 2"
    worker.close()


def test_close_from_two_threads_runs_on_close_once_and_later_puts_are_refused():
    closes: list[int] = []
    worker = Worker("t", lambda i: None, on_close=lambda: closes.append(1))
    for i in range(100):
        worker.put(i, wake=False)
    threads = [threading.Thread(target=worker.close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert closes == [1] and worker.pending == 0
    with pytest.raises(RunClosedError):
        worker.put(1)


def test_ticks_run_on_schedule_without_items():
    ticks: list[float] = []
    worker = Worker("t", lambda i: None, tick=lambda: ticks.append(time.monotonic()), tick_every_s=0.02)
    time.sleep(0.3)
    worker.close()
    assert len(ticks) >= 3


def test_many_flushes_in_one_run_of_items_all_return():
    done: list[int] = []
    worker = Worker("t", done.append)
    threads = [threading.Thread(target=worker.flush) for _ in range(5)]
    for i in range(300):
        worker.put(i, wake=False)
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads) and worker.pending == 0
    worker.close()
    assert done == list(range(300))


def test_the_thread_is_behind_while_a_flush_waits_or_its_queue_outgrows_what_woke_it():
    gate = threading.Event()
    seen: list[bool] = []
    worker = Worker("t", lambda i: (gate.wait(), seen.append(worker.behind)))
    worker.put(0)  # wakes the thread with one item, which waits at the gate
    time.sleep(0.1)
    assert not worker.behind  # working through what woke it
    for i in range(1, 4):
        worker.put(i, wake=False)  # the queue grows while the thread works: the producer outruns it
    assert worker.behind
    gate.set()
    worker.flush()
    assert not worker.behind  # caught up, and nothing waits for it
    gate.clear()
    worker.put(4)
    time.sleep(0.1)
    flusher = threading.Thread(target=worker.flush)
    flusher.start()
    time.sleep(0.1)
    assert worker.behind  # a flush waits for the item being handled
    gate.set()
    flusher.join(10)
    assert not worker.behind
    worker.close()
    assert seen == [True] * 5  # each item was handled while the queue outgrew it or a flush waited
