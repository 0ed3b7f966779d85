"""Health checks on one run, good enough to gate CI: each judged only on what the run logged.

``doctor(root_or_con, run, **expectations)`` returns one ``Check`` per question (``CHECKS``):
vanishing or exploding gradients (per group and per layer), dead layers, frozen tensors, the
learning-rate ratios between groups, label imbalance, a model that is not learning, overfitting,
the first NaN/Inf, and too few updates per epoch. Statuses are in ``STATUSES`` (pass, note, warn,
error, skip); ``exit_code(checks, fail_on)`` is what ``lakelog doctor --fail-on`` exits with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lakelog.errors import InvalidArgumentError
from lakelog.read.diff import connect_runs
from lakelog.read.doctor import data, gradients, learning
from lakelog.read.doctor import expect as expect_mod
from lakelog.read.doctor.base import SEVERITY, STATUSES, Check, Context, Verdict, fmt

CHECKS: dict[str, Callable[[Context], Verdict]] = {
    "gradients": gradients.gradients,
    "dead_layers": gradients.dead_layers,
    "frozen_layers": gradients.frozen_layers,
    "lr_ratio": data.lr_ratio,
    "label_balance": data.label_balance,
    "not_learning": learning.not_learning,
    "overfitting": learning.overfitting,
    "nan_inf": data.nan_inf,
    "updates_per_epoch": data.updates_per_epoch,
}
"""Check name -> the function judging it, in the order ``doctor`` reports them."""

FAIL_ON = {"warn": 1, "error": 2, "never": 99}
"""``--fail-on`` levels: the smallest severity (``SEVERITY``) that makes ``doctor`` exit 1."""

__all__ = [
    "CHECKS",
    "FAIL_ON",
    "STATUSES",
    "Check",
    "coerce_expectations",
    "doctor",
    "exit_code",
    "expectation_names",
    "fmt",
]


def expectation_names() -> list[str]:
    """Every keyword ``doctor`` accepts."""
    return expect_mod.names()


def coerce_expectations(raw: Mapping[str, str]) -> dict[str, Any]:
    """Command-line strings to typed expectations (the type of each default)."""
    return expect_mod.coerce(raw)


def doctor(root_or_con: Any, run: str, **expectations: Any) -> list[Check]:
    """Run every health check on ``run`` (a name, or a run folder when a root is given).

    ``expectations`` (``expectation_names()``; defaults and meanings in
    ``lakelog.read.doctor.expect.EXPECTATIONS``) set thresholds, name metrics (``acc_name``,
    ``holdout_name``, ``loss_name``: otherwise found among common names) and give the expected LR
    ratios: ``lr_ratio='head/backbone=10'`` (several comma-separated) or ``{'head/backbone': 10}``.
    Raises InvalidArgumentError naming a bad expectation, RunNotFoundError for an unknown run.
    """
    given, ratios = expect_mod.check(expectations)
    con, (run,) = connect_runs(root_or_con, [run])
    ctx = Context(con=con, run=run, expect=given, lr_ratio=ratios)
    checks = []
    for name, judge in CHECKS.items():
        verdict = judge(ctx)
        checks.append(Check(name, verdict.status, verdict.summary, verdict.evidence, verdict.query or name))
    return checks


def exit_code(checks: list[Check], fail_on: str = "warn") -> int:
    """0 when no check reaches ``fail_on`` ('warn': warn or error; 'error': error only; 'never'), else 1."""
    if fail_on not in FAIL_ON:
        raise InvalidArgumentError(f"fail_on: expected one of {', '.join(FAIL_ON)}, got {fail_on!r}")
    return 1 if any(SEVERITY[c.status] >= FAIL_ON[fail_on] for c in checks) else 0
