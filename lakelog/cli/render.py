"""Printing rows where they go: what ``lakelog sql``, ``query``, ``runs``, ``diff`` and ``doctor`` print.

Tables fit their destination. On a terminal (or when ``COLUMNS`` is set) a table takes that width: long
cells wrap, and a table that cannot fit even wrapped is printed as plain ``column: value`` records
instead of losing columns. Piped or redirected (no ``COLUMNS``), a table is printed at its full natural
width and with every row, so nothing is cut. Numbers are shown with four significant digits, long
lists are shortened (``--format csv|json`` carries every value), statuses are coloured on a terminal
(red: differs / warn, green: same / pass / ok), and missing values show as a dash.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lakelog.errors import InvalidArgumentError

STATUS_STYLES = {
    "differs": "bold red",
    "warn": "bold yellow",
    "error": "bold red",
    "note": "cyan",
    "exploding": "red",
    "vanishing": "yellow",
    "frozen": "red",
    "partly frozen": "yellow",
    "wrong": "red",
    "imbalanced": "yellow",
    "overfitting": "red",
    "gap": "yellow",
    "too few": "yellow",
    "different": "red",
    "reordered": "yellow",
    "missing group": "yellow",
    "invalid expectation": "red",
    "same": "green",
    "pass": "green",
    "ok": "green",
    "not captured": "dim",
    "skip": "dim",
    "observed": "cyan",
}
"""Style of a cell whose text is one of these words (the status vocabulary of the queries)."""

WIDE = 60
"""Longest text shown in a cell on a bounded screen; piped output shows the whole text."""

UNBOUNDED = 100_000
"""Console width used when the output is piped or redirected: wide enough for any table."""

TERMINAL_ROWS = 200
"""Most rows printed on a terminal (a caption says how many more there are); piped output has all."""


def screen_width() -> int | None:
    """The width to fit: ``COLUMNS`` when set to a positive number, else the terminal's, else None (piped)."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    probe = Console()
    return probe.width if probe.is_terminal else None


def console(width: int | None = None, file: Any = None) -> Console:
    """A console on the current stdout (so click's test runner captures it) or on ``file``.

    ``width`` defaults to ``screen_width()``; piped output gets an unbounded console, so tables keep
    every column and text lines are not wrapped.
    """
    width = width or (screen_width() if file is None else None)
    return Console(width=width or UNBOUNDED, file=file, highlight=False, soft_wrap=width is None)


def bounded(out: Console) -> bool:
    """True when ``out`` has a real width to fit (a terminal or ``COLUMNS``), False when piped."""
    return out.width < UNBOUNDED


def fmt(value: Any, *, wide: int = WIDE) -> str:
    """One cell as text: 4 significant digits for floats, lists shortened, None as an empty string."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, pl.Series):
        value = value.to_list()
    if isinstance(value, list | tuple):
        shown = ", ".join(fmt(v, wide=wide) for v in value[:8])
        text = f"[{shown}{', ...' if len(value) > 8 else ''}]"
    elif isinstance(value, dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= wide else text[: wide - 1] + "…"


def cell(value: Any, *, wide: int = WIDE) -> Text:
    text = fmt(value, wide=wide)
    if value is None:
        return Text("—", style="dim")
    if isinstance(value, bool):
        return Text(text, style="green" if value else "red")
    return Text(text, style=STATUS_STYLES.get(text, ""))


def frame_table(
    df: pl.DataFrame,
    *,
    title: str | None = None,
    max_rows: int | None = 40,
    columns: list[str] | None = None,
    wide: int | None = WIDE,
    wrap: bool = False,
) -> Table:
    """A rich Table of ``df`` (first ``max_rows`` rows; a caption says how many were left out).

    Short columns keep their width and long text folds; ``wrap=True`` lets every cell wrap down to
    its column's header width, for a screen too narrow otherwise. ``wide=None`` shows whole texts.
    """
    if columns is not None:
        df = df.select([c for c in columns if c in df.columns])
    table = Table(
        title=title, title_justify="left", title_style="bold", show_lines=False, header_style="bold"
    )
    shown = df if max_rows is None else df.head(max_rows)
    limit = wide or UNBOUNDED
    rows = [[cell(v, wide=limit) for v in row] for row in shown.iter_rows()]
    for i, (name, dtype) in enumerate(df.schema.items()):
        longest = max([len(name)] + [len(r[i].plain) for r in rows])
        table.add_column(
            name,
            justify="right" if dtype.is_numeric() else "left",
            overflow="fold",
            no_wrap=not wrap and longest <= 24,
            min_width=min(len(name), 20) if wrap else min(longest, 24),
        )
    for row in rows:
        table.add_row(*row)
    if max_rows is not None and df.height > max_rows:
        table.caption = (
            f"{df.height - max_rows} more rows not shown (of {df.height}); "
            "--format csv or json shows every row"
        )
    if df.height == 0:
        table.caption = "no rows"
    return table


def _fits(out: Console, table: Table) -> bool:
    """Whether ``table`` renders within ``out``'s width without cropping (rich crops silently)."""
    probe = Console(width=out.width, file=io.StringIO(), color_system=None, highlight=False)
    with probe.capture() as captured:
        probe.print(table, crop=False)
    return max((cell_len(line) for line in captured.get().splitlines()), default=0) <= out.width


