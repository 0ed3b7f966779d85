"""``lakelog diff A B`` and ``lakelog doctor RUN``: the library's answers on one screen.

``diff`` exits 0 when the runs are identical and 1 when they differ; ``doctor`` exits 0 when no
check warns and 1 otherwise. Errors (unknown run, nothing to compare) exit 2 with one line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from lakelog.cli.query import collect_params, pair_option, param_option, root_option
from lakelog.cli.render import console, fmt, frame_table
from lakelog.read.diff import DiffResult, diff_runs
from lakelog.read.doctor import Check, coerce_expectations, doctor

LAYER_COLUMNS = {
    "layer": "layer",
    "status": "status",
    "first_step": "step",
    "epoch": "epoch",
    "batch_idx": "batch",
    "n_compared": "compared",
    "n_differing": "differ",
    "detail": "detail",
}
"""first_divergence columns shown by ``lakelog diff``, with shorter headers."""


def _headline(r: DiffResult) -> str:
    if r.identical:
        return f"[bold green]identical[/bold green]: {escape(r.run_a)} and {escape(r.run_b)} match in every layer both captured"
    if r.first_layer is None:
        return (
            "[bold yellow]no layer differs[/bold yellow] on the steps both runs have, but they are not the same "
            "run (see the notes)"
        )
    first = r.layer(r.first_layer)
    where = f"step {first['first_step']}" + (
        f" (epoch {first['epoch']})" if first["epoch"] is not None else ""
    )
    return (
        f"[bold red]the runs part first in {r.first_layer}[/bold red] at {where}: {escape(first['detail'] or '')}\n"
        f"  look there first: the layers after it usually differ because it did"
    )


def _batch_lines(r: DiffResult, out: Console) -> None:
    b = r.batch
    if not b:
        return
    out.print(
        f"\n[bold]Batch at step {b['step']}[/bold]: {b['kind']}"
        + (
            f", {b['overlap']} of {max(b['n_a'] or 0, b['n_b'] or 0)} samples shared"
            if b["overlap"] is not None
            else ""
        )
    )
    pos = b["first_pos"] or 0
    ids_a, ids_b = b.get("ids_a") or [], b.get("ids_b") or []
    out.print(
        Text(f"  A: {fmt(ids_a[pos : pos + 8])}\n  B: {fmt(ids_b[pos : pos + 8])}  (from position {pos})")
    )
    if b.get("same_as_a_step") is not None:
        out.print(
            f"  [yellow]B's batch is A's batch of step {b['same_as_a_step']}[/yellow]: B replays an order from "
            "elsewhere in A (a restarted shuffle?)"
        )
    if not r.batch_kinds.is_empty():
        out.print(frame_table(r.batch_kinds, title="Batches by kind"))


def _resume_lines(r: DiffResult, out: Console) -> None:
    for res in r.resume:
        out.print(
            f"\n[bold]Resume[/bold]: {escape(res['run'])} ({res['side']}) resumed at step {res['step']}"
        )
        parts = []
        for layer, v in res["layers"].items():
            if v["status"] == "differs":
                parts.append(f"{layer} departs at step {v['first_step']}")
            elif v["status"] == "same":
                parts.append(f"{layer} replays the same")
            else:
                parts.append(f"{layer}: {v['status']}")
        out.print(Text("  " + "; ".join(parts)))
        if res["replays_a_step"] is not None:
            out.print(
                f"  [yellow]the resumed part feeds A's batches of step {res['replays_a_step']}[/yellow] "
                "(it restarted an earlier epoch's order)"
            )


def render_diff(r: DiffResult, out: Console) -> None:
    """Print a DiffResult: the verdict, the layers, then the evidence at the first divergence."""
    out.print(f"[bold]lakelog diff[/bold] A={escape(r.run_a)} B={escape(r.run_b)} (tol {r.tol:g})")
    out.print(_headline(r))
    layers = r.layers.select([pl.col(k).alias(v) for k, v in LAYER_COLUMNS.items()])
    out.print(frame_table(layers, title="Layers of evidence, earliest divergence first", wide=120))
    _batch_lines(r, out)
    if not r.samples.is_empty():
        cols = ["step", "batch_idx", "sample_idx", "keys_a", "label_a", "pred_a", "pred_b", "max_abs_diff"]
        out.print(
            frame_table(
                r.samples,
                title=f"Samples that differ at step {r.samples['step'][0]}",
                columns=cols,
                max_rows=10,
            )
        )
    if not r.params.is_empty():
        differ = r.params.filter(~pl.col("equal").fill_null(False))
        cols = ["name", "kind", "group", "equal", "norm_a", "norm_b", "rel_gap", "grad_equal"]
        out.print(
            frame_table(
                differ, title=f"Tensors that differ at step {r.params['step'][0]}", columns=cols, max_rows=10
            )
        )
    if not r.group_drift.is_empty():
        out.print(frame_table(r.group_drift, title="Drift per parameter group (rank 1 drifted first)"))
    _resume_lines(r, out)
    if not r.environment.is_empty():
        out.print(
            frame_table(r.environment, title="run.json differences (config, seed, environment)", max_rows=30)
        )
    for note in r.notes:
        out.print(f"[dim]note:[/dim] {escape(note)}")


def print_diff(root_or_con: Any, run_a: str, run_b: str, **options: Any) -> DiffResult:
    """``diff_runs`` then print it as ``lakelog diff`` does; returns the result (used by ``lakelog demo``)."""
    result = diff_runs(root_or_con, run_a, run_b, **options)
    render_diff(result, console())
    return result


def print_doctor(root_or_con: Any, run: str, *, evidence: bool = True, **expectations: Any) -> list[Check]:
    """``doctor`` then print the checks as ``lakelog doctor`` does; returns them (used by ``lakelog demo``)."""
    checks = doctor(root_or_con, run, **expectations)
    render_doctor(run, checks, console(), evidence=evidence)
    return checks


def render_doctor(run: str, checks: list[Check], out: Console, *, evidence: bool = True) -> None:
    """Print the checks: one line each, then the rows behind every warning."""
    out.print(f"[bold]lakelog doctor[/bold] {escape(run)}")
    summary = pl.DataFrame([{"check": c.name, "status": c.status, "summary": c.summary} for c in checks])
    out.print(frame_table(summary, wide=160))
    if evidence:
        for c in checks:
            if c.status == "warn":
                out.print(frame_table(c.evidence, title=f"{c.name}: evidence (query {c.query})", max_rows=15))


@click.command("diff")
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of tables.")
def diff_command(run_a: str, run_b: str, root: str, tol: float, loss_name: str, as_json: bool) -> None:
    """Where and how two runs part: the first layer of evidence that differs, at which step, which
    samples and parameters, how far each group drifted, and what differs in run.json.

    Runs are folders (runs/a) or names under --root. Exit code 0: identical, 1: they differ.
    """
    result = diff_runs(root, run_a, run_b, tol=tol, loss_name=loss_name)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), default=str, indent=1) + "\n")
    else:
        render_diff(result, console())
    sys.exit(0 if result.identical else 1)


@click.command("doctor")
@click.argument("run")
@root_option
@pair_option
@param_option
@click.option("--lr-ratio", help="Expected LR ratios between groups, e.g. 'head/backbone=10'.")
@click.option(
    "--evidence/--no-evidence", default=True, show_default=True, help="Show the rows behind each warning."
)
def doctor_command(
    run: str, root: str, pairs: tuple, params: tuple, lr_ratio: str | None, evidence: bool
) -> None:
    """Health checks on one run: vanishing/exploding gradients, frozen layers, LR ratios, label
    balance, overfitting, the first NaN/Inf, updates per epoch. Thresholds: -p NAME VALUE.

    Exit code 0: no warning, 1: at least one check warns.
    """
    given: dict[str, Any] = coerce_expectations(collect_params(pairs, params))
    if lr_ratio is not None:
        given["lr_ratio"] = lr_ratio
    checks = print_doctor(root, run, evidence=evidence, **given)
    sys.exit(1 if any(c.status == "warn" for c in checks) else 0)
