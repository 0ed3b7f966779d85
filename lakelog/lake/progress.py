"""A tqdm progress line for the long work lakelog does itself (reports over many runs, imports, sweeps).

One place decides when a bar is shown: only when stderr is a terminal (tqdm's ``disable=None``),
never when ``LAKELOG_PROGRESS=0``, always when ``LAKELOG_PROGRESS=1``; so tests, notebooks' logs
and CI output stay clean while a person at a shell sees how far a 120-run report has got.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

ENV = "LAKELOG_PROGRESS"


def enabled(show: bool | None = None) -> bool | None:
    """True, False, or None (= tqdm decides: shown on a terminal only); ``show`` overrides the environment."""
    if show is not None:
        return bool(show)
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return None


def bar(
    total: int | None = None,
    *,
    desc: str = "",
    unit: str = "it",
    show: bool | None = None,
    leave: bool = False,
    **options: Any,
) -> tqdm:
    """A progress bar to ``update()`` by hand; use it as a context manager so it always closes.

    ``options`` go to tqdm (``file=``, ``mininterval=``…).
    """
    state = enabled(show)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=None if state is None else not state,
        leave=leave,
        dynamic_ncols=True,
        **options,
    )


def progress(
    items: Iterable[T],
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    show: bool | None = None,
    min_items: int = 2,
) -> Iterator[T]:
    """Iterate ``items`` with a progress line; a line for fewer than ``min_items`` items is just noise."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if total is not None and total < min_items and show is None:
        yield from items
        return
    with bar(total, desc=desc, unit=unit, show=show) as line:
        for item in items:
            yield item
            line.update(1)


def note(line: tqdm | None, text: str) -> None:
    """Show what is being worked on right now next to the bar (a no-op without one)."""
    if line is not None and not line.disable:
        line.set_postfix_str(text, refresh=False)


@contextmanager
def busy(desc: str, *, show: bool | None = None, after: float = 1.0) -> Iterator[None]:
    """Show ``desc`` with the elapsed time while the block runs, for work with no count to show.

    The line appears only once the block has run ``after`` seconds (quick work prints nothing) and
    under the same rule as ``bar`` (a terminal, or ``LAKELOG_PROGRESS``); it goes away at the end.
    """
    state = enabled(show)
    stop = threading.Event()

    def tick() -> None:
        if stop.wait(after):
            return
        with bar(None, desc=desc, unit="s", show=state, bar_format="{desc}: {elapsed}") as line:
            while not stop.wait(0.5):
                line.refresh()

    worker = threading.Thread(target=tick, name="lakelog-busy", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
