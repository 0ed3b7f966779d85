"""``lakelog diff A B``: where and how two runs part, on one screen (or as rows for a program).

Exit code 0 when the runs are identical and 1 when they differ; a library error (unknown run,
nothing to compare) is one line and exit code 2 (``lakelog.cli.base``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lakelog.cli.base import LakelogCommand
from lakelog.cli.options import output_options, root_option
from lakelog.cli.render import console, emit, json_text
from lakelog.cli.screens import render_diff
from lakelog.lake.progress import busy
from lakelog.read.diff import diff_runs


@click.command("diff", cls=LakelogCommand)
@click.argument("run_a")
@click.argument("run_b")
@root_option
@click.option(
    "--tol",
    type=float,
    default=0.0,
    show_default=True,
    help="Largest |logit difference| still counted as equal (0: bit-identical).",
)
@click.option("--loss-name", default="loss", show_default=True, help="The scalar holding the training loss.")
@output_options()
@click.option("--json", "as_json", is_flag=True, help="Same as --format json: the whole result as JSON.")
@click.option("--progress/--no-progress", default=None, help="Elapsed time on long work [default: terminal].")
def diff_command(
    run_a: str,
    run_b: str,
    root: str,
    tol: float,
    loss_name: str,
    fmt: str,
    output: Path | None,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Where and how two runs part: the first layer of evidence that differs, at which step, which
    samples and parameters, how far each group drifted, and what differs in run.json.

    Runs are folders (runs/a) or names under --root. --format table prints the screen; json the whole
    result; csv the layers table (one row per layer). Exit code 0: identical, 1: they differ.
    """
    with busy("diff: comparing the runs", show=progress):
        result = diff_runs(root, run_a, run_b, tol=tol, loss_name=loss_name)
    fmt = "json" if as_json else fmt
    if fmt == "json":
        text = json_text(result.to_dict())
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
    elif fmt == "csv":
        emit(result.layers, "csv", output)
    elif output is None:
        render_diff(result, console())
    else:
        with output.open("w", encoding="utf-8") as f:
            render_diff(result, console(file=f))
    sys.exit(0 if result.identical else 1)
