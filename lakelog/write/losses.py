"""What a run's writer could not write: rows lost per table and why, and whether the lake is writable.

Why: a failure costs only what failed (writer.py), so each loss is counted where it happens and
reported once. A table's lost rows are counted per table with the first cause (they go to run.json
and the commit as ``dropped``) and warned about once per table and kind of error. A lake that cannot
be written is not a loss yet (the rows wait in memory): it is warned about at most every
``WARN_EVERY_S`` while it lasts, and said to be over once a part file is written again.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("lakelog")

WARN_EVERY_S = 300.0
"""The lake-not-writable warning is repeated at most this often while the problem lasts."""


class Losses:
    """The losses of one writer: ``dropped`` rows and ``causes`` per table, the ``first_error``, and the
    ``io_error`` set while the lake cannot be written."""

    def __init__(self, run_dir: str, lake_root: str) -> None:
        self.run_dir = run_dir
        self.lake_root = lake_root
        self.dropped: dict[str, int] = {}
        self.causes: dict[str, str] = {}
        self.first_error: BaseException | None = None
        self.io_error: OSError | None = None
        self._io_warned_at = -WARN_EVERY_S
        self._warned: set[tuple[str, str]] = set()
        self.uncommitted = False
        """True when rows were lost since the writer last committed (the commit carries the counts)."""

    def drop(self, table: str, rows: int, exc: BaseException) -> None:
        """``rows`` rows of ``table`` are lost because of ``exc``."""
        self.dropped[table] = self.dropped.get(table, 0) + int(rows)
        self.uncommitted = True
        cause = f"{type(exc).__name__}: {exc}"
        self.causes.setdefault(table, cause)
        if self.first_error is None:
            self.first_error = exc
        key = (table, type(exc).__name__)
        if key not in self._warned:  # once per table and cause; the counts go on in run.json
            self._warned.add(key)
            log.warning(
                "lakelog: run %s: %d %s row(s) could not be written (%s); other rows and tables go on "
                "(counted in run.json 'dropped')",
                os.path.basename(self.run_dir),
                rows,
                table,
                cause,
            )

    def lake_trouble(self, exc: OSError, max_buffer_bytes: int) -> None:
        """The lake cannot be written now; the rows stay in memory up to ``max_buffer_bytes``."""
        self.io_error = exc
        if self.first_error is None:
            self.first_error = exc
        now = time.monotonic()
        if now - self._io_warned_at >= WARN_EVERY_S:
            self._io_warned_at = now
            log.warning(
                "lakelog: cannot write to the lake %s (%s: %s); training goes on, rows are kept in memory "
                "(up to %d MiB) and written when it is writable again",
                self.lake_root,
                type(exc).__name__,
                exc.strerror or exc,
                max_buffer_bytes >> 20,
            )
        self.causes.setdefault("lake", f"{type(exc).__name__}: {exc}")

    def lake_writable(self) -> None:
        """A part file was written: the lake is writable (again)."""
        if self.io_error is not None:
            log.info("lakelog: the lake %s is writable again; buffered rows written", self.lake_root)
            self.io_error = None
