"""lakelog: where, exactly, did two training runs stop being the same, and why.

Everything is imported on first use: the write side (``init``, ``log``…) brings torch, the read
side (``connect``, ``query``) brings DuckDB and polars, and neither loads the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakelog.errors import (
    DumpError,
    InvalidArgumentError,
    LakelogError,
    LakeNotWritableError,
    NoActiveRunError,
    QueryError,
    RunClosedError,
    RunExistsError,
    RunInUseError,
    RunNotFoundError,
    WriterFailedError,
)

if TYPE_CHECKING:
    from lakelog.write.run import Run

__version__ = "0.1.0"

_LAZY = {
    # the read side: DuckDB and polars, never torch
    "connect": "lakelog.read.views",
    "compact": "lakelog.lake.compact",
    "query": "lakelog.read.querylib",
    "diff_runs": "lakelog.read.diff",
    "DiffResult": "lakelog.read.diff",
    "determinism_report": "lakelog.read.determinism.report",
    # the write side: torch
    "init": "lakelog.write.api",
    "log": "lakelog.write.api",
    "log_predictions": "lakelog.write.api",
    "log_batch": "lakelog.write.api",
    "watch": "lakelog.write.api",
    "dump": "lakelog.write.api",
    "summary": "lakelog.write.api",
    "flush": "lakelog.write.api",
    "finish": "lakelog.write.api",
    "current_run": "lakelog.write.context",
    "Run": "lakelog.write.run",
    "seed_everything": "lakelog.write.determinism.seeding",
    "dataloader_generator": "lakelog.write.determinism.seeding",
    "should_stop": "lakelog.write.determinism.seeding",
    "seed_worker": "lakelog.write.determinism.workers",
    "record_workers": "lakelog.write.determinism.workers",
    "rng_fingerprints": "lakelog.write.determinism.rng",
    "check_determinism": "lakelog.check_determinism",
}
# Subpackages reachable as attributes (``from lakelog import plots``), imported on first use.
_LAZY_MODULES = {"plots": "lakelog.read.plots", "querylib": "lakelog.read.querylib"}


def __getattr__(name: str) -> Any:
    """Import the write side (and torch) only when a training script first touches it; the rest on first use."""
    import importlib

    if name in _LAZY_MODULES:
        value = importlib.import_module(_LAZY_MODULES[name])
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'lakelog' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "DumpError",
    "InvalidArgumentError",
    "LakeNotWritableError",
    "LakelogError",
    "NoActiveRunError",
    "QueryError",
    "Run",
    "RunClosedError",
    "RunExistsError",
    "RunInUseError",
    "RunNotFoundError",
    "WriterFailedError",
    "connect",
    "query",
    *_LAZY,
    *_LAZY_MODULES,
]
