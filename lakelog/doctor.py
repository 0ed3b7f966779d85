"""The documented path ``lakelog.doctor``: a re-export of ``lakelog.read.doctor``."""

from lakelog.read.doctor import doctor

__all__ = ["doctor"]
