"""Options shared by the ``lakelog`` commands, declared once so every command spells them the same.

``output_options`` gives a command that prints rows ``--format table|csv|json[|parquet]`` and
``-o/--output FILE``; the command passes both to ``lakelog.cli.render.emit``. ``root_option``,
``pair_option`` and ``param_option`` are the lake root and the ``-p NAME VALUE`` / ``--param NAME=VALUE``
query parameters, gathered by ``collect_params``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lakelog.errors import InvalidArgumentError

F = TypeVar("F", bound=Callable[..., Any])

TEXT_FORMATS = ("table", "csv", "json")
"""Formats every row-printing command accepts; ``parquet`` is added where the rows are a single frame."""

root_option = click.option(
    "--root", default="runs", show_default=True, help="The lake: a folder of runs (or s3://…)."
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


def output_options(*, parquet: bool = False, default: str = "table") -> Callable[[F], F]:
    """Add ``--format`` (passed as ``fmt``) and ``-o/--output`` (a Path or None) to a command.

    ``table`` is for people (a terminal's width, wrapped, full when piped); ``csv`` and ``json`` are
    for programs and always carry every row and every value; ``parquet`` (where offered) needs ``-o``.
    """
    formats = (*TEXT_FORMATS, "parquet") if parquet else TEXT_FORMATS

    def decorate(command: F) -> F:
        command = click.option(
            "-o",
            "--output",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Write the rows to this file instead of printing them.",
        )(command)
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(formats),
            default=default,
            show_default=True,
            help="How to print the rows: a table for people, csv or json for programs"
            + ("; parquet needs -o." if parquet else "."),
        )(command)

    return decorate


def collect_params(pairs: tuple[tuple[str, str], ...], params: tuple[str, ...]) -> dict[str, str]:
    """``-p name value`` and ``--param name=value`` as one dict of strings."""
    out = dict(pairs)
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidArgumentError(f"--param: expected NAME=VALUE, got {item!r}")
        out[name.strip()] = value
    return out


class ByteSize(click.ParamType):
    """A size in bytes: ``2000000000``, ``16G`` / ``16GiB`` (powers of 1024), ``16GB`` (powers of 1000)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", str(value), re.IGNORECASE)
        if not match:
            self.fail(f"expected a size such as 512M, 16GiB, 20GB or 2000000000, got {value!r}", param, ctx)
        number, unit, suffix = match.groups()
        power = " kmgt".index(unit.lower()) if unit else 0
        base = 1000 if suffix.lower() == "b" else 1024
        size = int(float(number) * base**power)
        if size < 1:
            self.fail(f"expected a positive size, got {value!r}", param, ctx)
        return size
