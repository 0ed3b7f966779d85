"""``lakelog compare-dumps`` and ``lakelog import-dumps``: thin commands over the library.

compare-dumps never imports torch; import-dumps does (it reads torch.save files), only when run.
A library error is one line on stderr and exit code 2 (``lakelog.cli.base``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from lakelog.cli.base import LakelogCommand
from lakelog.cli.options import ByteSize
from lakelog.lake.dump_layout import IMPORT_MAX_BYTES, IMPORT_MAX_EXPANSION
from lakelog.read.dumps.compare import compare_dumps


def _default_out(run_a: str, run_b: str) -> Path:
    def clean(run: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(run).name or "run")

    return Path(f"compare-dumps-{clean(run_a)}-vs-{clean(run_b)}")


@click.command("compare-dumps", cls=LakelogCommand)
@click.argument("run_a")
@click.argument("run_b")
@click.option(
    "--filter",
    "filter_",
    default="all",
    show_default=True,
    metavar="all|GROUP=PREFIX|REGEX",
    help="Which tensors: all; GROUP=PREFIX[,PREFIX...] keeps names starting with a prefix "
    "(backbone=features.); anything else is a regex searched in the name (mlp, '^fc\\.').",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: ./compare-dumps-A-vs-B].",
)
@click.option("--root", default=None, help="Lake root, when A and B are run names rather than folders.")
@click.option("--optimizer", is_flag=True, help="Also compare optimizer state (momentum, Adam moments).")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal only].")
def compare_dumps_command(
    run_a: str,
    run_b: str,
    filter_: str,
    out: Path | None,
    root: str | None,
    optimizer: bool,
    progress: bool | None,
) -> None:
    """Where two runs' weights part: compare their dumps step by step, tensor by tensor.

    Dumps are matched by step. Writes OUT/dump_diffs (Parquet, a row per step and tensor: L2,
    cosine, max |a-b|, relative difference, exact equality), OUT/dump_steps, a JSON report and a
    six-panel chart (weights L2 and cosine, loss and accuracy of both runs and their differences)
    as HTML and PNG; prints a summary and the first step where any tensor differs.

    Exit code 0 when every step and tensor the runs share was compared (same or not), 1 when something
    was skipped (an unreadable dump, a step only one run dumped, a tensor of another shape: stderr
    says what), 2 on an error.

    \b
    Examples:
      lakelog compare-dumps runs/baseline runs/candidate
      lakelog compare-dumps baseline candidate --root runs --filter head=classifier.,fc. -o cmp
    """
    out = out if out is not None else _default_out(run_a, run_b)
    result = compare_dumps(
        run_a, run_b, filter=filter_, out=out, progress=progress, root=root, optimizer=optimizer
    )
    for line in result.summary_lines():
        click.echo(line)
    click.echo(f"wrote {', '.join(str(p) for p in result.files.values())}")
    skipped = result.skipped()
    if skipped:
        click.echo(f"lakelog: compare-dumps: not everything was compared: {'; '.join(skipped)}", err=True)
        sys.exit(1)


@click.command("import-dumps", cls=LakelogCommand)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--run", "run_name", required=True, help="Run to import into (created, or resumed if it exists)."
)
@click.option("--root", default="runs", show_default=True, help="Lake root holding the run.")
@click.option(
    "--steps-per-epoch",
    type=click.IntRange(min=1),
    default=None,
    help="Batches per epoch: step = epoch * N + batch [default: inferred from the gaps between dumps; "
    "required when they do not say].",
)
@click.option("--overwrite", is_flag=True, help="Replace dumps the run already has at the same steps.")
@click.option(
    "--skip-bad", is_flag=True, help="Go on past a refused or unreadable file; say how many were skipped."
)
@click.option(
    "--max-size",
    type=ByteSize(),
    default=IMPORT_MAX_BYTES,
    show_default="16G",
    help="Refuse a file that takes more than this in memory once loaded (16G, 500M, 2GB …).",
)
@click.option(
    "--max-expansion",
    type=click.FloatRange(min=1.0),
    default=IMPORT_MAX_EXPANSION,
    show_default=True,
    help="Refuse a zip entry that inflates more than this many times (torch.save does not compress).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal only].")
def import_dumps_command(
    directory: Path,
    run_name: str,
    root: str,
    steps_per_epoch: int | None,
    overwrite: bool,
    skip_bad: bool,
    max_size: int,
    max_expansion: float,
    progress: bool | None,
) -> None:
    """Import torch.save checkpoints (batch_dumps/epoch_XXX/batch_XXXX.pt) as safetensors dumps.

    Files are checked before loading (declared tensor sizes against the file, --max-size,
    --max-expansion), then loaded with torch.load(weights_only=True) with numpy scalars and arrays
    allowed; one that needs pickle to run code is refused, never executed. Each holds model_state_dict
    and optionally optimizer_state_dict, loss and acc. Files are ordered by (epoch, batch) and
    step = epoch * steps_per_epoch + batch; without --steps-per-epoch the epoch length is inferred
    from the dumps' spacing (a warning shows the mapping).

    Exit code 0 when every file was imported (or skipped with --skip-bad), 2 on an error.

    \b
    Example:
      lakelog import-dumps outputs/reference/batch_dumps --run reference --root runs
    """
    from lakelog.write.dumps.importer import import_dumps  # torch, only for this command

    written = import_dumps(
        directory,
        run_name,
        root=root,
        steps_per_epoch=steps_per_epoch,
        overwrite=overwrite,
        progress=progress,
        skip_bad=skip_bad,
        max_bytes=max_size,
        max_expansion=max_expansion,
    )
    click.echo(f"imported {len(written)} dumps into {Path(root) / run_name}")
    if written.skipped:
        click.echo(f"skipped {len(written.skipped)} file(s) (--skip-bad):", err=True)
        for _, why in written.skipped:
            click.echo(f"  {why}", err=True)
