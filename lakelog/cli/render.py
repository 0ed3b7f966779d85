"""Rich tables for polars frames: what ``lakelog sql``, ``query``, ``runs``, ``diff`` and ``doctor`` print.

Numbers are shown with four significant digits, long lists and strings are shortened, statuses are
coloured (red: differs / warn, green: same / pass / ok), and missing values show as a dim dash.
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "differs": "bold red",
    "warn": "bold yellow",
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


def console(width: int | None = None) -> Console:
    """A console on the current stdout (so click's test runner captures it): the terminal's width, or
    140 columns when the output goes to a file or pipe."""
    probe = Console()
    return Console(width=width or (probe.width if probe.is_terminal else 140), highlight=False)


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
    wide: int = WIDE,
) -> Table:
    """A rich Table of ``df`` (first ``max_rows`` rows; a caption says how many were left out)."""
    if columns is not None:
        df = df.select([c for c in columns if c in df.columns])
    table = Table(
        title=title, title_justify="left", title_style="bold", show_lines=False, header_style="bold"
    )
    shown = df if max_rows is None else df.head(max_rows)
    rows = [[cell(v, wide=wide) for v in row] for row in shown.iter_rows()]
    for i, (name, dtype) in enumerate(df.schema.items()):
        longest = max([len(name)] + [len(r[i].plain) for r in rows])
        # short columns keep their width; only long text (details, lists) wraps
        table.add_column(
            name,
            justify="right" if dtype.is_numeric() else "left",
            overflow="fold",
            no_wrap=longest <= 24,
            min_width=min(longest, 24),
        )
    for row in rows:
        table.add_row(*row)
    if max_rows is not None and df.height > max_rows:
        table.caption = f"{df.height - max_rows} more rows not shown (of {df.height})"
    if df.height == 0:
        table.caption = "no rows"
    return table


def print_frame(df: pl.DataFrame, out: Console | None = None, **options: Any) -> None:
    """Print ``df`` as a table on ``out`` (a new console on stdout by default)."""
    (out or console()).print(frame_table(df, **options))
