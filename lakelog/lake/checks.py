"""Argument checks shared by every layer: each error names the argument, what was expected, what was given.

They run on the caller's thread, before anything is queued, so a bad value fails where it was passed.
Integers are stored as Parquet int64, so every int check also enforces that range.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any

from lakelog.errors import InvalidArgumentError

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _int_at_least(value: Any, arg: str, low: int, expected: str) -> int:
    """The slow path of the int checks: numpy integers, bools, other types, out-of-range values."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{arg}: expected {expected}, got {type(value).__name__} {value!r}")
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise InvalidArgumentError(f"{arg}: expected {expected} that fits in int64, got {number}")
    if number < low:
        raise InvalidArgumentError(f"{arg}: expected {expected}, got {number}")
    return number


def positive_int(value: Any, arg: str) -> int:
    """``value`` as an int ≥ 1 (numpy integers accepted; bools refused)."""
    if type(value) is int and 1 <= value <= INT64_MAX:  # the common case, without a call
        return value
    return _int_at_least(value, arg, 1, "a positive int")


def non_negative_int(value: Any, arg: str) -> int:
    """``value`` as an int ≥ 0 (numpy integers accepted; bools refused); runs on every log call."""
    if type(value) is int and 0 <= value <= INT64_MAX:  # the common case, without a call
        return value
    return _int_at_least(value, arg, 0, "a non-negative int")


def optional_positive_int(value: Any, arg: str) -> int | None:
    """None, or ``value`` as an int ≥ 1."""
    return None if value is None else positive_int(value, arg)


def optional_non_negative_int(value: Any, arg: str) -> int | None:
    """None, or ``value`` as an int ≥ 0."""
    return None if value is None else non_negative_int(value, arg)


def _as_number(value: Any, arg: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{arg}: expected {expected}, got {type(value).__name__} {value!r}")
    number = float(value)
    if number != number:
        raise InvalidArgumentError(f"{arg}: expected {expected}, got NaN")
    return number


def positive_number(value: Any, arg: str) -> float:
    """``value`` as a float > 0 (ints and numpy numbers accepted; bools and NaN refused)."""
    number = _as_number(value, arg, "a positive number")
    if number <= 0:
        raise InvalidArgumentError(f"{arg}: expected a positive number, got {value!r}")
    return number


def non_negative_number(value: Any, arg: str) -> float:
    """``value`` as a float ≥ 0 (ints and numpy numbers accepted; bools and NaN refused)."""
    number = _as_number(value, arg, "a number >= 0")
    if number < 0:
        raise InvalidArgumentError(f"{arg}: expected a number >= 0, got {value!r}")
    return number


def did_you_mean(given: str, known: Any) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``known`` to ``given``, or "" when none is close."""
    close = difflib.get_close_matches(str(given), [str(k) for k in known], n=3, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"
