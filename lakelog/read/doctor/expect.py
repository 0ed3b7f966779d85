"""The expectations ``doctor`` accepts: typed thresholds, metric names and the expected LR ratios.

Every expectation has a default whose type is the type a command-line string is converted to;
``lr_ratio`` ('head/backbone=10', several comma-separated, or {'head/backbone': 10}) is parsed
here into (numerator, denominator, ratio) triples that the ``lr_ratio`` query gets as bound
parameters, one pair at a time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import did_you_mean

AUTO = ""
"""A metric name of ``AUTO`` is looked up among the names users commonly log."""

EXPECTATIONS: dict[str, tuple[Any, str]] = {
    "vanish": (1e-07, "a group gradient norm below this counts as vanishing"),
    "explode": (1000.0, "a group gradient norm above this counts as exploding"),
    "explode_share": (0.1, "the share of captured steps above 'explode' before a group counts as exploding"),
    "vanish_ratio": (1e-4, "early layers' gradient RMS below this fraction of the late layers' is vanishing"),
    "window": (0.5, "the last fraction of the captured steps over which a dead tensor's gradient stays 0"),
    "rtol": (0.01, "relative tolerance on an LR ratio"),
    "max_ratio": (2.0, "how many times below its fair share (1 / classes) a label may fall"),
    "acc_name": (AUTO, "the scalar holding the training accuracy ('' = look among common names)"),
    "holdout_name": (AUTO, "the scalar holding the holdout accuracy ('' = look among common names)"),
    "loss_name": (AUTO, "the scalar holding the training loss ('' = look among common names)"),
    "chance": (-1.0, "accuracy of guessing; below 0: from the classes and the labels"),
    "margin": (0.05, "an accuracy within this of chance counts as at chance"),
    "min_rise": (0.1, "how much the training accuracy must rise to count as learning"),
    "max_gap": (0.25, "a train - holdout accuracy gap above this is reported"),
    "warmup": (0.2, "the first fraction of the steps that 'not learning' leaves out"),
    "min_drop": (0.05, "the relative loss decrease below which the loss counts as not decreasing"),
    "min_batches": (100, "fewest batches per epoch in the sweet spot (below: a note)"),
    "max_batches": (500, "most batches per epoch in the sweet spot"),
    "warn_batches": (30, "fewer batches per epoch than this warns, when the data would fill more"),
    "min_batch_size": (32, "the smallest batch size worth suggesting"),
    "min_total": (2000, "a run with at least this many updates in all is not short of updates"),
}
"""Expectation name -> (default, what it means). ``lr_ratio`` is the one more, without a default."""


def names() -> list[str]:
    return sorted([*EXPECTATIONS, "lr_ratio"])


def coerce(raw: Mapping[str, str]) -> dict[str, Any]:
    """Command-line strings to typed expectations (the type of each default); unknown names kept for ``check``."""
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if name not in EXPECTATIONS:
            out[name] = text
            continue
        default = EXPECTATIONS[name][0]
        if isinstance(default, str):
            out[name] = text
            continue
        try:
            out[name] = int(text) if isinstance(default, int) else float(text)
        except ValueError:
            kind = "an integer" if isinstance(default, int) else "a number"
            raise InvalidArgumentError(f"parameter {name!r}: expected {kind}, got {text!r}") from None
    return out


def check(given: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, float]] | None]:
    """The expectations with their defaults filled in, and the parsed ``lr_ratio`` (None when not given)."""
    unknown = sorted(set(given) - set(names()))
    if unknown:
        hint = did_you_mean(unknown[0], names())
        raise InvalidArgumentError(
            f"doctor: unknown expectation(s) {unknown}{hint}; expected some of {names()}"
        )
    out = {name: default for name, (default, _) in EXPECTATIONS.items()}
    for name, value in given.items():
        if name == "lr_ratio":
            continue
        default = EXPECTATIONS[name][0]
        if isinstance(default, str):
            if not isinstance(value, str):
                raise InvalidArgumentError(f"{name}: expected a scalar name (str), got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise InvalidArgumentError(f"{name}: expected a number, got {value!r}")
        elif isinstance(default, int) and value != int(value):
            raise InvalidArgumentError(f"{name}: expected an integer, got {value!r}")
        out[name] = type(default)(value)
    ratio = given.get("lr_ratio")
    return out, None if ratio is None else parse_lr_ratio(ratio)


def parse_lr_ratio(value: Any) -> list[tuple[str, str, float]]:
    """'head/backbone=10' (comma-separated for several) or {'head/backbone': 10} -> [('head', 'backbone', 10.0)]."""
    example = "'head/backbone=10' or a mapping like {'head/backbone': 10}"
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        items = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            pair, sep, number = part.partition("=")
            if not sep:
                raise InvalidArgumentError(f"lr_ratio: expected {example}, got {part!r} (no '=')")
            items.append((pair, number.strip()))
    else:
        raise InvalidArgumentError(f"lr_ratio: expected {example}, got {value!r}")
    if not items:
        raise InvalidArgumentError(f"lr_ratio: expected {example}, got {value!r} (no pair)")
    out = []
    for pair, number in items:
        num, sep, den = (s.strip() for s in pair.partition("/"))
        if not sep or not num or not den or "/" in den:
            raise InvalidArgumentError(f"lr_ratio: expected a pair 'numerator/denominator', got {pair!r}")
        try:
            ratio = float(number)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"lr_ratio[{pair!r}]: expected a number, got {number!r}") from None
        if not math.isfinite(ratio) or ratio <= 0:
            raise InvalidArgumentError(f"lr_ratio[{pair!r}]: expected a positive number, got {number!r}")
        out.append((num, den, ratio))
    return out
