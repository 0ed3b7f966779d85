"""``lakelog sql``, ``lakelog query`` and ``lakelog runs``: thin commands over the query library.

Values given with ``--param name=value`` or ``-p name value`` are bound as DuckDB parameters, never
pasted into the SQL; ``query`` converts them to the type of the parameter's default.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import polars as pl

from lakelog.cli.render import console, frame_table
from lakelog.errors import InvalidArgumentError
from lakelog.read import querylib

FORMATS = ("table", "csv", "json", "parquet")

root_option = click.option(
    "--root", default="runs", show_default=True, help="The lake: a folder of runs (or s3://…)."
)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="How to print the rows; parquet needs -o.",
)
output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the rows to this file instead of printing them.",
)
pair_option = click.option(
    "-p",
    "pairs",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="A query parameter (sqlite-utils style); repeatable.",
)
param_option = click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter; repeatable."
)


def collect_params(pairs: tuple[tuple[str, str], ...], params: tuple[str, ...]) -> dict[str, str]:
    """``-p name value`` and ``--param name=value`` as one dict of strings."""
    out = dict(pairs)
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidArgumentError(f"--param: expected NAME=VALUE, got {item!r}")
        out[name.strip()] = value
    return out


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


def emit(df: pl.DataFrame, fmt: str, output: Path | None, *, title: str | None = None) -> None:
    """Print or write ``df`` as a table, CSV, JSON (an array of row objects) or Parquet."""
    if fmt == "parquet":
        if output is None:
            raise InvalidArgumentError("--format parquet: give a file with -o FILE (Parquet is binary)")
        df.write_parquet(output)
        return
    if fmt == "csv":
        text = _plain(df).write_csv()
    elif fmt == "json":
        text = json.dumps(df.to_dicts(), default=str, indent=1) + "\n"
    else:
        if output is None:
            console().print(frame_table(df, title=title, max_rows=None if df.height <= 200 else 200))
            return
        with output.open("w", encoding="utf-8") as f:
            console_ = console()
            console_.file = f
            console_.print(frame_table(df, title=title, max_rows=None))
        return
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@click.command("sql")
@click.argument("sql")
@root_option
@pair_option
@param_option
@format_option
@output_option
def sql_command(sql: str, root: str, pairs: tuple, params: tuple, fmt: str, output: Path | None) -> None:
    """Run SQL over the lake's views (runs, predictions, pred_digests, scalars, batches, params,
    holdout, workers, dump_index; each has a run column) and print the rows.

    Example: lakelog sql "SELECT run, max(step) FROM scalars GROUP BY run" --root runs
    """
    from lakelog.read.views import connect

    con = connect(root)
    emit(querylib.run_sql(con, sql, collect_params(pairs, params)), fmt, output)


def _signature(q: querylib.Query) -> str:
    parts = [p.name if p.required else f"{p.name}={p.default!r}" for p in q.params]
    return ", ".join(parts)


def _list_queries(fmt: str, output: Path | None, every: bool = False) -> None:
    listed = list((querylib.library() if every else querylib.questions()).values())
    rows = [{"name": q.name, "parameters": _signature(q), "answers": q.doc} for q in listed]
    df = pl.DataFrame(rows, schema={"name": pl.String, "parameters": pl.String, "answers": pl.String})
    if fmt != "table":
        emit(df, fmt, output)
        return
    out = console()
    for q in listed:
        out.print(f"[bold]{q.name}[/bold]({_signature(q)})")
        out.print(f"  {q.doc}", highlight=False)
        for p in q.params:
            default = "" if p.required else f" = {p.default!r}"
            out.print(f"  [cyan]{p.name}[/cyan]{default}: {p.doc}", highlight=False)
        out.print()


@click.command("query")
@click.argument("name", required=False)
@root_option
@pair_option
@param_option
@click.option(
    "--list", "list_", is_flag=True, help="List the queries with their parameters and documentation."
)
@click.option(
    "--all", "all_", is_flag=True, help="With --list: include the internal.* queries of plots and reports."
)
@format_option
@output_option
def query_command(
    name: str | None,
    root: str,
    pairs: tuple,
    params: tuple,
    list_: bool,
    all_: bool,
    fmt: str,
    output: Path | None,
) -> None:
    """Run a named query of the library (queries/NAME.sql) with its parameters.

    Example: lakelog query first_divergence -p run_a baseline -p run_b candidate --param tol=1e-4
    """
    if list_:
        _list_queries(fmt, output, every=all_)
        return
    if not name:
        raise InvalidArgumentError("query: give a query NAME, or --list to see them")
    q = querylib.get(name)
    values = q.coerce(collect_params(pairs, params))
    emit(querylib.query(name, root=root, **values), fmt, output, title=name)


@click.command("runs")
@root_option
@format_option
@output_option
def runs_command(root: str, fmt: str, output: Path | None) -> None:
    """List the runs of a lake: status, created, seed, training time, last step, final loss."""
    emit(querylib.query("run_list", root=root), fmt, output, title=f"runs in {root}")
