"""The screens of ``lakelog diff`` and ``lakelog doctor``, shared with ``lakelog demo`` (CLI printing only).

Each ``render_*`` prints a library result on a console; ``print_*`` computes and prints it. Tables go
through ``lakelog.cli.render.print_frame``, so they fit a terminal and stay whole when piped.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from lakelog.cli.render import console, fmt, print_frame
from lakelog.read.diff import DiffResult, diff_runs
from lakelog.read.doctor import Check, doctor

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
        f"  look there first: the layers after it usually differ because it did" + _cause_lines(r)
    )


def _cause_lines(r: DiffResult) -> str:
    """The first cause with its fix, in the lines check-determinism prints."""
    c = r.cause
    if not c:
        return ""
    where = "before training" if c["step"] is None else f"at step {c['step']}"
    lines = [f"FIRST DIFFERENCE: {c['title']} {where}", f"  what:  {c['detail']}"]
    lines += [f"  cause: {c['cause']}"] if c["cause"] else []
    lines += [f"  fix:   {c['fix']}"] if c["fix"] else []
    return "\n" + escape("\n".join(lines))


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
        print_frame(r.batch_kinds, out, title="Batches by kind")


RESUME_PARTS = {
    "weights": "weights",
    "optimizer": "optimizer state",
    "lr_scheduler": "LR scheduler",
    "rng": "RNG states",
    "loader": "loader position",
}


def _resume_lines(r: DiffResult, out: Console) -> None:
    """Per resume point: what the resumed process restored and what it did not, part by part."""
    for res in r.resume:
        verdict = (
            "[bold green]identical[/bold green]: every part was restored"
            if res["identical"]
            else "[bold red]not restored: "
            + escape(", ".join(RESUME_PARTS[p] for p in res["not_restored"]) or "see the layers")
            + "[/bold red]"
        )
        out.print(
            f"\n[bold]Resume[/bold]: {escape(res['run'])} ({res['side']}) resumed at step {res['step']} "
            f"(after step {res['after_step']}): {verdict}"
        )
        for part, label in RESUME_PARTS.items():
            v = res["restored"][part]
            out.print(Text(f"  {label:<16} {v['status']:<13} {v['detail']}"))


def render_diff(r: DiffResult, out: Console) -> None:
    """Print a DiffResult: the verdict, the layers, then the evidence at the first divergence."""
    out.print(f"[bold]lakelog diff[/bold] A={escape(r.run_a)} B={escape(r.run_b)} (tol {r.tol:g})")
    out.print(_headline(r))
    layers = r.layers.select([pl.col(k).alias(v) for k, v in LAYER_COLUMNS.items()])
    print_frame(layers, out, title="Layers of evidence, earliest divergence first", wide=120)
    _batch_lines(r, out)
    if not r.samples.is_empty():
        cols = ["step", "batch_idx", "sample_idx", "keys_a", "label_a", "pred_a", "pred_b", "max_abs_diff"]
        if r.samples["only_in"].is_not_null().any() or r.layer("batch_order")["status"] == "differs":
            cols = [*cols[:3], "sample_idx_b", "only_in", *cols[3:]]  # matched by key, not by position
        print_frame(
            r.samples,
            out,
            title=f"Samples that differ at step {r.samples['step'][0]}",
            columns=cols,
            max_rows=10,
        )
    if not r.params.is_empty():
        differ = r.params.filter(~pl.col("equal").fill_null(False))
        cols = ["name", "kind", "group", "equal", "norm_a", "norm_b", "rel_gap", "grad_equal"]
        print_frame(
            differ, out, title=f"Tensors that differ at step {r.params['step'][0]}", columns=cols, max_rows=10
        )
    if not r.group_drift.is_empty():
        print_frame(r.group_drift, out, title="Drift per parameter group (rank 1 drifted first)")
    _resume_lines(r, out)
    if not r.environment.is_empty():
        print_frame(r.environment, out, title="run.json differences (config, seed, environment)", max_rows=30)
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
    print_frame(summary, out, wide=160)
    if evidence:
        for c in checks:
            if c.status in ("warn", "error"):
                print_frame(c.evidence, out, title=f"{c.name}: evidence (query {c.query})", max_rows=15)
