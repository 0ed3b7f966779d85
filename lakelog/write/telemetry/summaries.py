"""Summaries of many tensors at once: batched reductions, no device sync, one transfer to the host.

Why batched: a per-parameter loop of ``t.norm().item()`` waits for the device once per tensor.
On accelerators every reduction of every tensor is queued (``torch._foreach_norm`` for all norms,
in float64; one ``sum`` and masked ``amin``/``amax`` per weight tensor; no ``.item()``), the results
are stacked into one float64 tensor per device, and ``Pack`` (pack.py) ships that to the host with
a single non-blocking copy. On the CPU, where looking at a result is free, ``stats_cpu`` reduces
tensors together in float64 and does the NaN/Inf work only where a value is not finite; with a
watcher's ``Plans``, small CPU tensors are only copied at the hook (``flat_cpu``) and reduced on the
writer thread. Means, standard deviations and absmax are derived on the writer thread
(``finish_stats``), for all families of a capture in one call.

What is read, per kind of tensor: weights and buffers every column (norm, sum, finite min and max,
NaN and Inf counts, a two-pass variance for small tensors); gradients the norm and absmax (two
reads); optimizer state the norm (one read). ``kinds`` tells the host how to read a row: real,
complex, sparse or empty. The weights of the last capture, for the update norm, are kept by
``Previous`` (previous_weights.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from lakelog.write.fingerprint import algorithm_for, fingerprint_many, to_hex
from lakelog.write.telemetry.flat_cpu import FlatCopy, Plans, meta_text
from lakelog.write.telemetry.pack import F64, Pack
from lakelog.write.telemetry.stats_cpu import HALF, SMALL, cpu_block

_HALF = HALF
_FAST = (torch.float32, torch.float64, *HALF)
_CPU = torch.device("cpu")
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


KIND_CODES = {"none": 0, "real": 1, "sparse": 2, "complex": 3, "sparse_complex": 4, "empty": 5}


class RowFlags:
    """What ``finish_stats`` derives from the rows' kinds, sizes and families: the same at every capture
    of a layout, so a caller can keep it (``matches``) instead of deriving it again."""

    def __init__(
        self, kinds: Sequence[str], numels: Sequence[int], full: bool | np.ndarray, minmax: bool | np.ndarray
    ) -> None:
        self.kinds, self.numels = list(kinds), list(numels)
        codes = np.fromiter(map(KIND_CODES.__getitem__, kinds), dtype=np.int8, count=len(kinds))
        n = self.n = np.asarray(numels, dtype=np.float64)
        self.present, self.empty, self.sparse = codes != 0, codes == 5, codes == 2
        real = (codes == 1) | self.sparse
        full = np.asarray(full, dtype=bool)
        self.real_full = real & full
        self.std_ok = self.real_full & (n > 1)
        self.counted = self.present & full
        self.absmax_ok = self.present & ~self.empty & ((np.asarray(minmax, dtype=bool) | full) | ~real)
        self.two_pass = (n > 1) & (n <= SMALL)
        self.all_two_pass = bool(self.two_pass.all())
        self.any_sparse, self.any_empty = bool(self.sparse.any()), bool(self.empty.any())

    def matches(self, kinds: Sequence[str], numels: Sequence[int]) -> bool:
        return self.kinds == kinds and self.numels == numels


def finish_stats(
    raw: np.ndarray,
    kinds: Sequence[str],
    numels: Sequence[int],
    *,
    full: bool | np.ndarray = True,
    minmax: bool | np.ndarray = True,
    flags: RowFlags | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Host side: the params columns (norm, mean, std, min, max, absmax, counts) from raw rows, and for
    each column where it applies (elsewhere the caller writes null; a NaN that applies stays NaN).

    Weights (``full``) get every column, absmax derived from the finite min/max and the counts;
    gradients (``minmax`` only) their norm and the absmax computed on the device; optimizer state
    its norm. ``full`` and ``minmax`` are one flag for all rows or one per row, so the rows of several
    families are finished in one call; ``flags`` is a kept ``RowFlags`` of these arguments."""
    f = flags if flags is not None else RowFlags(kinds, numels, full, minmax)
    raw = np.asarray(raw, dtype=np.float64).reshape(-1, len(RAW))
    norm, total, mn, mx, absmax, nan_count, inf_count, var2 = raw.T.copy()
    n = f.n
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = total / n
        var = (
            var2
            if f.all_two_pass
            else np.where(f.two_pass, var2, (norm * norm - total * total / n) / (n - 1))
        )
        std = np.sqrt(np.maximum(var, 0.0))
        std[np.isnan(var)] = np.nan
        # Weights: min and max are over the finite values; NaN, then Inf, anywhere decides absmax
        # (other rows have NaN min/max/counts, which this leaves as they are).
        mn[np.isinf(mn)] = np.nan  # +inf/-inf: no finite value at all
        mx[np.isinf(mx)] = np.nan
        derived = np.where(
            nan_count > 0, np.nan, np.where(inf_count > 0, np.inf, np.fmax(np.abs(mn), np.abs(mx)))
        )
        absmax = np.where(f.real_full, derived, absmax)
    if f.any_sparse:
        mn = np.where(f.sparse, np.minimum(mn, 0.0), mn)  # implicit zeros take part in min and max
        mx = np.where(f.sparse, np.maximum(mx, 0.0), mx)
    if f.any_empty:
        nan_count[f.empty] = 0
        inf_count[f.empty] = 0
    cols = {"norm": norm, "mean": mean, "std": std, "min": mn, "max": mx, "absmax": absmax}
    cols["nan_count"], cols["inf_count"] = nan_count, inf_count
    valid = {
        "norm": f.present,
        "mean": f.real_full,
        "std": f.std_ok,
        "min": f.real_full & ~np.isnan(mn),
        "max": f.real_full & ~np.isnan(mx),
        "absmax": f.absmax_ok,
        "nan_count": f.counted,
        "inf_count": f.counted,
    }
    return cols, valid


