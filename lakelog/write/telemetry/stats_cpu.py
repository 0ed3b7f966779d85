"""Raw statistics of dense real CPU tensors, in the fewest passes and the fewest calls.

Why a CPU path of its own: on the CPU, reading a result costs no device sync, so the rare work
(NaN/Inf counts, the min and max of the finite values, a float64 norm where float32 overflowed) is
done only for the tensors that need it; and the fixed cost of a capture is Python and dispatch time
per tensor, so small tensors are reduced together.

- Small tensors (up to ``SMALL`` elements: biases, norms, most of a small model) are copied once into
  one float64 buffer and reduced with NumPy's ``reduceat``, a handful of calls for all of them.
  float64 makes their norms overflow-safe and their two-pass variance exact enough for BatchNorm
  weights near 1.
- Large tensors are reduced in place with torch's multithreaded kernels: ``_foreach_norm`` for all
  norms at once, one ``aminmax`` (and ``sum`` for weights) per tensor, the absmax of gradients from
  ``aminmax`` too. A float32 norm that overflows is recomputed in float64, so a finite tensor never
  has an infinite norm.

Columns are ``summaries.RAW``: norm, sum, min, max, absmax, nan_count, inf_count, var.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

HALF = (torch.float16, torch.bfloat16)
_NUMPY_FLOATS = (torch.float32, torch.float64, torch.float16)
F64 = torch.float64
SMALL = 1 << 16
"""Tensors up to this size are reduced in float64 (with a two-pass variance); larger ones in place."""

NORM, SUM, MIN, MAX, ABSMAX, NANS, INFS, VAR = range(8)


def _finite_minmax(x: np.ndarray | torch.Tensor) -> tuple[float, float]:
    values = x[np.isfinite(x)] if isinstance(x, np.ndarray) else x[torch.isfinite(x)]
    if not len(values):
        return math.nan, math.nan
    return float(values.min()), float(values.max())


def _counts(x: np.ndarray | torch.Tensor) -> tuple[float, float]:
    nans = float((np.isnan(x) if isinstance(x, np.ndarray) else torch.isnan(x)).sum())
    infs = float((np.isinf(x) if isinstance(x, np.ndarray) else torch.isinf(x)).sum())
    return nans, infs


class _Scratch(threading.local):
    """Buffers reused from capture to capture (one set per thread). Fresh large buffers would be new
    pages to fault in at every capture, which on a busy machine costs more than the arithmetic."""

    def __init__(self) -> None:
        self.flat = torch.empty(0, dtype=F64)
        self.tmp = np.empty(0)

    def get(self, n: int) -> tuple[torch.Tensor, np.ndarray]:
        if self.flat.numel() < n:
            self.flat = torch.empty(n + n // 4, dtype=F64)
            self.tmp = np.empty(n + n // 4)
        return self.flat[:n], self.tmp[:n]


_scratch = _Scratch()


def _small(xs: list[torch.Tensor], out: np.ndarray, full: bool, minmax: bool) -> None:
    """``out`` rows (len(xs), 8) for small tensors, from one float64 copy of all of them."""
    counts = np.fromiter((x.numel() for x in xs), dtype=np.int64, count=len(xs))
    ends = np.cumsum(counts)
    flat, tmp = _scratch.get(int(ends[-1]))
    a = flat.numpy()
    if all(x.dtype in _NUMPY_FLOATS for x in xs):  # NumPy's concatenate casts with less overhead
        np.concatenate([x.reshape(-1).numpy() for x in xs], out=a)
    else:  # bfloat16 and widened integers: each tensor cast straight into the buffer by torch
        torch.cat([x.reshape(-1) for x in xs], out=flat)
    flat_rows(a, tmp, counts, ends - counts, out, full, minmax)


def scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 arrays of ``n`` values, this thread's scratch: overwritten by the next call here."""
    flat, tmp = _scratch.get(n)
    return flat.numpy(), tmp


def float64_scratch(parts: list[np.ndarray], total: int) -> tuple[np.ndarray, np.ndarray]:
    """``parts`` cast into one float64 array of ``total`` values and a second array of that size, both
    this thread's scratch (``scratch``)."""
    a, tmp = scratch(total)
    if len(parts) == 1:
        np.copyto(a, parts[0])
    else:
        np.concatenate(parts, out=a)
    return a, tmp


