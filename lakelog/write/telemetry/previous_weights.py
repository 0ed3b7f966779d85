"""The weights at the previous capture, and the update norm ``||w_now - w_previous||`` against them.

Why it exists: ``update_norm``/``update_ratio`` need the last captured weights, and where they live
(next to the weights, in host memory or in a safetensors file on disk) is a memory/speed choice the
user makes with ``watch(keep_previous=...)``. This module owns that store and the difference norms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors import safe_open

from lakelog.lake.dump_layout import SAFETENSORS_DTYPES
from lakelog.lake.files import write_stream_atomic
from lakelog.write.telemetry.flat_cpu import FlatCopy
from lakelog.write.telemetry.flat_cpu import update_norms as flat_update_norms
from lakelog.write.telemetry.summaries import _HALF, F64, SMALL


def _diff_norm(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    if cur.shape != prev.shape or cur.dtype != prev.dtype or cur.layout != torch.strided:
        return torch.full((), math.nan, dtype=F64, device=cur.device)
    if prev.device != cur.device:
        prev = prev.to(cur.device, non_blocking=True)
    if cur.is_complex():
        return torch.linalg.vector_norm(cur.to(torch.complex128) - prev.to(torch.complex128)).to(F64)
    if cur.dtype != torch.float64:  # float64 arithmetic: the difference and its norm cannot overflow
        cur, prev = cur.double(), prev.double()
    return torch.linalg.vector_norm(cur - prev)


def _update_in_place_cpu(olds: list[torch.Tensor], curs: list[torch.Tensor]) -> list[float]:
    """``||cur - old||`` per pair, leaving ``old == cur``.

    Large tensors take the three steps back to back, so the kept copy is still in cache for the second
    and third; small ones (where the cost is calls, not bytes) take them as three batched calls. A
    float32 norm that overflowed is recomputed in float64 before the copy is refreshed."""
    out = [math.nan] * len(olds)
    small = [j for j, old in enumerate(olds) if old.numel() <= SMALL and old.dtype not in _HALF]
    if small:
        olds_s, curs_s = [olds[j] for j in small], [curs[j] for j in small]
        torch._foreach_sub_(olds_s, curs_s)
        for j, v in zip(small, torch.stack(torch._foreach_norm(olds_s)).tolist(), strict=True):
            out[j] = v if math.isfinite(v) else float(torch._foreach_norm([olds[j]], 2, dtype=F64)[0])
        torch._foreach_copy_(olds_s, curs_s)
    done = set(small)
    for j, (old, cur) in enumerate(zip(olds, curs, strict=True)):
        if j in done:
            continue
        old.sub_(cur)
        v = float(torch._foreach_norm([old], 2, dtype=F64 if old.dtype in _HALF else None)[0])
        if not math.isfinite(v):  # float32 accumulation overflowed (or the difference is not finite)
            v = float(torch._foreach_norm([old], 2, dtype=F64)[0])
        old.copy_(cur)
        out[j] = v
    return out


def _stacked(values: list[torch.Tensor | float | None], device: torch.device) -> torch.Tensor:
    if device.type == "cpu":  # one host tensor from the numbers (reading a CPU tensor costs no sync)
        return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=F64)
    nan = torch.full((), math.nan, dtype=F64, device=device)
    return torch.stack([nan if v is None else v.to(device, F64, non_blocking=True) for v in values])


def update_norms(current: Sequence[torch.Tensor], previous: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """||current - previous|| per tensor, float64 on the first tensor's device; NaN where unknown."""
    vals = [
        _diff_norm(c.detach(), p) if p is not None else None for c, p in zip(current, previous, strict=True)
    ]
    return _stacked(vals, current[0].device)


