"""The options of ``run.watch``, checked on the caller's thread before any hook is attached."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import positive_int

FINGERPRINT_KINDS = ("param", "grad", "buffer", "optim")
KEEP = ("device", "cpu", "disk", None)


@dataclass
class Options:
    """What ``watch`` accepts besides the model and optimizer (see the README's Telemetry section)."""

    every: int = 100
    groups: Any = None
    holdout: Any = None
    holdout_every: int | None = None
    keep_previous: str | None = "cpu"
    fingerprints: Any = True
    step: Any = None
    prefix: str = ""
    initial: bool = True


def parse_options(options: dict[str, Any]) -> Options:
    names = [f.name for f in fields(Options)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise InvalidArgumentError(f"watch: unknown option(s) {unknown}; expected some of {names}")
    opts = Options(**options)
    positive_int(opts.every, "every")
    if opts.holdout_every is None:
        opts.holdout_every = opts.every
    if positive_int(opts.holdout_every, "holdout_every") % opts.every:
        raise InvalidArgumentError(
            f"holdout_every: expected a multiple of every={opts.every}, got {opts.holdout_every}"
        )
    if opts.keep_previous == "none":
        opts.keep_previous = None
    if opts.keep_previous not in KEEP:
        raise InvalidArgumentError(f"keep_previous: expected one of {KEEP}, got {opts.keep_previous!r}")
    if opts.step is not None and opts.step != "optimizer" and not callable(opts.step):
        raise InvalidArgumentError(
            f"step: expected None, 'optimizer' or a callable returning the step, got {opts.step!r}"
        )
    fp = opts.fingerprints
    kinds = set(FINGERPRINT_KINDS) if fp is True else set() if fp is False or fp is None else None
    if kinds is None:
        kinds = {fp} if isinstance(fp, str) else set(fp) if isinstance(fp, list | tuple | set) else {None}
        if not kinds <= set(FINGERPRINT_KINDS):
            raise InvalidArgumentError(
                f"fingerprints: expected True, False or some of {FINGERPRINT_KINDS}, got {fp!r}"
            )
    opts.fingerprints = kinds
    return opts
