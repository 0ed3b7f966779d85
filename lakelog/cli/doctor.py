"""``lakelog doctor RUN``: the health checks of one run, one line each, then the rows behind each warning.

Exit codes: 0 when no check reaches ``--fail-on`` (warn: a warn or error; error: an error only;
never), 1 when one does, 2 for a library error (one line: a bad argument, an unknown run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import polars as pl

from lakelog.cli.base import LakelogCommand
from lakelog.cli.options import collect_params, output_options, pair_option, param_option, root_option
from lakelog.cli.render import console, emit
from lakelog.cli.screens import render_doctor
from lakelog.read.doctor import FAIL_ON, coerce_expectations, doctor, exit_code


@click.command("doctor", cls=LakelogCommand)
@click.argument("run")
@root_option
@pair_option
@param_option
@click.option("--lr-ratio", help="Expected LR ratios between groups, e.g. 'head/backbone=10'.")
@click.option(
    "--metric",
    "holdout_name",
    help="The scalar holding the holdout accuracy (default: found among common names).",
)
@click.option("--train-metric", "acc_name", help="The scalar holding the training accuracy (default: found).")
@click.option("--loss-metric", "loss_name", help="The scalar holding the training loss (default: found).")
@click.option(
    "--fail-on",
    type=click.Choice(list(FAIL_ON)),
    default="warn",
    show_default=True,
    help="Exit 1 when a check reaches this status: warn (warn or error), error, never.",
)
@click.option(
    "--evidence/--no-evidence", default=True, show_default=True, help="Show the rows behind each warning."
)
@output_options()
def doctor_command(
    run: str,
    root: str,
    pairs: tuple,
    params: tuple,
    lr_ratio: str | None,
    holdout_name: str | None,
    acc_name: str | None,
    loss_name: str | None,
    fail_on: str,
    evidence: bool,
    fmt: str,
    output: Path | None,
) -> None:
    """Health checks on one run: vanishing/exploding gradients (per group and per layer), dead
    layers, frozen tensors, LR ratios, label balance, not learning, overfitting, the first NaN/Inf,
    updates per epoch. Thresholds: -p NAME VALUE; metric names: --metric, --train-metric, --loss-metric.

    --format csv or json prints one row per check (check, status, summary, query).
    Statuses: pass, note, warn, error, skip. Exit code 0: no check reaches --fail-on (default warn),
    1: one does, 2: a bad argument or unknown run.
    """
    given: dict[str, Any] = coerce_expectations(collect_params(pairs, params))
    named = {"lr_ratio": lr_ratio, "holdout_name": holdout_name, "acc_name": acc_name, "loss_name": loss_name}
    given.update({k: v for k, v in named.items() if v is not None})
    checks = doctor(root, run, **given)
    if fmt == "table" and output is None:
        render_doctor(run, checks, console(), evidence=evidence)
    elif fmt == "table":
        with output.open("w", encoding="utf-8") as f:
            render_doctor(run, checks, console(file=f), evidence=evidence)
    else:
        rows = [{"check": c.name, "status": c.status, "summary": c.summary, "query": c.query} for c in checks]
        schema = {"check": pl.String, "status": pl.String, "summary": pl.String, "query": pl.String}
        emit(pl.DataFrame(rows, schema=schema), fmt, output)
    sys.exit(exit_code(checks, fail_on))
