"""``lakelog check ROOT``: list every file readers leave out, exit 1 when there is any (read side).

A missing root, or a root that is a file, is one line on stderr and exit code 2 (``lakelog.cli.base``).
"""

from __future__ import annotations

import sys

import click

from lakelog.cli.base import LakelogCommand
from lakelog.read.check import check


@click.command("check", cls=LakelogCommand)
@click.argument("root", default="runs")
@click.option("--quick", is_flag=True, help="Only the cheap checks readers make (no decoding of every file).")
def check_command(root: str, quick: bool) -> None:
    """List damaged files of a lake (unreadable run.json, corrupt or unreadable part files).

    Exit code 0 when nothing is damaged, 1 when something is (each file is printed with the reason),
    2 when ROOT does not exist or is a file. Example: lakelog check runs
    """
    report = check(root, deep=not quick)
    click.echo(str(report))
    sys.exit(0 if report.ok else 1)
