"""Summaries of many tensors at once: batched reductions on the device, one transfer to the host.

Why batched: a per-parameter loop of ``t.norm().item()`` waits for the device once per tensor.
Here every reduction of every tensor is queued (``torch._foreach_norm`` for all norms, one
``aminmax``/``sum`` per tensor, no ``.item()``), the results are stacked into one float64 tensor
per device, and ``Pack`` ships that to the host with a single non-blocking copy. Means, standard
deviations and absmax are derived on the writer thread from the sums (``finish_stats``).

Raw columns on the device, per tensor: norm, sum, min, max, absmax, nan_count, inf_count and a
two-pass variance for small tensors (NaN where not computed). ``kinds`` tells the host how to read a
row: real, complex, sparse or empty. ``Previous`` keeps the weights of the last capture for the update
norm.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fingerprint import fingerprint_many, to_hex
from .hostcopy import HostCopy

F64 = torch.float64
_HALF = (torch.float16, torch.bfloat16)
RAW = ("norm", "sum", "min", "max", "absmax", "nan_count", "inf_count", "var")
SMALL = 1 << 16
"""Tensors up to this size get a two-pass variance (cheap for them, and where cancellation bites:
BatchNorm/LayerNorm weights near 1); larger ones one derived from the sum and the norm."""


class Pack:
    """Device tensors bound for the host, concatenated per device so each device makes one copy.

    int64 tensors (fingerprints) travel bit-cast as float64 and are cast back on the host, so
    statistics and fingerprints share the one transfer.
    """

    def __init__(self) -> None:
        self._parts: dict[torch.device, list[torch.Tensor]] = {}
        self._where: dict[str, tuple[torch.device, int, tuple[int, ...], bool]] = {}
        self._sizes: dict[torch.device, int] = {}
        self._copies: dict[torch.device, HostCopy] = {}
        self._host: dict[torch.device, np.ndarray] = {}

    def add(self, key: str, t: torch.Tensor) -> None:
        is_int = t.dtype == torch.int64
        flat = t.detach().reshape(-1)
        flat = flat.view(F64) if is_int else flat.to(F64)
        device = flat.device
        offset = self._sizes.get(device, 0)
        self._parts.setdefault(device, []).append(flat)
        self._sizes[device] = offset + flat.numel()
        self._where[key] = (device, offset, tuple(t.shape), is_int)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def send(self) -> None:
        """Start the copies (training thread); nothing waits for the device."""
        for device, parts in self._parts.items():
            self._copies[device] = HostCopy(torch.cat(parts) if len(parts) > 1 else parts[0])
        self._parts.clear()

    def get(self, key: str) -> np.ndarray:
        """The host array for ``key`` (writer thread: waits for its device's copy)."""
        device, offset, shape, is_int = self._where[key]
        if device not in self._host:
            self._host[device] = self._copies[device].numpy()
        size = math.prod(shape)
        out = self._host[device][offset : offset + size]
        return (out.view(np.int64) if is_int else out).reshape(shape)


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
        self._parts: list[tuple[list[int], str, str | None]] = []
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
            self._parts.append((rows, f"{key}/{j}/stats", fp_key))

    def columns(self, pack: Pack) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        raw = np.full((self.n, len(RAW)), np.nan)
        for rows, stats_key, _ in self._parts:
            raw[rows] = pack.get(stats_key)
        return finish_stats(raw, self.kinds, self.numels, full=self.full, minmax=self.minmax)

    def fingerprints(self, pack: Pack) -> list[str | None]:
        out: list[str | None] = [None] * self.n
        for rows, _, fp_key in self._parts:
            if fp_key is not None:
                hexes = to_hex(torch.from_numpy(pack.get(fp_key).copy()).reshape(-1, 2))
                for i, h in zip(rows, hexes, strict=True):
                    out[i] = h
        return out


def _diff_norm(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    if cur.shape != prev.shape or cur.dtype != prev.dtype or cur.layout != torch.strided:
        return torch.full((), math.nan, dtype=F64, device=cur.device)
    if prev.device != cur.device:
        prev = prev.to(cur.device, non_blocking=True)
    if cur.is_complex():
        return torch.linalg.vector_norm(cur - prev).to(F64)
    if cur.dtype not in (torch.float32, torch.float64):
        cur, prev = (
            (cur.double(), prev.double()) if not cur.is_floating_point() else (cur.float(), prev.float())
        )
    return torch.linalg.vector_norm(cur - prev).to(F64)


def _stacked(values: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    nan = torch.full((), math.nan, dtype=F64, device=device)
    return torch.stack([nan if v is None else v.to(device, F64, non_blocking=True) for v in values])


def update_norms(current: Sequence[torch.Tensor], previous: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """||current - previous|| per tensor, float64 on the first tensor's device; NaN where unknown."""
    vals = [
        _diff_norm(c.detach(), p) if p is not None else None for c, p in zip(current, previous, strict=True)
    ]
    return _stacked(vals, current[0].device)


_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


class Previous:
    """The weights at the previous capture, for ``update_norm``; kept where the user chose.

    ``device``: a copy next to the weights (fastest, doubles their memory); ``cpu``: a copy in host
    memory (pinned, filled without blocking when the weights are on an accelerator); ``disk``: a
    safetensors file written tensor by tensor, so no second copy of the model is ever held (the
    seed's choice; it waits for the device at each capture); None: no update norms.
    """

    def __init__(self, where: str | None, path: Path | None = None) -> None:
        self.where = where
        self.path = path
        self._kept: dict[str, torch.Tensor | None] | None = None
        self.known: list[bool] = []
        """After ``update``: which tensors had a previous value of the same shape and dtype."""

    def update(self, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """Update norms since the previous call (None the first time), then remember these tensors."""
        if self.where is None or not tensors:
            return None
        tensors = [t.detach() for t in tensors]
        previous = self._load(names)
        before = [previous.get(n) for n in names] if previous is not None else [None] * len(names)
        self.known = [
            p is not None and p.shape == t.shape and p.dtype == t.dtype and t.layout == torch.strided
            for p, t in zip(before, tensors, strict=True)
        ]
        if self.where == "disk":
            norms = update_norms(tensors, before) if previous is not None else None
            self._save(names, tensors)
            return norms
        return self._keep(names, tensors, before)

    def clear(self) -> None:
        self._kept = None
        if self.path is not None and self.path.exists():
            self.path.unlink()

    def _load(self, names: Sequence[str]) -> dict[str, torch.Tensor | None] | None:
        if self.where != "disk":
            return self._kept
        if self.path is None or not self.path.exists():
            return None
        from safetensors import safe_open

        out: dict[str, torch.Tensor | None] = {}
        with safe_open(str(self.path), framework="pt", device="cpu") as f:
            complex_names = set(json.loads((f.metadata() or {}).get("complex", "[]")))
            keys = set(f.keys())
            for name in names:
                t = f.get_tensor(name) if name in keys else None
                out[name] = torch.view_as_complex(t) if t is not None and name in complex_names else t
        return out

    def _keep(
        self, names: Sequence[str], tensors: list[torch.Tensor], before: list[torch.Tensor | None]
    ) -> torch.Tensor | None:
        """Difference norms against the kept copies, then the copies refreshed: for the common case (same
        device, floating point) three batched ops, ``kept -= current``, norms, ``kept <- current``."""
        kept = self._kept or {}
        norms: list[torch.Tensor | None] = [None] * len(tensors)
        fast = {
            i
            for i, (t, k) in enumerate(zip(tensors, self.known, strict=True))
            if k and t.is_floating_point() and before[i].device == t.device
        }  # type: ignore[union-attr]
        for half in (False, True):
            idx = [i for i in fast if (tensors[i].dtype in _HALF) == half]
            if idx:
                olds, curs = [before[i] for i in idx], [tensors[i] for i in idx]
                torch._foreach_sub_(olds, curs)
                for i, v in zip(
                    idx, torch._foreach_norm(olds, 2, dtype=torch.float32 if half else None), strict=True
                ):
                    norms[i] = v
                torch._foreach_copy_(olds, curs)
        for i, (name, t) in enumerate(zip(names, tensors, strict=True)):
            if t.layout != torch.strided:
                kept[name] = None
            elif i in fast:
                continue
            elif self.known[i]:
                norms[i] = _diff_norm(t, before[i])  # type: ignore[arg-type]
                before[i].copy_(t, non_blocking=True)  # type: ignore[union-attr]
            else:
                device = t.device if self.where == "device" else torch.device("cpu")
                pin = device.type == "cpu" and t.device.type == "cuda"
                kept[name] = torch.empty(t.shape, dtype=t.dtype, device=device, pin_memory=pin)
                kept[name].copy_(t, non_blocking=True)  # type: ignore[union-attr]
        self._kept = kept
        return _stacked(norms, tensors[0].device) if any(self.known) else None

    def _save(self, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
        """A safetensors file written one tensor at a time (``safetensors.save_file`` builds it all in memory)."""
        header: dict[str, Any] = {}
        datas, complex_names, offset = [], [], 0
        for name, t in zip(names, tensors, strict=True):
            t = t.detach()
            if t.layout != torch.strided or (t.dtype not in _ST_DTYPES and not t.is_complex()):
                continue
            if t.is_complex():
                t = torch.view_as_real(t.resolve_conj())
                complex_names.append(name)
            data = t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
            header[name] = {
                "dtype": _ST_DTYPES[t.dtype],
                "shape": list(t.shape),
                "data_offsets": [offset, offset + data.nbytes],
            }
            datas.append(data)
            offset += data.nbytes
        header["__metadata__"] = {"complex": json.dumps(complex_names)}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for data in datas:
                f.write(memoryview(data))
        os.replace(tmp, self.path)


def shape_text(t: torch.Tensor) -> str:
    return str(list(t.shape))


def dtype_text(t: torch.Tensor | Any) -> str:
    return str(t.dtype).removeprefix("torch.")
