"""Small dense CPU tensors of a capture: one copy per dtype at the hook; statistics, fingerprints and
update norms from that copy later, on the writer thread.

Why: on a small model a capture costs calls per tensor, not bytes. Copying all small tensors of a
section with one ``flatten_dense_tensors`` per dtype is the only work left on the training thread;
the copy belongs to the capture (nothing changes it after the hook), so reading it on the writer
thread gives exactly what reading the tensors at the hook would: the same values, and the same bytes,
so the ``x3`` fingerprints are bit for bit those of ``fingerprint.fingerprint`` (``x3_hex_packed``).
Statistics are those of ``stats_cpu`` (float64, two-pass variance, NaN/Inf counts where the norm is
not finite); the kept weights for ``update_norm`` are the previous capture's copy itself.

What stays the same from capture to capture (which rows are copied, their sizes and offsets, their
fingerprint seeds, shape and dtype texts) is a ``Plan``, built once and reused while every tensor keeps
its dtype, shape, layout and device (``Plans`` compares a signature of a few attributes per tensor).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lakelog.write.fingerprint import x3_hex_packed, x3_seed
from lakelog.write.telemetry.stats_cpu import SMALL, flat_rows, float64_scratch

_FLOATS = (torch.float32, torch.float64, torch.float16)
FLAT_DTYPES = frozenset(
    (*_FLOATS, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)
)
"""dtypes whose bytes NumPy reads as they are, and casts to float64 exactly as the per-tensor path
does (bfloat16 and complex take that path)."""

Signature = tuple[Any, ...]
_Buffers = tuple[list[torch.Tensor], list[list[torch.Tensor]]]
POOL = 8
POOL_BYTES = 16 << 20
"""Buffer sets a plan keeps for reuse: as many as the captures in flight (the writer takes them in
batches of about ``writer.WAKE_BYTES``, more when it falls behind; plus the kept previous weights), at
least ``POOL`` and at most ``POOL_BYTES`` of them. A set made afresh costs the training thread a view
per tensor, so a writer that falls behind would otherwise slow training further."""


def meta_text(shape: Sequence[int], dtype: torch.dtype) -> tuple[str, str]:
    """A row's ``shape`` and ``dtype`` columns: ``[3, 4]`` and ``float32``."""
    return str(list(shape)), str(dtype).removeprefix("torch.")


def signature(tensors: Sequence[torch.Tensor | None]) -> Signature:
    """What a plan depends on, per tensor: dtype, shape, layout and whether it is on the CPU."""
    return tuple(None if t is None else (t.dtype, t.shape, t.layout, t.is_cpu) for t in tensors)


def _flat(entry: Any) -> bool:
    if entry is None:
        return False
    dtype, shape, layout, cpu = entry
    return cpu and layout == torch.strided and dtype in FLAT_DTYPES and 0 < math.prod(shape) <= SMALL


