"""``lakelog compact ROOT [RUN…]``: merge small part files (``lakelog.lake.compact``), with a progress bar.

A missing root or run is one line on stderr and exit code 2 (``lakelog.cli.base``).
"""

from __future__ import annotations

import click

from lakelog.cli.base import LakelogCommand
from lakelog.lake.compact import MAX_FILE_BYTES, compact


@click.command("compact", cls=LakelogCommand)
@click.argument("root", default="runs")
@click.argument("runs", nargs=-1)
@click.option(
    "--max-file-mb",
    type=click.IntRange(min=1),
    default=MAX_FILE_BYTES >> 20,
    show_default=True,
    help="Largest merged file (MB of Arrow data); bigger partitions become several files.",
)
def compact_command(root: str, runs: tuple[str, ...], max_file_mb: int) -> None:
    """Merge the part files of each finished partition into one large file (all runs, or RUN…).

    Safe while readers run and after a kill at any point: every row is seen exactly once, and the next
    compact finishes an interrupted one. Example: lakelog compact runs baseline candidate
    """
    result = compact(root, list(runs) or None, max_file_bytes=max_file_mb << 20)
    click.echo(str(result))
