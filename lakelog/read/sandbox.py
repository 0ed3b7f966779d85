"""Read-only DuckDB connections for ``lakelog sql``: the lake's files can be read, nothing else.

Two layers, so that neither alone has to be perfect:

- DuckDB's own settings (``lock``): ``allowed_paths`` lists exactly the part files the views read,
  ``enable_external_access = false`` refuses every other file (``read_text('/etc/passwd')``,
  ``read_csv`` of any path, ``COPY … TO``, ``ATTACH``, ``EXPORT``, ``INSTALL``/``LOAD``), extension
  auto-loading is off, and ``lock_configuration = true`` keeps a statement from turning any of it back.
- A statement check (``check_statements``): only queries run (``SELECT``, ``WITH``, ``FROM …``,
  ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``EXPLAIN`` of a query). ``COPY``, ``CREATE``,
  ``INSERT``, ``ATTACH``, ``SET``, ``PRAGMA``, ``CALL``… are refused before anything runs, because
  ``allowed_paths`` permits writing the files it lets DuckDB read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import duckdb

from lakelog.errors import QueryError

_EXPLAIN = re.compile(r"^\s*explain\s+(?:analyze\s+)?", re.I)


def lock(con: duckdb.DuckDBPyConnection, paths: Sequence[str]) -> None:
    """Let ``con`` read only ``paths`` (and the views and tables already registered), for good."""
    con.execute("SET allowed_paths = $paths", {"paths": list(paths)})
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET allow_community_extensions = false")
    con.execute("SET lock_configuration = true")


def check_statements(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ``QueryError`` unless every statement of ``sql`` only reads (see the module docstring)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from exc
    for statement in statements:
        kind = statement.type
        text = statement.query.strip()
        if kind == duckdb.StatementType.EXPLAIN:
            inner = _EXPLAIN.sub("", text, count=1)
            kinds = {s.type for s in con.extract_statements(inner)} if inner else set()
            if kinds == {duckdb.StatementType.SELECT}:
                continue
        elif kind == duckdb.StatementType.SELECT:
            continue
        name = kind.name if hasattr(kind, "name") else str(kind)
        raise QueryError(
            f"lakelog sql is read-only: {name} statements are refused ({text[:60]!r}); only queries "
            "(SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) run. Pass --unsafe for a full DuckDB "
            "connection that may write files and read outside the lake"
        )


def explain(exc: QueryError, unsafe: bool) -> QueryError:
    """``exc`` with what the read-only lock means, when the lock is what refused the query."""
    if unsafe or "Permission Error" not in str(exc):
        return exc
    return QueryError(
        f"{exc} (lakelog sql reads only the lake's part files; pass --unsafe to read other files)"
    )
