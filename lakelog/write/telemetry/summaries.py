"""Summaries of many tensors at once: batched reductions on the device, one transfer to the host.

Why batched: a per-parameter loop of ``t.norm().item()`` waits for the device once per tensor.
Here every reduction of every tensor is queued (``torch._foreach_norm`` for all norms, one
``aminmax``/``sum`` per tensor, no ``.item()``), the results are stacked into one float64 tensor
per device, and ``Pack`` (lakelog/pack.py) ships that to the host with a single non-blocking copy.
Means, standard deviations and absmax are derived on the writer thread from the sums (``finish_stats``).

Raw columns on the device, per tensor: norm, sum, min, max, absmax, nan_count, inf_count and a
two-pass variance for small tensors (NaN where not computed). ``kinds`` tells the host how to read a
row: real, complex, sparse or empty. The weights of the last capture, for the update norm, are kept
by ``Previous`` (lakelog/previous_weights.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lakelog.write.fingerprint import algorithm_for, fingerprint_many, to_hex
from lakelog.write.telemetry.pack import F64, Pack

_HALF = (torch.float16, torch.bfloat16)
RAW = ("norm", "sum", "min", "max", "absmax", "nan_count", "inf_count", "var")
SMALL = 1 << 16
"""Tensors up to this size get a two-pass variance (cheap for them, and where cancellation bites:
BatchNorm/LayerNorm weights near 1); larger ones one derived from the sum and the norm."""


def kind_of(t: torch.Tensor) -> str:
    if t.numel() == 0:
        return "empty"
    if t.layout != torch.strided:
        return "sparse"
    return "complex" if t.is_complex() else "real"


def _real(t: torch.Tensor) -> torch.Tensor:
    """A view (or small copy) that norm/sum/aminmax accept: float8 and integer tensors are widened."""
    if t.dtype in (torch.float32, torch.float64) or t.dtype in _HALF:
        return t
    if t.is_floating_point():
        return t.float()
    return t.double() if t.dtype != torch.bool else t.float()


def _values(t: torch.Tensor) -> torch.Tensor:
    """The stored values of a sparse tensor (coalesced, so duplicates are summed first)."""
    return t.coalesce().values() if t.layout == torch.sparse_coo else t.to_sparse_coo().coalesce().values()


def tensor_stats(
    tensors: Sequence[torch.Tensor], *, full: bool = True, minmax: bool = True
) -> tuple[torch.Tensor, list[str]]:
    """Raw columns ``RAW`` of tensors on one device as an (n, 8) float64 tensor, and each row's kind.

    ``full=True`` (weights, buffers): min and max are those of the finite values, with NaN and Inf
    counted. ``full=False`` (gradients): norm, min and max only, NaN propagating; ``minmax=False`` as
    well (optimizer state): the norm alone, one pass. Sparse tensors are summarized from their
    coalesced values (on CUDA, coalescing waits for the device: sparse parameters are rare).
    """
    n = len(tensors)
    kinds = [kind_of(t) for t in tensors]
    device = tensors[0].device
    out = torch.full((n, len(RAW)), math.nan, dtype=F64, device=device)
    dense: list[tuple[int, torch.Tensor]] = []
    for i, (t, kind) in enumerate(zip(tensors, kinds, strict=True)):
        t = t.detach()
        if kind == "sparse":
            t = _values(t)
            kinds[i] = "sparse_complex" if t.is_complex() else "sparse"
        if kind == "empty":
            out[i, 0] = 0.0
        elif t.is_complex():
            out[i, 0] = torch.linalg.vector_norm(t).to(F64)
            out[i, 4] = torch.linalg.vector_norm(t, math.inf).to(F64)
            if full:
                out[i, 5] = torch.isnan(t).sum().to(F64)
                out[i, 6] = torch.isinf(t).sum().to(F64)
        elif t.numel():
            dense.append((i, _real(t)))
    if dense:
        block = _dense_block([x for _, x in dense], full, minmax or full)
        if len(dense) == n:  # the usual case: every tensor dense and real
            out = block
        else:
            index = torch.tensor([i for i, _ in dense])
            index = (index.pin_memory() if device.type == "cuda" else index).to(device, non_blocking=True)
            out[index] = block
    return out, kinds


def _dense_block(xs: list[torch.Tensor], full: bool, minmax: bool) -> torch.Tensor:
    """``RAW`` rows of dense real tensors, every reduction queued, none waited for.

    NaN/Inf counts and finite min/max read every element again. On the CPU, where looking at a
    result costs no device sync, that is done only for tensors whose norm is not finite (a NaN or
    Inf anywhere makes the sum of squares NaN or Inf); on accelerators, for every tensor.
    """
    device = xs[0].device
    k = len(xs)
    nan = torch.full((k,), math.nan, dtype=F64, device=device)
    norms: list[torch.Tensor] = [nan] * k
    for half in (False, True):
        ks = [j for j, x in enumerate(xs) if (x.dtype in _HALF) == half]
        if ks:
            vals = torch._foreach_norm([xs[j] for j in ks], 2, dtype=torch.float32 if half else None)
            for j, v in zip(ks, vals, strict=True):
                norms[j] = v
    norm = torch.stack(norms).to(F64)
    total = (
        torch.stack([x.sum(dtype=torch.float32 if x.dtype in _HALF else None) for x in xs]).to(F64)
        if full
        else nan
    )
    counts = torch.zeros((k, 2), dtype=F64, device=device)
    if not minmax:
        lo = hi = nan
    elif not full or device.type == "cpu":
        mm = [torch.aminmax(x) for x in xs]
        lo, hi = torch.stack([m.min for m in mm]).to(F64), torch.stack([m.max for m in mm]).to(F64)
        for j in torch.nonzero(~torch.isfinite(norm)).reshape(-1).tolist() if full else []:
            x = xs[j]
            finite = torch.isfinite(x)
            counts[j, 0] = torch.isnan(x).sum()
            counts[j, 1] = (~finite).sum() - counts[j, 0]
            values = x[finite]
            lo[j], hi[j] = torch.aminmax(values) if values.numel() else (math.nan, math.nan)
    else:
        finite = [torch.isfinite(x) for x in xs]
        counts[:, 0] = torch.stack([torch.isnan(x).sum() for x in xs])
        counts[:, 1] = torch.stack([(~f).sum() for f in finite]) - counts[:, 0]
        lo = torch.stack([torch.where(f, x, math.inf).amin() for x, f in zip(xs, finite, strict=True)]).to(
            F64
        )
        hi = torch.stack([torch.where(f, x, -math.inf).amax() for x, f in zip(xs, finite, strict=True)]).to(
            F64
        )
    var = nan
    if full:
        small = [
            torch.var(x.float() if x.dtype in _HALF else x) if 1 < x.numel() <= SMALL else nan[0] for x in xs
        ]
        var = torch.stack(small).to(F64)
    return torch.stack([norm, total, lo, hi, nan, counts[:, 0], counts[:, 1], var], dim=1)


def finish_stats(
    raw: np.ndarray, kinds: Sequence[str], numels: Sequence[int], *, full: bool = True, minmax: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Host side: the params columns (norm, mean, std, min, max, absmax, counts) from raw rows, and for
    each column where it applies (elsewhere the caller writes null; a NaN that applies stays NaN)."""
    raw = np.asarray(raw, dtype=np.float64).reshape(-1, len(RAW))
    norm, total, mn, mx, absmax, nan_count, inf_count, var2 = (raw[:, j].copy() for j in range(len(RAW)))
    n = np.asarray(numels, dtype=np.float64)
    kinds_a = np.asarray(kinds, dtype=object)
    present = kinds_a != "none"
    real = np.isin(kinds_a, ("real", "sparse"))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = total / n
        var = np.where((n > 1) & (n <= SMALL), var2, (norm * norm - total * total / n) / (n - 1))
        std = np.sqrt(np.maximum(var, 0.0))
        std[np.isnan(var)] = np.nan
        derived = np.maximum(np.abs(mn), np.abs(mx))
        if full:  # min and max are over the finite values; NaN, then Inf, anywhere decides absmax
            mn[np.isinf(mn)] = np.nan  # +inf/-inf: no finite value at all
            mx[np.isinf(mx)] = np.nan
            derived = np.where(
                nan_count > 0, np.nan, np.where(inf_count > 0, np.inf, np.fmax(np.abs(mn), np.abs(mx)))
            )
        absmax = np.where(real, derived, absmax)
    sparse = kinds_a == "sparse"
    mn = np.where(sparse, np.minimum(mn, 0.0), mn)  # implicit zeros take part in min and max
    mx = np.where(sparse, np.maximum(mx, 0.0), mx)
    nan_count[kinds_a == "empty"] = 0
    inf_count[kinds_a == "empty"] = 0
    cols = {"norm": norm, "mean": mean, "std": std, "min": mn, "max": mx, "absmax": absmax}
    cols["nan_count"], cols["inf_count"] = nan_count, inf_count
    valid = {
        "norm": present,
        "mean": real & full,
        "std": real & full & (n > 1),
        "min": real & (minmax or full) & ~(full & np.isnan(mn)),
        "max": real & (minmax or full) & ~(full & np.isnan(mx)),
        "absmax": present & (kinds_a != "empty") & ((minmax or full) | ~real),
        "nan_count": present & full,
        "inf_count": present & full,
    }
    return cols, valid


