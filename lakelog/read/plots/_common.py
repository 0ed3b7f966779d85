"""What every chart function shares: a connection, a query from the library, data for altair (read side).

Charts get their rows only through the query library (``queries/plot_*.sql`` and friends), which
buckets steps in SQL, so a chart never ships more than ``max_points`` points per series to the browser.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import altair as alt
import duckdb
import polars as pl

from lakelog.errors import InvalidArgumentError, LakelogError, RunNotFoundError
from lakelog.lake.checks import did_you_mean
from lakelog.read.querylib import query
from lakelog.read.views import connect

Source = Any
"""A DuckDB connection from ``lakelog.connect``, or anything it takes: a lake root, a run folder, a Run, a list."""

WIDTH = 640
HEIGHT = 260
DEFAULT_MAX_POINTS = 2000
STEP_AXIS = {"tickMinStep": 1, "format": ",d"}
"""Axis options of a step axis: whole steps only (no 0.5 ticks on a short run)."""


class NoDataError(LakelogError, LookupError):
    """The runs hold nothing to draw for this chart (e.g. no holdout was logged); the message says what is missing."""


def connection(source: Source) -> duckdb.DuckDBPyConnection:
    """Reuse an open connection, or open one over a root / run folder / Run / list of those."""
    if isinstance(source, duckdb.DuckDBPyConnection):
        return source
    if source is None:
        raise InvalidArgumentError(
            "source: expected a lakelog.connect(...) connection, a lake root or run folder"
        )
    return connect(source if not isinstance(source, os.PathLike) else os.fspath(source))


def run_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute("SELECT run FROM runs ORDER BY run").fetchall()]


def check_runs(con: duckdb.DuckDBPyConnection, runs: str | Iterable[str] | None) -> list[str]:
    """Validate run names against the connection; ``None`` means every run (returned as [])."""
    if runs is None:
        return []
    names = [runs] if isinstance(runs, str) else list(runs)
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(f"runs: expected run names (strings), got {names!r}")
    known = run_names(con)
    missing = [n for n in names if n not in known]
    if missing:
        raise RunNotFoundError(
            f"runs: no run named {', '.join(map(repr, missing))}{did_you_mean(missing[0], known)}; "
            f"known runs: {', '.join(known) or 'none'}"
        )
    return names


def one_run(con: duckdb.DuckDBPyConnection, run: str | None) -> str:
    """The run a single-run chart is about: the one given, or the only run of the connection."""
    if run is not None:
        return check_runs(con, [run])[0]
    known = run_names(con)
    if len(known) != 1:
        raise InvalidArgumentError(
            f"run: the connection holds {len(known)} runs ({', '.join(known) or 'none'}); name one"
        )
    return known[0]


def check_max_points(max_points: int, arg: str = "max_points") -> int:
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise InvalidArgumentError(f"{arg}: expected an int >= 2, got {max_points!r}")
    return max_points


def names_list(names: str | Sequence[str], arg: str) -> list[str]:
    out = [names] if isinstance(names, str) else list(names)
    if not out or not all(isinstance(n, str) and n for n in out):
        raise InvalidArgumentError(f"{arg}: expected one or more non-empty names, got {names!r}")
    return out


def fetch(con: duckdb.DuckDBPyConnection, name: str, *, missing: str, **params: Any) -> pl.DataFrame:
    """Run a library query; an empty answer raises NoDataError with ``missing`` as the explanation."""
    frame = query(name, con=con, **params)
    if frame.is_empty():
        raise NoDataError(missing)
    return frame


def values(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts: NaN and infinities become null (JSON has neither)."""
    rows = frame.to_dicts()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
            elif value is not None and not isinstance(value, int | float | str | bool):
                row[key] = str(value)
    return rows


def data(frame: pl.DataFrame) -> alt.InlineData:
    """Inline data (no max-rows limit: the SQL already bounded it)."""
    return alt.InlineData(values=values(frame))


def log_floor(frame: pl.DataFrame, column: str = "value", by: str | None = None) -> pl.DataFrame:
    """Values <= 0 cannot sit on a log axis: draw them at 1/20 of the smallest positive value, flagged.

    A frozen group (update ratio 0) then shows as a line on the floor instead of vanishing.
    """
    positive = pl.when(pl.col(column) > 0).then(pl.col(column))
    floor = positive.min().over(by) if by else positive.min()
    frame = frame.with_columns((pl.col(column) <= 0).alias("at_floor"), floor.alias("_floor"))
    return frame.with_columns(
        pl.when(pl.col("at_floor"))
        .then(pl.coalesce(pl.col("_floor") / 20, pl.lit(1e-12)))
        .otherwise(pl.col(column))
        .alias("plot_value")
    ).drop("_floor")


def title(text: str, subtitle: str | list[str] | None = None) -> alt.TitleParams:
    return alt.TitleParams(text=text, subtitle=subtitle or "", anchor="start")


def label_of(con: duckdb.DuckDBPyConnection, runs: list[str]) -> dict[str, str]:
    """Short sweep labels ("lr=0.01 batch=64") per run, from the config values that differ."""
    frame = query("internal.plot_config_labels", con=con, runs=runs)
    return dict(zip(frame["run"].to_list(), frame["label"].to_list(), strict=True))