def _print_records(df: pl.DataFrame, out: Console, *, title: str | None, max_rows: int | None) -> None:
    """The rows as ``column: value`` lines, one block per row: for a screen narrower than the table."""
    if title:
        out.print(Text(title, style="bold"))
    shown = df if max_rows is None else df.head(max_rows)
    pad = max((len(c) for c in df.columns), default=0)
    for number, row in enumerate(shown.iter_rows(named=True), 1):
        out.print(Text(f"-- row {number} --", style="dim"))
        for name, value in row.items():
            line = Text(f"{name.rjust(pad)}: ")
            line.append_text(cell(value, wide=UNBOUNDED))
            out.print(line)
    if df.height > shown.height:
        out.print(Text(f"{df.height - shown.height} more rows not shown (of {df.height})", style="dim"))
    if df.height == 0:
        out.print(Text("no rows", style="dim"))


def print_frame(
    df: pl.DataFrame,
    out: Console | None = None,
    *,
    title: str | None = None,
    max_rows: int | None = 40,
    columns: list[str] | None = None,
    wide: int | None = WIDE,
) -> None:
    """Print ``df`` on ``out`` so that it fits: a table, a wrapped table, or ``column: value`` records.

    Piped (an unbounded console) the table keeps its natural width and whole texts; on a bounded
    screen it wraps, and falls back to records when even the wrapped table is wider than the screen,
    so no column is ever dropped.
    """
    out = out or console()
    if columns is not None:
        df = df.select([c for c in columns if c in df.columns])
    if not bounded(out):
        out.print(frame_table(df, title=title, max_rows=max_rows, wide=None))
        return
    for wrap in (False, True):
        table = frame_table(df, title=title, max_rows=max_rows, wide=wide, wrap=wrap)
        if _fits(out, table):
            out.print(table)
            return
    _print_records(df, out, title=title, max_rows=max_rows)


def _plain(df: pl.DataFrame) -> pl.DataFrame:
    """Nested columns (lists, structs) as JSON text, for CSV."""
    nested = [name for name, dtype in df.schema.items() if dtype.is_nested()]
    return df.with_columns(
        pl.col(name).map_elements(
            lambda v: json.dumps(v.to_list() if isinstance(v, pl.Series) else v, default=str),
            return_dtype=pl.String,
        )
        for name in nested
    )


def _strict(value: Any) -> Any:
    if isinstance(value, Decimal):  # SQL decimals (a literal 1.5) are numbers in JSON, not text
        value = int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """Strict JSON (what ``jq`` and every parser accept): NaN and infinities become the strings
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (protobuf's JSON mapping), decimals numbers, other
    values (dates, times) their ``str``."""
    return json.dumps(_strict(value), default=str, indent=1, allow_nan=False) + "\n"


def emit(df: pl.DataFrame, fmt: str, output: Path | None, *, title: str | None = None) -> None:
    """Print or write ``df`` as a table, CSV, JSON (an array of row objects) or Parquet.

    A table on a terminal shows the first ``TERMINAL_ROWS`` rows; piped, or written with ``-o``, it
    shows them all at full width.
    """
    if fmt == "parquet":
        if output is None:
            raise InvalidArgumentError("--format parquet: give a file with -o FILE (Parquet is binary)")
        df.write_parquet(output)
        return
    if fmt == "csv":
        text = _plain(df).write_csv()
    elif fmt == "json":
        text = json_text(df.to_dicts())
    elif fmt == "table":
        if output is None:
            out = console()
            print_frame(df, out, title=title, max_rows=TERMINAL_ROWS if bounded(out) else None)
            return
        with output.open("w", encoding="utf-8") as f:
            print_frame(df, console(file=f), title=title, max_rows=None)
        return
    else:
        raise InvalidArgumentError(f"--format: expected table, csv, json or parquet, got {fmt!r}")
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
