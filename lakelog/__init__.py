"""lakelog: where, exactly, did two training runs stop being the same, and why.

Everything is imported on first use: the write side (``init``, ``log``…) brings torch, the read
side (``connect``, ``query``) brings DuckDB and polars, and neither loads the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    DumpError,
    InvalidArgumentError,
    LakelogError,
    LakeNotWritableError,
    NoActiveRunError,
    QueryError,
    RunClosedError,
    RunExistsError,
    RunNotFoundError,
    WriterFailedError,
)

if TYPE_CHECKING:
    from .run import Run

__version__ = "0.1.0"

_LAZY = {
    "connect": "lakelog.views",
    "query": "lakelog.querylib",
    "init": "lakelog.api",
    "log": "lakelog.api",
    "log_predictions": "lakelog.api",
    "log_batch": "lakelog.api",
    "watch": "lakelog.api",
    "dump": "lakelog.api",
    "summary": "lakelog.api",
    "flush": "lakelog.api",
    "finish": "lakelog.api",
    "current_run": "lakelog.run",
    "seed_everything": "lakelog.determinism",
    "seed_worker": "lakelog.determinism",
    "dataloader_generator": "lakelog.determinism",
    "record_workers": "lakelog.determinism",
    "rng_fingerprints": "lakelog.determinism",
    "should_stop": "lakelog.determinism",
    "determinism_report": "lakelog.check_determinism",
    "diff_runs": "lakelog.diff",
    "DiffResult": "lakelog.diff",
    "Run": "lakelog.run",
}


def __getattr__(name: str) -> Any:
    """Import the write side (and torch) only when a training script first touches it; the rest on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lakelog' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
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
    "RunNotFoundError",
    "WriterFailedError",
    "connect",
    "query",
    *_LAZY,
]