class Section:
    """Raw statistics (and fingerprints) of tensors, some None, computed per device into a ``Pack``.

    With ``plans`` (a watcher's ``flat_cpu.Plans``), the small dense CPU tensors are copied flat in one
    call per dtype and read later (``flat_cpu.FlatCopy``); the others take the per-device path. ``x3``:
    whether CPU tensors are fingerprinted with ``x3`` (the flat path's algorithm), when the caller knows.
    ``meta`` is each row's (shape, dtype) text, None for a missing tensor."""

    def __init__(
        self,
        pack: Pack,
        key: str,
        tensors: Sequence[torch.Tensor | None],
        *,
        full: bool,
        fingerprint: bool,
        minmax: bool = True,
        plans: Plans | None = None,
        x3: bool | None = None,
    ) -> None:
        self.n = len(tensors)
        self.full, self.minmax = full, minmax
        self._parts: list[tuple[list[int], str, str | None, str]] = []
        self.flat: FlatCopy | None = None
        plan = None
        if x3 is None:
            x3 = algorithm_for(_CPU) == "x3"
        if plans is not None and tensors and (not fingerprint or x3):
            plan = plans.get(key, tensors, fingerprint)
        if plan is not None:
            self.plan = plan
            self.numels, self.meta, rest = plan.numels, plan.meta, plan.rest
            self.kinds = list(plan.kinds) if rest else plan.kinds
            if plan.order:
                self.flat = FlatCopy(plan, tensors)
        else:
            self.plan = None
            self.numels = [t.numel() if t is not None else 0 for t in tensors]
            self.meta = [None if t is None else meta_text(t.shape, t.dtype) for t in tensors]
            self.kinds = ["none"] * self.n
            rest = [i for i, t in enumerate(tensors) if t is not None]
        by_device: dict[torch.device, list[int]] = {}
        for i in rest:
            by_device.setdefault(tensors[i].device, []).append(i)  # type: ignore[union-attr]
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
        self._fingerprint = fingerprint

    @property
    def nbytes(self) -> int:
        """Bytes of host copies this section holds until it is read."""
        return self.flat.nbytes if self.flat is not None else 0

    def raw(self, pack: Pack, flat_raw: np.ndarray | None = None) -> np.ndarray:
        """The (n, 8) ``RAW`` rows (writer thread: waits for the device copies); ``flat_raw`` is what
        ``self.flat.raw`` gives, where the caller read several sections' copies together."""
        if self.flat is not None:
            if flat_raw is None:
                flat_raw = self.flat.raw(self.full, self.minmax)
            if not self._parts and self.flat.plan.in_order:
                return flat_raw
        raw = np.full((self.n, len(RAW)), np.nan)
        for rows, stats_key, _, _ in self._parts:
            raw[rows] = pack.get(stats_key)
        if self.flat is not None:
            raw[self.flat.plan.order] = flat_raw
        return raw

    def columns(self, pack: Pack) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return finish_stats(self.raw(pack), self.kinds, self.numels, full=self.full, minmax=self.minmax)

    def fingerprints(self, pack: Pack) -> list[str | None]:
        out: list[str | None] = [None] * self.n
        for rows, _, fp_key, algorithm in self._parts:
            if fp_key is not None:
                hexes = to_hex(torch.from_numpy(pack.get(fp_key).copy()).reshape(-1, 2), algorithm)
                for i, h in zip(rows, hexes, strict=True):
                    out[i] = h
        if self.flat is not None and self._fingerprint:
            hexes = self.flat.fingerprints()
            if not self._parts and self.flat.plan.in_order:
                return hexes  # type: ignore[return-value]
            for i, h in zip(self.flat.plan.order, hexes, strict=True):
                out[i] = h
        return out
