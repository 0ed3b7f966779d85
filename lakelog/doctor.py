"""The documented path ``lakelog.doctor``: a re-export of ``lakelog.read.doctor``.

``doctor(root, run, **expectations)`` returns the checks; ``exit_code(checks, fail_on="warn")`` is
what ``lakelog doctor --fail-on`` exits with (0 or 1), for CI scripts written in Python.
"""

from lakelog.read.doctor import STATUSES, Check, doctor, exit_code

__all__ = ["STATUSES", "Check", "doctor", "exit_code"]
