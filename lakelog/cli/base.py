"""What every ``lakelog`` command shares: library errors become one line on stderr and exit code 2.

The translation lives here once. ``LakelogCommand`` applies it to a command invoked on its own (click's
``CliRunner`` on ``compare_dumps_command``, say) and ``lakelog.cli.LazyGroup`` applies the same function
to every subcommand, so a command that forgets ``cls=LakelogCommand`` still prints one line. A traceback
from ``lakelog`` therefore means a bug, never a bad argument or a damaged lake.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from lakelog.errors import LakelogError

EXIT_ERROR = 2
"""Exit code of a library error (click uses the same code for a bad option)."""


def fail(message: str) -> NoReturn:
    """Print ``lakelog: error: MESSAGE`` on stderr and exit with code 2.

    The message is one line unless it carries evidence on purpose (a failed script's last output).
    """
    click.echo(f"lakelog: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a LakelogError (or an OSError such as a full disk or a denied -o file) into one line and exit 2."""
    try:
        yield
    except LakelogError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(_os_message(exc))


class LakelogCommand(click.Command):
    """A click command whose library errors print one line and exit 2 (see ``one_line_errors``)."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)
