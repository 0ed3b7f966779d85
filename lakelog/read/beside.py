"""A query on a cursor of a connection, in a thread, while the caller goes on with the connection.

DuckDB releases the GIL while it plans and runs a query, so two queries on two connections to one
database run side by side. ``lakelog diff`` reads its long queries next to its short ones this way.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import duckdb

from lakelog.errors import QueryError
from lakelog.read import views

_Work = Callable[[duckdb.DuckDBPyConnection], Any]


class Beside:
    """``work`` run on a cursor of ``con`` (``views.cursor``: the same views) in a thread, while the
    caller goes on with ``con``; ``result`` waits for its answer."""

    def __init__(self, con: duckdb.DuckDBPyConnection, work: _Work) -> None:
        self._con, self._work = con, work
        cursor = views.cursor(con)

        def run() -> Any:
            try:
                return work(cursor)
            finally:
                cursor.close()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakelog-beside")
        self._future: Future = pool.submit(run)
        pool.shutdown(wait=False)

    def result(self) -> Any:
        """The answer of ``work``. A connection whose tables its cursors do not see (one not made by
        ``connect``, with frames registered on it) gets it from the connection itself."""
        try:
            return self._future.result()
        except QueryError as exc:
            if not isinstance(exc.__cause__, duckdb.CatalogException):
                raise
            return self._work(self._con)
