"""``lakelog report``: a thin command over ``lakelog.read.report.build_report`` (read side: no torch).

A library error is one line on stderr and exit code 2 (``lakelog.cli.base``).
"""

from __future__ import annotations

from pathlib import Path

import click

from lakelog.cli.base import LakelogCommand
from lakelog.read.report import build_report


@click.command("report", cls=LakelogCommand)
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.option("--root", default=None, help="Lake root, when RUNS are run names rather than folders.")
@click.option(
    "--png",
    "png_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write every chart as a PNG into this folder (offline, via vl-convert).",
)
@click.option(
    "-m",
    "--metric",
    "metrics",
    multiple=True,
    help="Scalar to draw as a curve (repeatable) [default: the plain scalars, loss first].",
)
@click.option(
    "--sweep-metric",
    default=None,
    help="Summary key ranking a sweep [default: holdout/acc, val_acc, acc… whichever every run has].",
)
@click.option("--title", default=None, help="Page title.")
@click.option(
    "--max-points",
    type=click.IntRange(min=2),
    default=2000,
    show_default=True,
    help="Most points per series (steps are bucketed in SQL beyond that).",
)
@click.option(
    "--max-health-runs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="How many runs get a health section (the best by the sweep metric first).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal only].")
def report_command(
    runs: tuple[str, ...],
    output: Path,
    root: str | None,
    png_dir: Path | None,
    metrics: tuple[str, ...],
    sweep_metric: str | None,
    title: str | None,
    max_points: int,
    max_health_runs: int,
    progress: bool | None,
) -> None:
    """One self-contained HTML page about RUNS: curves, where two runs part, a sweep, each run's health.

    RUNS are run folders, lake roots (every run in them: a sweep), or run names under --root. The page
    holds its own copy of vega/vega-lite/vega-embed, so it opens with no network. A section appears only
    when it has something to show: the runs (one sortable column per config and summary value), the
    curves, for two runs where they part and the diff findings, for three or more (or two with
    --sweep-metric) the sweep charts, the holdout, and the health of the --max-health-runs best runs
    with the doctor findings. A run has one colour in every chart.

    \b
    Examples:
      lakelog report runs/baseline runs/candidate -o report.html
      lakelog report baseline candidate --root runs --png charts/
      lakelog report sweeps/svdd -o sweep.html --sweep-metric recall
    """
    result = build_report(
        list(runs),
        output,
        root=root,
        png_dir=png_dir,
        metrics=list(metrics) or None,
        sweep_metric=sweep_metric,
        title=title,
        max_points=max_points,
        max_health_runs=max_health_runs,
        show_progress=progress,
    )
    click.echo(f"wrote {result.path} ({len(result.charts)} charts)")
    for name, why in result.skipped:
        click.echo(f"  not drawn: {name}: {why}")
    if result.pngs:
        click.echo(f"wrote {len(result.pngs)} PNG files to {png_dir}")
