"""The ``lakelog`` command: a thin layer over the library (read side: torch loads only for commands that train).

Commands live in their own modules and are imported when invoked, so ``lakelog sql`` starts fast.
Library errors (LakelogError) become one line on stderr and exit code 2; a traceback means a bug.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from lakelog.errors import LakelogError

# name -> "module:attribute" of a click command; the module is imported only when needed.
COMMANDS: dict[str, str] = {
    "sql": "lakelog.cli.query:sql_command",
    "query": "lakelog.cli.query:query_command",
    "runs": "lakelog.cli.query:runs_command",
    "diff": "lakelog.cli.diff:diff_command",
    "doctor": "lakelog.cli.diff:doctor_command",
    "compare-dumps": "lakelog.cli.dumps:compare_dumps_command",
    "import-dumps": "lakelog.cli.dumps:import_dumps_command",
    "check-determinism": "lakelog.cli.determinism:check_determinism_command",
    "report": "lakelog.cli.report:report_command",
    "demo": "lakelog.cli.demo:demo_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; modules not present are left out of the list."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LakelogError as exc:
            click.echo(f"lakelog: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lakelog")
def cli() -> None:
    """lakelog: find where two training runs stop being the same, and why."""


def main() -> None:
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
