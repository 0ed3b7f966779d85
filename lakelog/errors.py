"""The errors lakelog raises: one base class, so callers can catch everything lakelog-specific at once."""


class LakelogError(Exception):
    """Base class of every error lakelog raises on purpose."""


class InvalidArgumentError(LakelogError, ValueError):
    """An argument has the wrong type, shape or value; the message names it and what was expected."""


class RunExistsError(LakelogError, FileExistsError):
    """The run folder already holds a run and the caller asked neither to resume nor to overwrite."""


class RunInUseError(RunExistsError):
    """Another live writer holds the run (and rank); the message names it (pid, host, start, heartbeat)."""


class RunNotFoundError(LakelogError, FileNotFoundError):
    """A run (or a lake root) that a reader asked for does not exist."""


class RunClosedError(LakelogError, RuntimeError):
    """Something was logged to a run after `finish()`."""


class NoActiveRunError(LakelogError, RuntimeError):
    """A module-level function (`lakelog.log`, …) was called before `lakelog.init`."""


class LakeNotWritableError(LakelogError, PermissionError):
    """The lake root cannot be written: it is a file, or read-only."""


class WriterFailedError(LakelogError, RuntimeError):
    """The background writer failed; the original error is chained as `__cause__`."""


class QueryError(LakelogError):
    """A query is unknown, lacks a parameter, or its SQL failed; the message points at the .sql file."""


class DumpError(LakelogError):
    """A dump cannot be written, read or compared (corrupt file, unsafe pickle, mismatched tensors)."""
