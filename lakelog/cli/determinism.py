"""``lakelog check-determinism -- python train.py …``: run a training script twice, say what differs.

The script runs unchanged except for two lines: ``lakelog.init(...)`` (which writes where the variables
below say) and, optionally, ``if lakelog.should_stop(step): break`` to stop after ``--steps`` steps.
No torch import here: the script's processes train, this one only reads the lake.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import click

from lakelog.cli.base import LakelogCommand
from lakelog.cli.render import json_text
from lakelog.errors import LakelogError
from lakelog.lake.checker_env import MAX_STEPS as ENV_MAX_STEPS
from lakelog.lake.checker_env import MODE as ENV_MODE
from lakelog.lake.checker_env import ROOT as ENV_ROOT
from lakelog.lake.checker_env import RUN_NAME as ENV_RUN_NAME
from lakelog.lake.layout import RUN_FILE
from lakelog.lake.progress import busy
from lakelog.read.determinism.report import RUN_NAMES, determinism_report


def _run_script(
    command: list[str], *, root: str, name: str, steps: int, timeout: float | None, show: bool
) -> float:
    env = {**os.environ, ENV_ROOT: root, ENV_RUN_NAME: name, ENV_MODE: "overwrite", ENV_MAX_STEPS: str(steps)}
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, env=env, capture_output=not show, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise LakelogError(f"command: cannot run {command[0]!r} ({exc.strerror})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LakelogError(f"run {name!r}: the script ran longer than --timeout {timeout:g} s") from exc
    if done.returncode != 0:
        tail = ((done.stdout or "") + (done.stderr or ""))[-3000:]
        raise LakelogError(
            f"run {name!r}: the script exited with code {done.returncode}" + (f":\n{tail}" if tail else "")
        )
    if not os.path.isfile(os.path.join(root, name, RUN_FILE)):
        raise LakelogError(
            f"run {name!r}: the script wrote no run to {root}: it must call lakelog.init(), which writes where "
            f"{ENV_ROOT} and {ENV_RUN_NAME} say"
        )
    return time.monotonic() - started


@click.command(
    "check-determinism",
    cls=LakelogCommand,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--steps",
    "-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Steps each run trains (the script stops when lakelog.should_stop(step) says so).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Lake folder for the two runs (default: a new temporary folder, kept and printed).",
)
@click.option("--loss-name", default="loss", show_default=True, help="The scalar holding the training loss.")
@click.option("--timeout", type=float, default=None, help="Seconds each run may take.")
@click.option(
    "--show-output", is_flag=True, help="Stream the script's output (by default shown only if it fails)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--progress/--no-progress", default=None, help="Elapsed time while each run trains [default: terminal]."
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def check_determinism_command(
    steps: int,
    root: str | None,
    loss_name: str,
    timeout: float | None,
    show_output: bool,
    as_json: bool,
    progress: bool | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND twice (a training script that calls lakelog.init) and report the first difference.

    The checks follow the determinism guide: environment, sample ids (file order), input tensors
    (transforms), RNG states, initial weights, forward outputs, loss, gradients, update; each
    difference comes with its likely cause and fix. Exit code 0: identical; 1: the runs differ.

    Example: lakelog check-determinism --steps 20 -- python train.py --config cfg.yaml
    """
    root = os.path.abspath(root) if root else tempfile.mkdtemp(prefix="lakelog-determinism-")
    ticking = False if show_output else progress  # the script's own output owns the terminal then
    for i, name in enumerate(RUN_NAMES, 1):
        if not as_json:
            click.echo(f"run {i}/2 ({name}): training {steps} steps …", err=True)
        with busy(f"run {i}/2 ({name})", show=ticking):
            took = _run_script(
                list(command), root=root, name=name, steps=steps, timeout=timeout, show=show_output
            )
        if not as_json:
            click.echo(f"run {i}/2 ({name}) done in {took:.1f} s", err=True)
    with busy("comparing the two runs", show=ticking):
        report = determinism_report(root, *RUN_NAMES, loss_name=loss_name)
    if as_json:
        click.echo(json_text(report.to_dict()), nl=False)
    else:
        click.echo(report.to_text())
        click.echo(
            f"\nThe runs are kept in {root}: `lakelog diff {root}/{RUN_NAMES[0]} {root}/{RUN_NAMES[1]}`"
        )
    raise SystemExit(0 if report.identical else 1)
