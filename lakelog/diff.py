"""The documented path ``lakelog.diff``: a re-export of ``lakelog.read.diff``."""

from lakelog.read.diff import DiffResult, diff_runs

__all__ = ["DiffResult", "diff_runs"]
