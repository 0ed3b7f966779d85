"""The documented path ``lakelog.dumps``: a re-export of ``lakelog.write.dumps.writer``."""

from lakelog.write.dumps.writer import DumpWriter, load_dump, optimizer_state_dict

__all__ = ["DumpWriter", "load_dump", "optimizer_state_dict"]
