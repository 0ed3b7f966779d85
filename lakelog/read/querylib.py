"""The query library: run a question from ``queries/`` with bound parameters (read side: no torch).

The files, their headers and their namespaces are read by ``lakelog.read.queryfiles`` (re-exported
here); this module runs them on DuckDB, or on Spark through ``lakelog.read.spark``.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import polars as pl

from lakelog.errors import InvalidArgumentError, QueryError
from lakelog.read.queryfiles import DIALECT_FOLDERS, INTERNAL, Param, Query, get, library, parse, questions
from lakelog.read.views import connect

__all__ = [
    "DIALECT_FOLDERS",
    "ENGINES",
    "INTERNAL",
    "Param",
    "Query",
    "get",
    "library",
    "parse",
    "query",
    "questions",
    "run_sql",
]

ENGINES = ("duckdb", "spark")
"""Where ``query`` runs a question: DuckDB in this process, or a Spark session."""


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pl.DataFrame:
    """Run through a relation: DuckDB 2 results of ``execute`` have no ``.pl()``, relations do.

    A part file deleted between a view's listing and its read (``lakelog compact`` replaced it) is
    retried once: the views list the lake again at the next query.
    """
    for attempt in (1, 2):
        try:
            rel = con.sql(sql, params=params) if params else con.sql(sql)
            return pl.DataFrame() if rel is None else rel.pl()
        except duckdb.IOException as exc:
            if attempt == 2 or "No such file" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _leaves(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _leaves(item, f"{prefix}.{key}", out)
    elif isinstance(value, list | dict):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = value


def _flatten(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """Spread JSON text columns into one column per leaf (nested keys joined with '.')."""
    for column in columns:
        if column not in frame.columns:
            continue
        rows = []
        for text in frame[column].to_list():
            leaves: dict[str, Any] = {}
            try:
                _leaves(json.loads(text) if text else {}, column, leaves)
            except json.JSONDecodeError:
                leaves = {}
            rows.append(leaves)
        position = frame.columns.index(column)
        frame = frame.drop(column)
        for key in sorted({k for row in rows for k in row}):
            if key in frame.columns:
                continue
            values = [row.get(key) for row in rows]
            kinds = {type(v) for v in values if v is not None}
            if len(kinds) > 1 and not kinds <= {int, float}:  # mixed types: show them as JSON text
                values = [None if v is None else json.dumps(v) for v in values]
            frame = frame.insert_column(position, pl.Series(key, values, strict=False))
            position += 1
    return frame


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Run SQL with bound parameters and return a polars frame; DuckDB errors become QueryError."""
    try:
        return _frame(con, sql, params or {})
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from exc


def query(
    name: str,
    *,
    root: Any = "runs",
    con: duckdb.DuckDBPyConnection | None = None,
    engine: str = "duckdb",
    spark: Any = None,
    **params: Any,
) -> pl.DataFrame:
    """Run the named query over a lake (``root``) or an open connection; returns a polars DataFrame.

    ``engine="spark"`` runs the same question on Spark (:mod:`lakelog.read.spark`): on ``spark``, a
    SparkSession of yours (a cluster's), or on a local session made on first use; the frame has the
    columns and the row order DuckDB gives. Raises QueryError for an unknown query, a missing or
    unknown parameter, SQL that fails, or a query that cannot run on Spark (naming the construct).
    """
    if engine not in ENGINES:
        raise InvalidArgumentError(f"engine: expected one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    if engine == "spark" and con is not None:
        raise InvalidArgumentError("con: a DuckDB connection cannot run engine='spark'; give root= instead")
    if engine == "duckdb" and spark is not None:
        raise InvalidArgumentError("spark: a SparkSession is used only with engine='spark'")
    q = get(name)
    bound = q.bind(params)
    if engine == "spark":
        try:  # pyspark and sqlglot: optional heavy dependencies, imported when asked for
            from lakelog.read import spark as spark_engine
        except ImportError as exc:
            raise QueryError(str(exc)) from exc
        return _flatten(spark_engine.run(q, bound, root, spark), q.flatten)
    if con is None:
        con = connect(root)
    try:
        return _flatten(_frame(con, q.sql, bound), q.flatten)
    except duckdb.Error as exc:
        raise QueryError(f"query {name!r} ({q.path}) failed: {str(exc).splitlines()[0]}") from exc
