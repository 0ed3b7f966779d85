"""The documented path ``lakelog.distributed``: a re-export of ``lakelog.write.distributed``."""

from lakelog.write.distributed import shared_run_name

__all__ = ["shared_run_name"]
