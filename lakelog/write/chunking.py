"""Work cut into runs of bounded size: what the batched reductions of the write side share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def bounded_runs(sizes: Iterable[tuple[int, int]], limit: int) -> Iterator[list[int]]:
    """Runs of consecutive ``(key, size)`` items, as lists of keys, each summing to at most ``limit``
    (an item larger than ``limit`` is a run of its own). A batch of small items costs one call; a run
    bounded so keeps the scratch memory of that call bounded too."""
    run: list[int] = []
    total = 0
    for key, size in sizes:
        if run and total + size > limit:
            yield run
            run, total = [], 0
        run.append(key)
        total += size
    if run:
        yield run