@dataclass
class Update:
    """One capture's update norms, in two parts: the per-tensor ones (``norms``, for rows ``rest``, queued
    on the device; ``known`` per such row) and the flat copies to compare (``flat``: previous copy,
    current copy, their row names), compared on the writer thread."""

    rest: list[int]
    norms: torch.Tensor | None
    known: list[bool]
    flat: tuple[FlatCopy, FlatCopy, Sequence[str], Sequence[str]] | None

    def columns(self, norms: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Writer thread: (update norm, known) per row from ``norms`` (the host copy of ``self.norms``);
        None when nothing had a previous value to compare with."""
        if norms is None and self.flat is None:
            return None
        if norms is None and self.flat[1].plan.in_order:  # type: ignore[index]
            return flat_update_norms(*self.flat)  # type: ignore[misc]
        values, known = np.full(n, math.nan), np.zeros(n, dtype=bool)
        if norms is not None:
            values[self.rest], known[self.rest] = norms, self.known
        if self.flat is not None:
            order = self.flat[1].plan.order
            values[order], known[order] = flat_update_norms(*self.flat)
        return values, known


_ST_DTYPES = {
    getattr(torch, name): st for st, (name, _) in SAFETENSORS_DTYPES.items() if hasattr(torch, name)
}


class Previous:
    """The weights at the previous capture, for ``update_norm``; kept where the user chose.

    ``device``: a copy next to the weights (fastest, doubles their memory); ``cpu``: a copy in host
    memory (pinned, filled without blocking when the weights are on an accelerator); ``disk``: a
    safetensors file written tensor by tensor, so no second copy of the model is ever held (it
    waits for the device at each capture); None: no update norms.
    """

    def __init__(self, where: str | None, path: Path | None = None) -> None:
        self.where = where
        self.path = path
        self._kept: dict[str, torch.Tensor | None] | None = None
        self._flat: tuple[FlatCopy, Sequence[str]] | None = None
        self.known: list[bool] = []
        """After ``update``: which tensors had a previous value of the same shape and dtype."""

    def update_capture(
        self, names: Sequence[str], tensors: Sequence[torch.Tensor], flat: FlatCopy | None
    ) -> Update | None:
        """A capture's update norms: the rows of ``flat`` (the capture's flat copy of small weights) against
        the previous capture's copy, which is kept instead of a second copy (not for ``disk``, which never
        holds one); the other rows as ``update`` does. None without a store or tensors."""
        if self.where is None or not tensors:
            return None
        if flat is None or self.where == "disk":
            norms = self.update(names, tensors)
            return Update(list(range(len(names))), norms, self.known, None)
        pair = None
        if self._flat is not None:
            previous, prev_names = self._flat
            pair = (previous, flat, prev_names, names)
            if previous.plan is not flat.plan and self._kept:
                for i in flat.plan.order:  # rows now kept flat: drop their per-tensor copies
                    self._kept.pop(names[i], None)
        self._flat = (flat, names)
        rest = flat.plan.rest
        norms = self.update([names[i] for i in rest], [tensors[i] for i in rest]) if rest else None
        return Update(rest, norms, self.known if rest else [], pair)

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
        self._flat = None
        if self.path is not None and self.path.exists():
            self.path.unlink()

    def _load(self, names: Sequence[str]) -> dict[str, torch.Tensor | None] | None:
        if self.where != "disk":
            return self._kept
        if self.path is None or not self.path.exists():
            return None
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
        """Difference norms against the kept copies, then the copies refreshed, for the common case (same
        device, floating point) in place: ``kept -= current``, its norm, ``kept <- current``.

        On the CPU each tensor takes the three steps back to back, so its kept copy is still in cache
        for the second and third; on accelerators each step is one batched call over all tensors.
        Norms accumulate in float64 where float32 would overflow."""
        kept = self._kept or {}
        norms: list[torch.Tensor | float | None] = [None] * len(tensors)
        fast = [
            i
            for i, (t, k) in enumerate(zip(tensors, self.known, strict=True))
            if k and t.is_floating_point() and before[i].device == t.device  # type: ignore[union-attr]
        ]
        olds, curs = [before[i] for i in fast], [tensors[i] for i in fast]
        if fast and curs[0].device.type == "cpu":
            for i, v in zip(fast, _update_in_place_cpu(olds, curs), strict=True):  # type: ignore[arg-type]
                norms[i] = v
        elif fast:
            torch._foreach_sub_(olds, curs)
            for i, v in zip(fast, torch._foreach_norm(olds, 2, dtype=F64), strict=True):
                norms[i] = v
            torch._foreach_copy_(olds, curs)
        fast = set(fast)
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

        def _write(f: BinaryIO) -> None:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for data in datas:
                f.write(memoryview(data))

        write_stream_atomic(self.path, _write, durable=False)  # a scratch file: no fsync per capture
