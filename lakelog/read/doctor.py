"""Health checks on one run: the seeds' "common issues", each answered by a query (read side: no torch).

``doctor(root_or_con, run, **expectations)`` returns one ``Check`` per question: vanishing or
exploding gradients, frozen layers, learning-rate ratios between groups, label imbalance,
overfitting, the first NaN/Inf, and too few updates per epoch. A check that lacks the data it needs
(nothing logged for it) is ``skip``, with the summary saying what to log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from lakelog.errors import InvalidArgumentError
from lakelog.read import querylib
from lakelog.read.diff import connect_runs

STATUSES = ("pass", "warn", "skip")


@dataclass
class Check:
    """One health check: ``status`` is pass, warn or skip; ``evidence`` the query's rows."""

    name: str
    status: str
    summary: str
    evidence: pl.DataFrame
    query: str


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _gradients(df: pl.DataFrame, p: dict[str, Any]) -> tuple[str, str]:
    if df.is_empty():
        return "skip", "no gradient norms logged (run.watch(model, optimizer) captures them)"
    bad = df.filter(pl.col("status") != "ok").to_dicts()
    if bad:
        parts = [
            f"{r['group']} {r['status']}"
            + (
                f" from step {r['first_exploding_step']} (max {_fmt(r['max_norm'])})"
                if r["status"] == "exploding"
                else f" (median {_fmt(r['median_norm'])})"
            )
            for r in bad
        ]
        return "warn", "; ".join(parts)
    medians = ", ".join(f"{r['group']} {_fmt(r['median_norm'])}" for r in df.to_dicts())
    return (
        "pass",
        f"median gradient norm per group within [{_fmt(p['vanish'])}, {_fmt(p['explode'])}]: {medians}",
    )


def _frozen(df: pl.DataFrame, p: dict[str, Any]) -> tuple[str, str]:
    if df.is_empty():
        return "skip", "no update norms logged (run.watch captures them from the second capture on)"
    frozen = df.filter(pl.col("status").is_in(["frozen", "partly frozen"]))
    if not frozen.is_empty():
        names = ", ".join(frozen["name"].head(5).to_list()) + (" ..." if frozen.height > 5 else "")
        first = frozen["first_frozen_step"].min()
        return "warn", (
            f"{frozen.height} tensor(s) got gradients but did not move (first at step {first}): {names}; "
            "are they in the optimizer, with a non-zero LR?"
        )
    still = df.filter(pl.col("status") == "no gradient")
    note = f"; {still.height} tensor(s) get no gradient at all (frozen on purpose?)" if still.height else ""
    return "pass", f"every tensor with a gradient was updated{note}"


def _lr(df: pl.DataFrame, p: dict[str, Any]) -> tuple[str, str]:
    if df.is_empty():
        return "skip", "fewer than two lr/<group> scalars logged (run.watch logs them per optimizer group)"
    rows = df.to_dicts()
    if all(r["status"] == "observed" for r in rows):
        seen = ", ".join(f"{r['pair']} = {_fmt(r['last_ratio'])}" for r in rows)
        return "skip", f"no expected ratio given (e.g. lr_ratio='head/backbone=10'); observed {seen}"
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        parts = []
        for r in bad:
            if r["status"] == "wrong":
                parts.append(
                    f"{r['pair']} is {_fmt(r['first_ratio'])} at first, {_fmt(r['last_ratio'])} at the end, "
                    f"expected {_fmt(r['expected'])} (off from step {r['first_off_step']})"
                )
            else:
                parts.append(f"{r['pair']}: {r['status']}")
        return "warn", "; ".join(parts)
    return "pass", "; ".join(f"{r['pair']} = {_fmt(r['expected'])} as expected" for r in rows)


def _labels(df: pl.DataFrame, p: dict[str, Any]) -> tuple[str, str]:
    if df.is_empty():
        return "skip", "no labels logged (log_predictions(..., labels=...))"
    shares = ", ".join(f"class {r['class']} {100 * (r['share'] or 0):.0f}%" for r in df.to_dicts())
    ratio = df["imbalance"][0]
    if df["status"][0] == "imbalanced":
        return "warn", f"imbalanced training labels ({_fmt(ratio)}x between most and least common): {shares}"
    return "pass", f"balanced enough ({_fmt(ratio)}x, limit {_fmt(p['max_ratio'])}x): {shares}"


def _overfit(df: pl.DataFrame, p: dict[str, Any]) -> tuple[str, str]:
    if df.is_empty() or df["train_acc"].null_count() == df.height:
        return "skip", f"no training accuracy logged (the scalar {p['acc_name']!r})"
    r = df.row(0, named=True)
    if r["status"] == "no holdout":
        return "skip", "no holdout accuracy logged (run.watch(..., holdout=...) or the scalar 'holdout/acc')"
    trend = (
        f"train accuracy {_fmt(r['train_start'])} -> {_fmt(r['train_end'])}, holdout {_fmt(r['holdout_end'])} "
        f"(chance {_fmt(r['chance'])})"
    )
    if r["status"] == "overfitting":
        return "warn", f"memorising: {trend}: the holdout stays near chance"
    if r["status"] == "gap":
        return "warn", f"generalisation gap {_fmt(r['gap'])}: {trend}"
    return "pass", trend


