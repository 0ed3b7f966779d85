"""Summaries of many tensors at once: batched reductions, no device sync, one transfer to the host.

Why batched: a per-parameter loop of ``t.norm().item()`` waits for the device once per tensor.
On accelerators every reduction of every tensor is queued (``torch._foreach_norm`` for all norms,
in float64; one ``sum`` and masked ``amin``/``amax`` per weight tensor; no ``.item()``), the results
are stacked into one float64 tensor per device, and ``Pack`` (pack.py) ships that to the host with
a single non-blocking copy. On the CPU, where looking at a result is free, ``stats_cpu`` reduces
small tensors together in float64 and does the NaN/Inf work only where a value is not finite. Means,
standard deviations and absmax are derived on the writer thread (``finish_stats``).

What is read, per kind of tensor: weights and buffers every column (norm, sum, finite min and max,
NaN and Inf counts, a two-pass variance for small tensors); gradients the norm and absmax (two
reads); optimizer state the norm (one read). ``kinds`` tells the host how to read a row: real,
complex, sparse or empty. The weights of the last capture, for the update norm, are kept by
``Previous`` (previous_weights.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lakelog.write.fingerprint import algorithm_for, fingerprint_many, to_hex
from lakelog.write.telemetry.pack import F64, Pack
from lakelog.write.telemetry.stats_cpu import HALF, SMALL, cpu_block

_HALF = HALF
_FAST = (torch.float32, torch.float64, *HALF)
RAW = ("norm", "sum", "min", "max", "absmax", "nan_count", "inf_count", "var")
# SMALL (from stats_cpu): tensors up to this size get a two-pass variance (cheap for them, and where
# cancellation bites: BatchNorm/LayerNorm weights near 1); larger ones one derived from the sum and norm.


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
) -> tuple[torch.Tensor | np.ndarray, list[str]]:
    """Raw columns ``RAW`` of tensors on one device as an (n, 8) float64 array, and each row's kind.

    ``full=True`` (weights, buffers): norm, sum, min and max of the finite values, NaN and Inf counts.
    ``full=False`` (gradients): norm and absmax only, NaN propagating; ``minmax=False`` as well
    (optimizer state): the norm alone, one pass. Norms never overflow for finite values (float64
    accumulation, or a float64 recount where float32 overflowed). Sparse tensors are summarized from
    their coalesced values (on CUDA, coalescing waits for the device: sparse parameters are rare).
    CPU tensors give a NumPy array (computed now), others a tensor on their device (queued).
    """
    n = len(tensors)
    kinds = ["real"] * n
    dense_at: list[int] = []
    dense: list[torch.Tensor] = []
    special: list[int] = []
    for i, t in enumerate(tensors):
        if t.layout == torch.strided and t.dtype in _FAST and t.numel():
            dense_at.append(i)
            dense.append(t.detach() if t.requires_grad else t)
        else:
            special.append(i)
    device = tensors[0].device
    on_cpu = device.type == "cpu"
    out = None
    if special:
        out = torch.full((n, len(RAW)), math.nan, dtype=F64, device=device)
        for i in special:
            t = tensors[i].detach()
            kinds[i] = kind = kind_of(t)
            if kind == "sparse":
                t = _values(t)
                kinds[i] = "sparse_complex" if t.is_complex() else "sparse"
            if kind == "empty":
                out[i, 0] = 0.0
            elif t.is_complex():
                out[i, 0] = torch.linalg.vector_norm(t.to(torch.complex128)).to(F64)
                out[i, 4] = torch.linalg.vector_norm(t, math.inf).to(F64)
                if full:
                    out[i, 5] = torch.isnan(t).sum().to(F64)
                    out[i, 6] = torch.isinf(t).sum().to(F64)
            elif t.numel():
                dense_at.append(i)
                dense.append(_real(t))
    if not dense:
        return (out.numpy() if on_cpu else out), kinds  # type: ignore[union-attr]
    if on_cpu:
        block = cpu_block(dense, full=full, minmax=minmax)
        if out is None:
            return block, kinds
        result = out.numpy()
        result[dense_at] = block
        return result, kinds
    dev_block = _dense_block(dense, full, minmax)
    if out is None:
        return dev_block, kinds
    index = torch.tensor(dense_at)
    index = (index.pin_memory() if device.type == "cuda" else index).to(device, non_blocking=True)
    out[index] = dev_block
    return out, kinds


def _dense_block(xs: list[torch.Tensor], full: bool, minmax: bool) -> torch.Tensor:
    """``RAW`` rows of dense real tensors on an accelerator, every reduction queued, none waited for.

    Norms accumulate in float64 (``_foreach_norm(..., dtype=float64)``, one fused launch set), so a
    finite tensor never has an infinite norm; sums likewise. Gradients get their absmax from one
    ``_foreach_norm(..., inf)``. Weights need the NaN/Inf counts and the min/max of the finite
    values of every tensor, since looking at a result first would wait for the device.
    """
    device = xs[0].device
    k = len(xs)
    nan = torch.full((k,), math.nan, dtype=F64, device=device)
    norm = torch.stack(torch._foreach_norm(xs, 2, dtype=F64))
    if not full:
        absmax = torch.stack(torch._foreach_norm(xs, math.inf)).to(F64) if minmax else nan
        return torch.stack([norm, nan, nan, nan, absmax, nan, nan, nan], dim=1)
    total = torch.stack([x.sum(dtype=F64) for x in xs])
    counts = torch.zeros((k, 2), dtype=F64, device=device)
    finite = [torch.isfinite(x) for x in xs]
    counts[:, 0] = torch.stack([torch.isnan(x).sum() for x in xs])
    counts[:, 1] = torch.stack([(~f).sum() for f in finite]) - counts[:, 0]
    lo = torch.stack([torch.where(f, x, math.inf).amin() for x, f in zip(xs, finite, strict=True)]).to(F64)
    hi = torch.stack([torch.where(f, x, -math.inf).amax() for x, f in zip(xs, finite, strict=True)]).to(F64)
    # Small tensors: a two-pass variance in float64, as on the CPU (BatchNorm weights near 1).
    var = torch.stack([torch.var(x.to(F64)) if 1 < x.numel() <= SMALL else nan[0] for x in xs])
    return torch.stack([norm, total, lo, hi, nan, counts[:, 0], counts[:, 1], var], dim=1)


def finish_stats(
    raw: np.ndarray, kinds: Sequence[str], numels: Sequence[int], *, full: bool = True, minmax: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Host side: the params columns (norm, mean, std, min, max, absmax, counts) from raw rows, and for
    each column where it applies (elsewhere the caller writes null; a NaN that applies stays NaN).

    Weights (``full``) get every column, absmax derived from the finite min/max and the counts;
    gradients (``minmax`` only) their norm and the absmax computed on the device; optimizer state
    its norm."""
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
        "min": real & full & ~np.isnan(mn),
        "max": real & full & ~np.isnan(mx),
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
            ts = [tensors[i] for i in rows]
            raw, kinds = tensor_stats(ts, full=full, minmax=minmax)  # type: ignore[arg-type]
            for i, kind in zip(rows, kinds, strict=True):
                self.kinds[i] = kind
            pack.put(f"{key}/{j}/stats", raw)
            fp_key = None
            if fingerprint:
                fp_key = f"{key}/{j}/fp"
                pack.put(fp_key, fingerprint_many(ts))  # type: ignore[arg-type]
            self._parts.append((rows, f"{key}/{j}/stats", fp_key, algorithm_for(ts[0])))  # type: ignore[arg-type]

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
