"""``lakelog sql``, ``lakelog query`` and ``lakelog runs``: thin commands over the query library.

Values given with ``--param name=value`` or ``-p name value`` are bound as DuckDB parameters, never
pasted into the SQL; ``query`` converts them to the type of the parameter's default (booleans are
``true`` or ``false``, nothing else). ``lakelog query NAME --help`` documents that query's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import polars as pl

from lakelog.cli.base import LakelogCommand, one_line_errors
from lakelog.cli.options import collect_params, output_options, pair_option, param_option, root_option
from lakelog.cli.render import console, emit
from lakelog.errors import InvalidArgumentError, QueryError
from lakelog.read import querylib, sandbox
from lakelog.read.views import connect

HELP_FLAGS = ("-h", "--help")


@click.command("sql", cls=LakelogCommand)
@click.argument("sql")
@root_option
@pair_option
@param_option
@output_options(parquet=True)
@click.option(
    "--unsafe",
    is_flag=True,
    help="A full DuckDB: allow COPY/CREATE/ATTACH/INSTALL and reading files outside the lake.",
)
def sql_command(
    sql: str, root: str, pairs: tuple, params: tuple, fmt: str, output: Path | None, unsafe: bool
) -> None:
    """Run SQL over the lake's views (runs, predictions, pred_digests, scalars, batches, params,
    holdout, workers, dump_index; each has a run column) and print the rows.

    Read-only unless --unsafe: only queries run, and only the lake's part files can be read.

    Example: lakelog sql "SELECT run, max(step) FROM scalars GROUP BY run" --root runs
    """
    con = connect(root, read_only=not unsafe)
    if not unsafe:
        sandbox.check_statements(con, sql)
    try:
        rows = querylib.run_sql(con, sql, collect_params(pairs, params))
    except QueryError as exc:
        raise sandbox.explain(exc, unsafe) from exc
    emit(rows, fmt, output)


def _signature(q: querylib.Query) -> str:
    parts = [p.name if p.required else f"{p.name}={p.default!r}" for p in q.params]
    return ", ".join(parts)


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true|false"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "number"
    return "text"


def query_help(q: querylib.Query) -> str:
    """What ``lakelog query NAME --help`` prints: the query's purpose, each parameter's type, default and doc."""
    formatter = click.HelpFormatter()
    formatter.write_usage("lakelog query", f"{q.name} [-p NAME VALUE]... [--root ROOT] [--format FORMAT]")
    formatter.write_paragraph()
    with formatter.indentation():
        formatter.write_text(q.doc or "(no description)")
    rows = []
    for p in q.params:
        if p.required:
            rows.append((p.name, f"text, required. {p.doc}"))
        else:
            rows.append((p.name, f"{_kind(p.default)}, default {p.default!r}. {p.doc}"))
    with formatter.section("Parameters (-p NAME VALUE or --param NAME=VALUE)"):
        formatter.write_dl(rows or [("(none)", "this query takes no parameters")])
    example = " ".join(f"-p {p.name} VALUE" for p in q.params if p.required)
    with formatter.section("Example"):
        formatter.write_text(f"lakelog query {q.name} {example} --root runs".replace("  ", " "))
        formatter.write_text(f"SQL: {q.path}")
    return formatter.getvalue()


class QueryCommand(LakelogCommand):
    """``lakelog query``: ``--help`` after a query name shows that query's help instead of the command's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in HELP_FLAGS for a in args):
            rest = [a for a in args if a not in HELP_FLAGS]
            probe = self.make_context(self.name or "query", rest, parent=ctx.parent, resilient_parsing=True)
            name = probe.params.get("name")
            if name:
                with one_line_errors():
                    text = query_help(querylib.get(name))
                click.echo(text, nl=False)
                ctx.exit(0)
        return super().parse_args(ctx, args)


def _list_queries(fmt: str, output: Path | None, every: bool = False) -> None:
    listed = list((querylib.library() if every else querylib.questions()).values())
    rows = [{"name": q.name, "parameters": _signature(q), "answers": q.doc} for q in listed]
    df = pl.DataFrame(rows, schema={"name": pl.String, "parameters": pl.String, "answers": pl.String})
    if fmt != "table" or output is not None:
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
    out.print("[dim]lakelog query NAME --help shows one query's parameters[/dim]")


@click.command("query", cls=QueryCommand)
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
@click.option(
    "--engine",
    type=click.Choice(querylib.ENGINES),
    default="duckdb",
    show_default=True,
    help="Where the query runs: DuckDB here, or a local Spark session (pip install 'lakelog[spark]').",
)
@output_options(parquet=True)
def query_command(
    name: str | None,
    root: str,
    pairs: tuple,
    params: tuple,
    list_: bool,
    all_: bool,
    engine: str,
    fmt: str,
    output: Path | None,
) -> None:
    """Run a named query of the library (queries/NAME.sql) with its parameters.

    `lakelog query NAME --help` shows the query's parameters, their types and defaults.

    Example: lakelog query first_divergence -p run_a baseline -p run_b candidate --param tol=1e-4
    """
    if list_:
        _list_queries(fmt, output, every=all_)
        return
    if not name:
        raise InvalidArgumentError("query: give a query NAME, or --list to see them")
    q = querylib.get(name)
    values = q.coerce(collect_params(pairs, params))
    emit(querylib.query(name, root=root, engine=engine, **values), fmt, output, title=name)


@click.command("runs", cls=LakelogCommand)
@root_option
@output_options(parquet=True)
def runs_command(root: str, fmt: str, output: Path | None) -> None:
    """List the runs of a lake: status, created, seed, training time, last step, final loss."""
    emit(querylib.query("run_list", root=root), fmt, output, title=f"runs in {root}")