def _nan(df: pl.DataFrame, p: dict[str, Any]) -> tuple[str, str]:
    if df.is_empty():
        return (
            "pass",
            "no NaN or Inf in the logged predictions, scalars, gradients, weights or optimizer state",
        )
    r = df.row(0, named=True)
    return "warn", f"first NaN/Inf at step {r['step']} in {r['source']}: {r['name']} ({r['detail']})"


def _updates(df: pl.DataFrame, p: dict[str, Any]) -> tuple[str, str]:
    if df.is_empty():
        return "skip", "no steps logged"
    full = df.head(max(df.height - 1, 1))  # the last epoch may be cut short
    r = full.sort("batches_per_epoch").row(0, named=True)
    size = "" if r["batch_size"] is None else f" of {_fmt(r['batch_size'])} samples"
    if r["status"] == "too few":
        hint = ""
        suggested = r["suggested_batch_size"]
        if suggested and r["batch_size"] and 8 <= suggested < r["batch_size"]:
            hint = f"; batch size ~{suggested} would give ~200"
        return "warn", (
            f"only {r['batches_per_epoch']} batches{size} per epoch: {p['min_batches']}-{p['max_batches']} "
            f"is the sweet spot for enough gradient updates{hint}"
        )
    return "pass", f"{r['batches_per_epoch']} batches{size} per epoch"


CHECKS: dict[str, tuple[str, Callable[[pl.DataFrame, dict[str, Any]], tuple[str, str]]]] = {
    "gradients": ("grad_health", _gradients),
    "frozen_layers": ("frozen_layers", _frozen),
    "lr_ratio": ("lr_ratio", _lr),
    "label_balance": ("label_balance", _labels),
    "overfitting": ("overfitting", _overfit),
    "nan_inf": ("nan_inf", _nan),
    "updates_per_epoch": ("updates_per_epoch", _updates),
}
"""Check name -> (query name, verdict function)."""


def expectation_names() -> list[str]:
    """Every keyword ``doctor`` accepts: the checks' query parameters (and ``lr_ratio``)."""
    names = {p.name for q, _ in CHECKS.values() for p in querylib.get(q).params if p.name != "run"}
    return sorted(names | {"lr_ratio"})


def coerce_expectations(raw: Mapping[str, str]) -> dict[str, Any]:
    """Command-line strings to typed expectations (the type of each query parameter's default)."""
    params = {p.name: p for q, _ in CHECKS.values() for p in querylib.get(q).params if p.name != "run"}
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if name in params:
            out.update(
                querylib.get(
                    next(q for q, _ in CHECKS.values() if name in {p.name for p in querylib.get(q).params})
                ).coerce({name: text})
            )
        else:
            out[name] = text  # lr_ratio, or an unknown name that doctor() reports
    return out


def _expectations(given: Mapping[str, Any]) -> dict[str, Any]:
    allowed = set(expectation_names())
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise InvalidArgumentError(
            f"doctor: unknown expectation(s) {unknown}; expected some of {sorted(allowed)}"
        )
    out = dict(given)
    ratio = out.pop("lr_ratio", None)
    if ratio is not None:
        if "expected" in out:
            raise InvalidArgumentError("doctor: give lr_ratio or expected, not both")
        if isinstance(ratio, Mapping):
            ratio = json.dumps({str(k): float(v) for k, v in ratio.items()})
        elif not isinstance(ratio, str):
            raise InvalidArgumentError(
                f"lr_ratio: expected 'head/backbone=10' or a mapping like {{'head/backbone': 10}}, got {ratio!r}"
            )
        out["expected"] = ratio
    return out


def doctor(root_or_con: Any, run: str, **expectations: Any) -> list[Check]:
    """Run every health check on ``run`` (a name, or a run folder when a root is given).

    ``expectations`` override the checks' thresholds: vanish, explode, lr_ratio ('head/backbone=10'
    or {'head/backbone': 10}), rtol, max_ratio, acc_name, holdout_name, chance, margin, min_rise,
    max_gap, min_batches, max_batches (``expectation_names()`` lists them).
    """
    given = _expectations(expectations)
    con, (run,) = connect_runs(root_or_con, [run])
    checks = []
    for name, (qname, verdict) in CHECKS.items():
        q = querylib.get(qname)
        params = {k: v for k, v in given.items() if k in {p.name for p in q.params}}
        evidence = querylib.query(qname, con=con, run=run, **params)
        full = {p.name: p.default for p in q.params if not p.required} | params
        status, summary = verdict(evidence, full)
        checks.append(Check(name=name, status=status, summary=summary, evidence=evidence, query=qname))
    return checks