class Section:
    """Raw statistics (and fingerprints) of tensors, some None, computed per device into a ``Pack``."""

    def __init__(
        self,
        pack: Pack,
        key: str,
        tensors: Sequence[torch.Tensor | None],
        *,
        full: bool,
        fingerprint: bool,
        minmax: bool = True,
    ) -> None:
        self.n = len(tensors)
        self.kinds = ["none"] * self.n
        self.numels = [t.numel() if t is not None else 0 for t in tensors]
        self.full, self.minmax = full, minmax
        self._parts: list[tuple[list[int], str, str | None, str]] = []
        by_device: dict[torch.device, list[int]] = {}
        for i, t in enumerate(tensors):
            if t is not None:
                by_device.setdefault(t.device, []).append(i)
        for j, rows in enumerate(by_device.values()):
            ts = [tensors[i].detach() for i in rows]  # type: ignore[union-attr]
            raw, kinds = tensor_stats(ts, full=full, minmax=minmax)
            for i, kind in zip(rows, kinds, strict=True):
                self.kinds[i] = kind
            pack.add(f"{key}/{j}/stats", raw)
            fp_key = None
            if fingerprint:
                fp_key = f"{key}/{j}/fp"
                pack.add(fp_key, fingerprint_many(ts))
            self._parts.append((rows, f"{key}/{j}/stats", fp_key, algorithm_for(ts[0])))

    def columns(self, pack: Pack) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        raw = np.full((self.n, len(RAW)), np.nan)
        for rows, stats_key, _, _ in self._parts:
            raw[rows] = pack.get(stats_key)
        return finish_stats(raw, self.kinds, self.numels, full=self.full, minmax=self.minmax)

    def fingerprints(self, pack: Pack) -> list[str | None]:
        out: list[str | None] = [None] * self.n
        for rows, _, fp_key, algorithm in self._parts:
            if fp_key is not None:
                hexes = to_hex(torch.from_numpy(pack.get(fp_key).copy()).reshape(-1, 2), algorithm)
                for i, h in zip(rows, hexes, strict=True):
                    out[i] = h
        return out


def shape_text(t: torch.Tensor) -> str:
    return str(list(t.shape))


def dtype_text(t: torch.Tensor | Any) -> str:
    return str(t.dtype).removeprefix("torch.")