@np.errstate(invalid="ignore", divide="ignore", over="ignore")  # NaN/Inf values are data here
def flat_rows(
    a: np.ndarray,
    tmp: np.ndarray,
    counts: np.ndarray,
    starts: np.ndarray,
    out: np.ndarray,
    full: bool,
    minmax: bool,
) -> None:
    """``out`` rows (len(counts), 8) of tensors laid out back to back in the float64 array ``a``
    (``counts`` values each, from ``starts``); ``tmp`` is scratch of ``a``'s size. A handful of NumPy
    calls for all of them; the NaN/Inf work only for the tensors whose norm is not finite.

    With ``full``, the norm comes from the two-pass variance's sum of squared deviations:
    ``||x||^2 = sum((x - mean)^2) + n * mean^2``, both terms non-negative (no cancellation, float64
    rounding); a tensor whose result is not finite gets its norm from its values directly."""
    if not full:
        out[:, NORM] = np.sqrt(np.add.reduceat(np.multiply(a, a, out=tmp), starts))
        if minmax:  # NaN propagates, as in the norm
            out[:, ABSMAX] = np.maximum.reduceat(np.abs(a, out=tmp), starts)
        return
    total = out[:, SUM] = np.add.reduceat(a, starts)
    out[:, MIN] = np.minimum.reduceat(a, starts)
    out[:, MAX] = np.maximum.reduceat(a, starts)
    out[:, NANS] = 0.0
    out[:, INFS] = 0.0
    mean = total / counts
    dev = np.subtract(a, np.repeat(mean, counts), out=tmp)  # two-pass variance, in the scratch
    squares = np.add.reduceat(np.multiply(dev, dev, out=tmp), starts)
    out[:, VAR] = np.where(counts > 1, squares / np.maximum(counts - 1, 1), math.nan)
    out[:, NORM] = np.sqrt(squares + counts * mean * mean)
    bad = np.flatnonzero(~np.isfinite(out[:, NORM]))  # a NaN or Inf in the tensor (or float64 overflow)
    if len(bad):
        ends = starts + counts
        for j in bad.tolist():
            part = a[starts[j] : ends[j]]
            out[j, NORM] = math.sqrt(float(np.dot(part, part)))
            out[j, NANS], out[j, INFS] = _counts(part)
            out[j, MIN], out[j, MAX] = _finite_minmax(part)


def _norms(xs: list[torch.Tensor]) -> list[float]:
    """L2 norms, overflow-safe: float32 (or float64) accumulation first, float64 where that overflowed.

    float16/bfloat16 accumulate in float64 at once (torch's CPU kernel would sum them in float32 one
    by one, off by ~1e-5 on large tensors)."""
    out: list[float] = [math.nan] * len(xs)
    for half in (False, True):
        ks = [j for j, x in enumerate(xs) if (x.dtype in HALF) == half]
        if ks:
            vals = torch._foreach_norm([xs[j] for j in ks], 2, dtype=F64 if half else None)
            for j, v in zip(ks, torch.stack(vals).tolist(), strict=True):
                out[j] = v
    for j, v in enumerate(out):
        if not math.isfinite(v):
            out[j] = float(torch._foreach_norm([xs[j]], 2, dtype=F64)[0])
    return out


def _large(xs: list[torch.Tensor], out: np.ndarray, full: bool, minmax: bool) -> None:
    """``out`` rows for large tensors, reduced in place; the rare work only where a value is not finite."""
    out[:, NORM] = _norms(xs)
    if not (full or minmax):
        return
    lo, hi = [], []
    for x in xs:
        m = torch.aminmax(x)
        lo.append(m.min)
        hi.append(m.max)
    mins = torch.stack(lo).to(F64).numpy()
    maxs = torch.stack(hi).to(F64).numpy()
    if not full:
        out[:, ABSMAX] = np.maximum(np.abs(mins), np.abs(maxs))  # NaN propagates, as in the norm
        return
    sums = torch.stack([x.sum(dtype=F64 if x.dtype in HALF else None) for x in xs]).tolist()
    out[:, MIN], out[:, MAX], out[:, SUM] = mins, maxs, sums
    out[:, NANS] = 0.0
    out[:, INFS] = 0.0
    for j, x in enumerate(xs):
        if not math.isfinite(out[j, NORM]):
            out[j, NANS], out[j, INFS] = _counts(x)
            out[j, MIN], out[j, MAX] = _finite_minmax(x)
        elif not math.isfinite(out[j, SUM]):  # every value finite, the float32 sum overflowed
            out[j, SUM] = float(x.sum(dtype=F64))


def cpu_block(xs: list[torch.Tensor], *, full: bool, minmax: bool) -> np.ndarray:
    """``RAW`` rows (len(xs), 8) of dense real CPU tensors (no empty ones); NaN where not computed."""
    out = np.full((len(xs), 8), math.nan)
    small = [j for j, x in enumerate(xs) if x.numel() <= SMALL]
    large = [j for j, x in enumerate(xs) if x.numel() > SMALL]
    for idx, fn in ((small, _small), (large, _large)):
        if idx:
            block = np.full((len(idx), 8), math.nan)
            fn([xs[j] for j in idx], block, full, minmax)
            out[idx] = block
    return out
