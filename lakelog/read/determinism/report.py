"""Say where, and why, two runs of the same training first differ: the determinism report.

The checks follow the order in which non-determinism enters a run: environment, sample ids (file
order), input tensors (transforms), RNG states, initial weights, forward outputs, loss, gradients,
update. Each check asks the lake one question (``queries/internal/determinism_*.sql``); the first
difference comes with its likely cause and fix.

This module reads the lake only (no torch); ``lakelog.check_determinism`` trains the two runs and then
calls ``determinism_report``. The verdicts with their causes and fixes come from ``causes``, the
report's data and text from ``findings``.
"""

from __future__ import annotations

import json
from typing import Any

from lakelog.errors import RunNotFoundError
from lakelog.lake.layout import RUN_FILE, Lake, check_run_name
from lakelog.read.determinism.causes import FIX_KERNELS as FIX_KERNELS
from lakelog.read.determinism.causes import FIX_LISTING as FIX_LISTING
from lakelog.read.determinism.causes import FIX_SEED as FIX_SEED
from lakelog.read.determinism.causes import FIX_SHUFFLE as FIX_SHUFFLE
from lakelog.read.determinism.causes import FIX_WORKERS as FIX_WORKERS
from lakelog.read.determinism.causes import Judge, worker_flag
from lakelog.read.determinism.findings import CHECKS as CHECKS
from lakelog.read.determinism.findings import NOT_LOGGED as NOT_LOGGED
from lakelog.read.determinism.findings import Check as Check
from lakelog.read.determinism.findings import DeterminismReport as DeterminismReport
from lakelog.read.determinism.findings import WorkerFlag as WorkerFlag
from lakelog.read.querylib import query
from lakelog.read.views import connect

RUN_NAMES = ("determinism-a", "determinism-b")


def _read_info(lake: Lake, name: str) -> dict[str, Any]:
    path = lake.join(check_run_name(name), RUN_FILE)
    if not lake.is_file(path):
        raise RunNotFoundError(f"run {name!r} not found in {lake.root} (no {RUN_FILE})")
    return json.loads(lake.read_text(path))


def _by_evidence(frame: Any) -> dict[str, dict[str, Any]]:
    return {row["evidence"]: row for row in frame.iter_rows(named=True)}


LAYER_OF_CHECK = {
    "sample_ids": "batch_order",
    "inputs": "inputs",
    "rng": "rng",
    "initial_weights": "initial_weights",
    "outputs": "predictions",
    "loss": "loss",
    "gradients": "gradients",
    "update": "weights",
}
"""The first_divergence layer (``lakelog diff``) that answers each check, for one verdict across both."""


def first_check(checks: list[Check], start: int | None) -> Check | None:
    """The check to read first: the earliest differing step, ties in causal order (the order of CHECKS:
    environment and seeding, sample order, inputs, RNG, initial weights, forward, loss, gradients,
    update). Environment comes before any step; initial weights count at the first step."""
    order = list(CHECKS)

    def when(c: Check) -> tuple[float, int]:
        if c.name == "environment":
            return (float("-inf"), 0)
        step = (start if start is not None else c.step) if c.name == "initial_weights" else c.step
        return (float(step or 0), order.index(c.name))

    differing = [c for c in checks if c.status == "differs"]
    return min(differing, key=when) if differing else None


def report_evidence(
    con: Any, run_a: str, run_b: str, *, loss_name: str = "loss", loss_tol: float = 0.0
) -> dict[str, Any]:
    """What the report reads besides the tensors, in its own step: ``lakelog diff`` reads it on a
    cursor of its own while first_divergence runs."""
    pair = {"run_a": run_a, "run_b": run_b}
    return {
        "workers": [
            (run, row)
            for run in (run_a, run_b)
            for row in query("internal.determinism_workers", con=con, run=run).iter_rows(named=True)
        ],
        "batches": query("internal.determinism_batches", con=con, **pair),
        "outputs": query(
            "internal.determinism_outputs", con=con, **pair, loss_name=loss_name, loss_tol=float(loss_tol)
        ),
        "worker_seeds": query("internal.determinism_worker_seeds", con=con, **pair).row(0, named=True),
    }


def report_on(
    con: Any,
    run_a: str,
    run_b: str,
    info: tuple[dict[str, Any], dict[str, Any]],
    *,
    root: str,
    loss_name: str = "loss",
    loss_tol: float = 0.0,
    tensors: dict[str, dict[str, Any]] | None = None,
    evidence: dict[str, Any] | None = None,
) -> DeterminismReport:
    """The report over an open connection holding both runs, given their run.json contents (what
    ``determinism_report`` and ``lakelog diff`` share, so they name the same first cause).

    ``tensors``: the initial_weights / gradients / update evidence (rows of determinism_params) when the
    caller has it already (``lakelog diff`` takes it from first_divergence, which reads only the first
    differing capture), instead of comparing every tensor of every capture again. ``evidence``: the
    rest, from ``report_evidence``, when the caller has read it already."""
    pair = {"run_a": run_a, "run_b": run_b}
    if evidence is None:
        evidence = report_evidence(con, run_a, run_b, loss_name=loss_name, loss_tol=loss_tol)
    flags = [WorkerFlag(run=run, **worker_flag(row)) for run, row in evidence["workers"]]
    judge = Judge(
        run_a,
        run_b,
        info,
        _by_evidence(evidence["batches"]),
        tensors
        if tensors is not None
        else _by_evidence(query("internal.determinism_params", con=con, **pair)),
        _by_evidence(evidence["outputs"]),
        evidence["worker_seeds"],
        flags,
    )
    checks = [Check(name, title, **judge.judge(name)) for name, title in CHECKS.items()]
    for c in checks:
        if c.status == "not logged":
            c.detail = f"log it with {NOT_LOGGED[c.name]}"
    first = first_check(checks, judge.start_step())
    return DeterminismReport(
        root=root, run_a=run_a, run_b=run_b, checks=checks, worker_flags=flags, first=first
    )


def determinism_report(
    root: Any,
    run_a: str = RUN_NAMES[0],
    run_b: str = RUN_NAMES[1],
    *,
    loss_name: str = "loss",
    loss_tol: float = 0.0,
) -> DeterminismReport:
    """Compare two runs of a lake that should be identical, check by check; reads only the lake (no torch)."""
    lake = Lake.open(root)
    info = (_read_info(lake, run_a), _read_info(lake, run_b))
    con = connect([lake.location(run_a), lake.location(run_b)])
    return report_on(con, run_a, run_b, info, root=lake.root, loss_name=loss_name, loss_tol=loss_tol)
