"""The ``lakelog`` command: a thin layer over the library (read side: torch loads only for commands that train).

Commands live in their own modules and are imported when invoked: ``lakelog --help`` lists them from
``SUMMARIES`` without importing any, so it starts in the time Python and click take. Library errors
(LakelogError) become one line on stderr and exit code 2 (``lakelog.cli.base``, applied here to every
command); a traceback means a bug.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from lakelog.cli.base import fail, one_line_errors
from lakelog.lake.checks import did_you_mean

# name -> "module:attribute" of a click command; the module is imported only when needed.
COMMANDS: dict[str, str] = {
    "sql": "lakelog.cli.query:sql_command",
    "query": "lakelog.cli.query:query_command",
    "runs": "lakelog.cli.query:runs_command",
    "diff": "lakelog.cli.diff:diff_command",
    "doctor": "lakelog.cli.doctor:doctor_command",
    "compare-dumps": "lakelog.cli.dumps:compare_dumps_command",
    "import-dumps": "lakelog.cli.dumps:import_dumps_command",
    "check-determinism": "lakelog.cli.determinism:check_determinism_command",
    "report": "lakelog.cli.report:report_command",
    "demo": "lakelog.cli.demo:demo_command",
    "check": "lakelog.cli.check:check_command",
    "compact": "lakelog.cli.compact:compact_command",
}

SUMMARIES: dict[str, str] = {
    "sql": "Run SQL over the lake's views and print the rows.",
    "query": "Run a named query of the library with its parameters.",
    "runs": "List the runs of a lake: status, seed, time, last step, loss.",
    "diff": "Where and how two runs part.",
    "doctor": "Health checks on one run.",
    "compare-dumps": "Where two runs' weights part, dump by dump.",
    "import-dumps": "Import torch.save checkpoints as safetensors dumps.",
    "check-determinism": "Run a training script twice and report the first difference.",
    "report": "One self-contained HTML page about runs or a sweep.",
    "demo": "Train a small model twice and diagnose where the runs part.",
    "check": "List damaged files of a lake that readers leave out.",
    "compact": "Merge the small part files of finished partitions.",
}
"""The line ``lakelog --help`` shows per command; a command missing here is imported to read its help."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; modules not present are left out of the list."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if _present(name))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            fail(
                f"no command {name!r}{did_you_mean(name, COMMANDS)}; commands: {', '.join(sorted(COMMANDS))}"
            )
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            summary = SUMMARIES.get(name)
            if summary is None:
                command = self._load(name)
                summary = command.get_short_help_str(limit=80) if command is not None else ""
            rows.append((name, summary))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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
        with one_line_errors():
            return super().invoke(ctx)


def _present(name: str) -> bool:
    """Whether the command's module is installed, found without importing it."""
    return importlib.util.find_spec(COMMANDS[name].split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lakelog")
def cli() -> None:
    """lakelog: find where two training runs stop being the same, and why."""


def main() -> None:
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
