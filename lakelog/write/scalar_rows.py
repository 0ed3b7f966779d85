"""Rows of ``run.log``: scalars checked on the caller's thread and kept as tuples.

The common call (a dict of Python floats) is checked in two C-level passes; tensors go to the host
as one stacked copy per call, so logging a loss tensor never syncs the device on the training
thread. The writer thread turns many of these tuples into Arrow columns at once.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping
from typing import Any

import torch

from lakelog.errors import InvalidArgumentError
from lakelog.write.hostcopy import HostCopy


def _scalar_values(metrics: Mapping[str, Any]) -> tuple[list[str], list[float], list[str], HostCopy | None]:
    """Split metrics into plain numbers and tensors; tensors go to the host as one stacked copy per call."""
    names: list[str] = []
    values: list[float] = []
    tensor_names: list[str] = []
    tensors: list[torch.Tensor] = []
    for name, value in metrics.items():
        kind = type(value)
        if (kind is float or kind is int) and type(name) is str and name:  # the common case, checked cheaply
            names.append(name)
            values.append(_as_float(name, value))
            continue
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"log: metric names must be non-empty strings, got {name!r}")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise InvalidArgumentError(
                    f"log: {name!r} must be a number or a one-element tensor, got shape {tuple(value.shape)}"
                )
            if value.is_complex():
                raise InvalidArgumentError(f"log: {name!r} is a complex tensor; log its real part or abs()")
            tensor_names.append(name)
            tensors.append(value)
        elif isinstance(value, numbers.Real):  # numpy scalars, bools, fractions
            names.append(name)
            values.append(_as_float(name, value))
        else:
            raise InvalidArgumentError(
                f"log: {name!r} must be a Python number or a one-element tensor, got {type(value).__name__}"
            )
    pending = None
    if len(tensors) == 1:  # the common case (a loss): no stack, the conversion to float64 is the copy
        t = tensors[0]
        pending = HostCopy(t, dtype=torch.float64 if t.is_cpu or t.is_cuda else torch.float32)
    elif tensors:
        device = tensors[0].device
        if any(t.device != device for t in tensors):
            tensors = [t.to(device, non_blocking=True) for t in tensors]
        with torch.no_grad():  # one stack (with type promotion) and one copy, whatever the number of metrics
            stacked = torch.stack([t if t.ndim == 0 else t.reshape(()) for t in tensors])
        wide = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
        pending = HostCopy(stacked, dtype=wide)
    return names, values, tensor_names, pending


def _plain_floats(metrics: dict) -> bool:
    """True when every name is a non-empty str and every value a Python float."""
    return (
        set(map(type, metrics.values())) <= _FLOAT and set(map(type, metrics)) <= _STR and "" not in metrics
    )


def _as_float(name: str, value: numbers.Real) -> float:
    try:
        number = float(value)
    except OverflowError:
        shown = f"an int of {value.bit_length()} bits" if isinstance(value, int) else repr(value)[:40]
        raise InvalidArgumentError(
            f"log: {name!r} is {shown}, which does not fit in a float64 (scalars are stored as float64, "
            "up to about 1.8e308)"
        ) from None
    return number


_FLOAT = frozenset((float,))
_STR = frozenset((str,))


ScalarRow = tuple[int, int, list[str], list[float], list[str], "HostCopy | None", int]


def scalar_row(metrics: Mapping[str, Any], *, step: int, epoch: int) -> ScalarRow:
    """Check one ``log`` call and keep it as a tuple; the writer thread turns many of them into columns."""
    if type(metrics) is dict and _plain_floats(metrics):  # the common case: two C-level passes, no loop
        names, values, tensor_names, pending = list(metrics), list(metrics.values()), [], None
    elif not isinstance(metrics, Mapping):
        raise InvalidArgumentError(f"log: expected a mapping of name to value, got {type(metrics).__name__}")
    else:
        names, values, tensor_names, pending = _scalar_values(metrics)
    return step, epoch, names, values, tensor_names, pending, int(time.time() * 1e6)