class Plan:
    """The fixed part of one section's captures: rows copied flat (grouped by dtype), the rest."""

    def __init__(self, sig: Signature, fingerprints: bool) -> None:
        self.sig, self.fingerprints = sig, fingerprints
        self.n = len(sig)
        self.numels = [0 if s is None else math.prod(s[1]) for s in sig]
        self.meta = [None if s is None else meta_text(s[1], s[0]) for s in sig]
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, s in enumerate(sig):
            if _flat(s):
                by_dtype.setdefault(s[0], []).append(i)
        self.kinds = ["none" if s is None else "real" for s in sig]
        self.rest = [i for i, s in enumerate(sig) if s is not None and not _flat(s)]
        """Rows that take the per-tensor path (large, sparse, complex, bfloat16, integer, on a device)."""
        self.groups = list(by_dtype.items())
        self.order = [i for _, rows in self.groups for i in rows]
        """The copied rows, in the order of the copy."""
        self.in_order = self.order == list(range(self.n))
        """Every row is copied, in its own order (one dtype, no missing tensor)."""
        counts = np.array([self.numels[i] for i in self.order], dtype=np.int64)
        self.counts, self.starts, self.total = counts, np.cumsum(counts) - counts, int(counts.sum())
        self.hashing: list[tuple[list[tuple[int, int]], list[int]]] = []
        for dtype, rows in self.groups:
            size = torch.empty((), dtype=dtype).element_size()
            ends = np.cumsum([self.numels[i] * size for i in rows]).tolist()
            bounds = list(zip([0, *ends[:-1]], ends, strict=True))
            seeds = [x3_seed(dtype, tuple(sig[i][1]), e - b) for i, (b, e) in zip(rows, bounds, strict=True)]
            self.hashing.append((bounds, seeds))
        self.nbytes = sum(bounds[-1][1] for bounds, _ in self.hashing)
        """Bytes of one copy."""
        self._pool: deque[_Buffers] = deque()
        self._keep = max(POOL, POOL_BYTES // max(self.nbytes, 1))

    def take(self) -> _Buffers:
        """Buffers for one capture's copy, and views of them shaped like each row: reused from copies no
        longer needed (a fresh buffer would be new pages to fault in at every capture)."""
        try:
            return self._pool.pop()
        except IndexError:
            pass
        parts, views = [], []
        for dtype, rows in self.groups:
            part = torch.empty(sum(self.numels[i] for i in rows), dtype=dtype)
            ends = np.cumsum([self.numels[i] for i in rows]).tolist()
            starts = [0, *ends[:-1]]
            views.append([part[a:b].view(self.sig[i][1]) for i, a, b in zip(rows, starts, ends, strict=True)])
            parts.append(part)
        return parts, views

    def give_back(self, buffers: _Buffers) -> None:
        if len(self._pool) < self._keep:
            self._pool.append(buffers)


class Plans:
    """The latest plan of each section of one watcher, rebuilt when a tensor's signature changes."""

    def __init__(self) -> None:
        self._last: dict[str, Plan] = {}

    def get(self, key: str, tensors: Sequence[torch.Tensor | None], fingerprints: bool) -> Plan:
        sig = signature(tensors)
        plan = self._last.get(key)
        if plan is None or plan.sig != sig or plan.fingerprints != fingerprints:
            plan = self._last[key] = Plan(sig, fingerprints)
        return plan


class FlatCopy:
    """One capture's copy of a plan's flat rows (training thread); read on the writer thread. Its
    buffers go back to the plan when the last reference to it goes (``__del__``)."""

    def __init__(self, plan: Plan, tensors: Sequence[torch.Tensor | None]) -> None:
        self.plan = plan
        self._buffers = buffers = plan.take()
        self.parts = buffers[0]
        grad = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # parameters require grad; the copy must not join the graph
        try:
            for views, (_, rows) in zip(buffers[1], plan.groups, strict=True):
                torch._foreach_copy_(views, [tensors[i] for i in rows])  # logical values: views resolved
        finally:
            torch._C._set_grad_enabled(grad)

    def __del__(self) -> None:
        buffers = getattr(self, "_buffers", None)
        if buffers is not None:
            self.plan.give_back(buffers)

    @property
    def nbytes(self) -> int:
        return self.plan.nbytes

    def raw(self, full: bool, minmax: bool) -> np.ndarray:
        """``summaries.RAW`` rows (len(plan.order), 8) of the copied tensors, in ``plan.order``."""
        return raw_rows([self], full=full, minmax=minmax)[0]  # type: ignore[return-value]

    def fingerprints(self) -> list[str]:
        """``x3`` fingerprints of the copied tensors, in ``plan.order``."""
        out: list[str] = []
        for part, (bounds, seeds) in zip(self.parts, self.plan.hashing, strict=True):
            out += x3_hex_packed(memoryview(part.numpy()).cast("B"), bounds, seeds)
        return out


def raw_rows(copies: Sequence[FlatCopy | None], *, full: bool, minmax: bool) -> list[np.ndarray | None]:
    """``FlatCopy.raw`` of several copies (None for a missing one) from one float64 array and one
    ``stats_cpu.flat_rows`` call: a capture's sections read together."""
    present = [c for c in copies if c is not None]
    if not present:
        return [None] * len(copies)
    parts = [p.numpy() for c in present for p in c.parts]
    if len(present) == 1:
        counts, starts = present[0].plan.counts, present[0].plan.starts
    else:
        counts = np.concatenate([c.plan.counts for c in present])
        starts = np.cumsum(counts) - counts
    a, tmp = float64_scratch(parts, int(sum(c.plan.total for c in present)))
    block = np.full((len(counts), 8), math.nan)
    flat_rows(a, tmp, counts, starts, block, full, minmax)
    out: list[np.ndarray | None] = []
    at = 0
    for c in copies:
        if c is None:
            out.append(None)
            continue
        k = len(c.plan.order)
        out.append(block[at : at + k])
        at += k
    return out


def update_norms(
    previous: FlatCopy, current: FlatCopy, prev_names: Sequence[str], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``||current - previous||`` per row of ``current.plan.order`` (float64, so it cannot overflow), and
    which rows had a previous value of the same dtype and shape (by name; elsewhere NaN)."""
    plan = current.plan
    same_rows = previous.plan is plan or previous.plan.sig == plan.sig
    if same_rows and (prev_names is names or list(prev_names) == list(names)):
        now, before = float64_scratch([p.numpy() for p in current.parts], plan.total)
        if len(previous.parts) == 1:
            np.copyto(before, previous.parts[0].numpy())
        else:
            np.concatenate([p.numpy() for p in previous.parts], out=before)
        diff = np.subtract(now, before, out=now)
        np.multiply(diff, diff, out=diff)
        return np.sqrt(np.add.reduceat(diff, plan.starts)), np.ones(len(plan.order), dtype=bool)
    return _update_by_name(previous, current, prev_names, names)


def _slices(copy: FlatCopy) -> dict[int, np.ndarray]:
    """Each copied row's values (a view into the copy), by row."""
    out = {}
    for part, (_, rows) in zip(copy.parts, copy.plan.groups, strict=True):
        values, at = part.numpy(), 0
        for i in rows:
            k = copy.plan.numels[i]
            out[i] = values[at : at + k]
            at += k
    return out


def _update_by_name(
    previous: FlatCopy, current: FlatCopy, prev_names: Sequence[str], names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The rare case (the layout or a tensor's signature changed): rows matched one by one, by name."""
    old_at = {prev_names[i]: i for i in previous.plan.order}
    old, cur = _slices(previous), _slices(current)
    norms = np.full(len(current.plan.order), math.nan)
    known = np.zeros(len(current.plan.order), dtype=bool)
    for j, i in enumerate(current.plan.order):
        k = old_at.get(names[i])
        if k is not None and previous.plan.sig[k][:2] == current.plan.sig[i][:2]:
            d = np.subtract(cur[i], old[k], dtype=np.float64)
            norms[j], known[j] = math.sqrt(float(np.dot(d, d))), True
    return norms, known
