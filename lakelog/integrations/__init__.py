"""Callbacks for the trainers users already have; each module imports its framework, this one does not."""

from __future__ import annotations

from typing import Any

from lakelog.errors import InvalidArgumentError


def check_watch_every(value: Any) -> int | None:
    """The callbacks' shared ``watch_every`` check: a positive int, or None for the trainer's default."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidArgumentError(f"watch_every: expected a positive int or None, got {value!r}")
    return value
