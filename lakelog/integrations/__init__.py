"""Callbacks for the trainers users already have; each module imports its framework, this one does not."""

from __future__ import annotations

from typing import Any

from lakelog.lake.checks import optional_positive_int


def check_watch_every(value: Any) -> int | None:
    """The callbacks' shared ``watch_every`` check: a positive int, or None for the trainer's default."""
    return optional_positive_int(value, "watch_every")
