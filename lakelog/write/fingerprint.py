"""Exact 128-bit fingerprints of tensors, computed on the device where each tensor lives.

Why: to say *where* two training runs first differ, lakelog records a fingerprint of every parameter,
gradient and input batch. A norm or a sum cannot do this (a permutation, or two changes that cancel,
leave it unchanged); copying a CUDA tensor to host to hash its bytes would stall training. So the hash
is built from plain elementwise torch ops and one reduction, which run on any device, never sync, and
give the same answer on CPU and CUDA.

The algorithm (version 1), all arithmetic modulo 2**64, ``>>>`` a logical right shift:

1. Bytes. The tensor's logical contents (``t.contiguous()``, conj/neg views resolved) in its native
   dtype, as little-endian bytes in row-major order. ``nbytes = numel * element_size``.
2. Words. The bytes are read as ``W = ceil(nbytes / 8)`` unsigned 64-bit little-endian words
   ``w[0..W)``; when ``nbytes`` is not a multiple of 8 the last word is padded with zero bytes
   (``nbytes`` is part of the header below, so padding cannot collide with real zeros).
3. Lanes. For lane ``L`` in (0, 1), with index key ``G[L]`` and finalizer ``F[L]``::

       S[L] = sum over i of  F[L]( w[i] XOR (i * G[L]) )

   ``F[0]`` is splitmix64's finalizer (shifts 30, 27, 31), ``F[1]`` murmur3's fmix64 (shifts 33,
   33, 33); each is ``x ^= x >>> a; x *= c1; x ^= x >>> b; x *= c2; x ^= x >>> d``, a nonlinear
   bijection, so mixing the index in makes the sum order-aware and changes that cancel in a plain
   sum do not cancel here.
4. Header. ``H = xxh3_128("lakelog-fingerprint-v1|<dtype>|<shape>|<layout>|<nbytes>")`` split into
   two 64-bit halves ``H[0]`` (high) and ``H[1]`` (low); dtype is e.g. ``float32``, shape is the
   repr of a Python tuple (``()``, ``(3,)``, ``(2, 3)``), layout ``strided``.
5. Result. ``fp[L] = F[L]( S[L] XOR H[L] )``, returned as int64 (two's complement of the unsigned
   value); ``to_hex`` prints ``fp[0]`` then ``fp[1]`` as 16 hex digits each.

Sparse COO tensors are coalesced and hashed as the 4 words ``fingerprint(indices) ++
fingerprint(values)`` under a header with layout ``sparse_coo`` (other sparse layouts are converted to
COO first, their header keeps their own layout name). Coalescing a tensor that is not yet coalesced
has to count its entries, which on CUDA waits for the device; dense tensors never do.

The torch kernel is checked bit for bit against a pure-Python implementation of the steps above in
``tests/test_fingerprint.py``. Large tensors are processed in chunks of ``CHUNK_WORDS_CPU`` /
``CHUNK_WORDS_CUDA`` words so temporaries stay bounded; the result does not depend on the chunking.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

import torch
import xxhash

from lakelog.errors import InvalidArgumentError

__all__ = [
    "combine_hex",
    "fingerprint",
    "fingerprint_bytes",
    "fingerprint_hex",
    "fingerprint_many",
    "to_hex",
]

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("lakelog.write.fingerprint defines words as little-endian and assumes such a host")

VERSION = 1
_MASK64 = (1 << 64) - 1
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

# Words per chunk. Temporaries stay under 64 bytes per chunk word (4 MiB on CPU, 64 MiB on CUDA). On
# CPU the buffers of a chunk stay in cache through its ~15 ops (2**16 and 2**17 were fastest of
# 2**14..2**20 on a 2-core EPYC); on accelerators large chunks keep kernel launches few. Neither
# changes the result.
CHUNK_WORDS_CPU = 1 << 16
CHUNK_WORDS_CUDA = 1 << 20

# Per-lane index keys (odd, so i -> i * G is a bijection): the golden-ratio gamma of splitmix64, and
# the R2-sequence constant of Roberts (2018).
_INDEX_KEYS = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03)
# Per-lane finalizers (shift1, mult1, shift2, mult2, shift3): splitmix64 and murmur3 fmix64.
_FINALIZERS = (
    (30, 0xBF58476D1CE4E5B9, 27, 0x94D049BB133111EB, 31),
    (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33),
)


def _signed(x: int) -> int:
    """The int64 whose two's complement bits equal the unsigned 64-bit `x`: what torch ops accept."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


# Both lanes run side by side as the two rows of a (2, m) tensor; each constant is a (2, 1) column.
# Rows of the table: index key, then (shift, mask for the logical shift, multiplier) x 3 (the last
# multiplier is unused). torch's `>>` on int64 is arithmetic, so a logical shift is the arithmetic
# shift with the copies of the sign bit masked off; `*` wraps modulo 2**64 on CPU and CUDA.
_CONSTANTS = [[_signed(g) for g in _INDEX_KEYS]]
for _step in range(3):
    _shifts = [f[2 * _step] for f in _FINALIZERS]
    _CONSTANTS.append(_shifts)
    _CONSTANTS.append([(1 << (64 - k)) - 1 for k in _shifts])
    _CONSTANTS.append([_signed(f[2 * _step + 1]) if _step < 2 else 1 for f in _FINALIZERS])
_CPU_TABLE = torch.tensor(_CONSTANTS, dtype=torch.int64)
del _step, _shifts


def _chunk_words(device: torch.device) -> int:
    return CHUNK_WORDS_CPU if device.type == "cpu" else CHUNK_WORDS_CUDA


def _on_device(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to `device` without making the host wait (pinned memory, async copy)."""
    if device.type == "cpu":
        return table
    if device.type == "cuda":
        table = table.pin_memory()
    return table.to(device, non_blocking=True)


class _Kernel:
    """Step 3 (and the finalizers of step 5) on one device, with buffers reused across tensors.

    The per-lane constants are (2, 1) columns, copied to the device once per call. The scratch
    buffers of a chunk are allocated once per call too: allocating them per tensor made the CPU
    allocator return and re-fault the pages on every tensor, which doubled the time for a model.
    """

    def __init__(self, device: torch.device, total_words: int) -> None:
        table = _on_device(_CPU_TABLE, device).unsqueeze(-1)
        self.device = device
        self.key = table[0]
        self.steps = [
            (table[1 + 3 * k], table[2 + 3 * k], table[3 + 3 * k] if k < 2 else None) for k in range(3)
        ]
        self.chunk = _chunk_words(device)
        size = max(1, min(self.chunk, total_words))
        self.ramp = torch.arange(size, dtype=torch.int64, device=device)
        self.x, self.tmp, self.keys = (
            torch.empty((2, size), dtype=torch.int64, device=device) for _ in range(3)
        )

    def finalize_(self, x: torch.Tensor, tmp: torch.Tensor) -> None:
        """Each row of int64 `x` (2, m) through its lane's finalizer, in place; `tmp` is scratch."""
        for shift, mask, mult in self.steps:
            torch.bitwise_right_shift(x, shift, out=tmp)
            tmp.bitwise_and_(mask)
            x.bitwise_xor_(tmp)
            if mult is not None:
                x.mul_(mult)

    def large_sums(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Step 3 for one tensor whose words are `pieces` joined: (2,) int64, chunk by chunk.

        The keys ``i * G`` of the current chunk live in a buffer advanced by ``m * G`` after each
        chunk of m words, so no index data comes from the host and the chunk size does not matter.
        """
        size = min(self.chunk, sum(p.numel() for p in pieces))
        keys = self.keys[:, :size]
        torch.mul(self.ramp[:size], self.key, out=keys)
        partial = []
        for piece in pieces:
            for start in range(0, piece.numel(), self.chunk):
                w = piece[start : start + self.chunk]
                m = w.numel()
                x = self.x[:, :m]
                # (2, m) operand first: faster than broadcasting the first operand.
                torch.bitwise_xor(keys[:, :m], w, out=x)
                self.finalize_(x, self.tmp[:, :m])
                partial.append(x.sum(dim=1))
                keys.add_(self.key * m)
        return partial[0] if len(partial) == 1 else torch.stack(partial).sum(dim=0)

    def group_sums(self, groups: list[list[torch.Tensor]]) -> torch.Tensor:
        """Step 3 for several small tensors at once (at most a chunk of words): (k, 2) int64.

        Hashing a 64-element bias alone costs as many kernel calls as a chunk of a big tensor, so
        small tensors are concatenated, mixed with their own word indices, and split again by
        reading a cumulative sum at the tensor boundaries.
        """
        counts = [sum(p.numel() for p in pieces) for pieces in groups]
        words = torch.cat([p for pieces in groups for p in pieces])
        total = words.numel()
        local = torch.cat([self.ramp[:c] for c in counts])  # each word's index within its own tensor
        x = self.x[:, :total]
        torch.mul(local, self.key, out=x)
        torch.bitwise_xor(x, words, out=x)
        self.finalize_(x, self.tmp[:, :total])
        cums = torch.zeros((2, total + 1), dtype=torch.int64, device=self.device)
        torch.cumsum(x, dim=1, out=cums[:, 1:])
        at = [0]
        for c in counts:
            at.append(at[-1] + c)
        ends = torch.stack([cums[:, a] for a in at])  # (k + 1, 2)
        return ends[1:] - ends[:-1]

    def sums(self, groups: list[list[torch.Tensor]]) -> torch.Tensor:
        """Step 3 for tensors on this device, given as word pieces: (k, 2) int64 in the same order.

        Tensors above a quarter chunk are hashed alone, in chunks; the others are batched, up to a
        chunk of words per batch, whatever their order among the large ones.
        """
        rows: list[torch.Tensor | None] = [None] * len(groups)
        batch: list[int] = []
        batch_words = 0

        def flush() -> None:
            for i, row in zip(batch, self.group_sums([groups[i] for i in batch]).unbind(), strict=True):
                rows[i] = row

        for i, pieces in enumerate(groups):
            n = sum(p.numel() for p in pieces)
            if n > self.chunk // 4:
                rows[i] = self.large_sums(pieces)
                continue
            if batch_words + n > self.chunk:
                flush()
                batch, batch_words = [], 0
            batch.append(i)
            batch_words += n
        if batch:
            flush()
        return torch.stack(rows)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=4096)
def _header(dtype: torch.dtype, shape: tuple[int, ...], layout: str, nbytes: int) -> tuple[int, int]:
    """Step 4: two signed 64-bit halves of the header hash, so dtype and shape are part of the fingerprint."""
    name = str(dtype).removeprefix("torch.")
    text = f"lakelog-fingerprint-v{VERSION}|{name}|{shape}|{layout}|{nbytes}"
    h = xxhash.xxh3_128_intdigest(text.encode())
    return _signed(h >> 64), _signed(h)


def _dense_words(t: torch.Tensor) -> list[torch.Tensor]:
    """Steps 1-2 for a strided tensor: its words as 1-D int64 pieces (a view of `t` when possible).

    The pieces are the full words and, when the byte count is not a multiple of 8, one zero-padded
    tail word; they are hashed as one sequence, so an odd-sized tensor needs no full copy.
    """
    flat = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    raw = flat.view(torch.uint8)
    if raw.data_ptr() % 8:
        # A view into the middle of a storage may be misaligned for int64: copy to aligned memory.
        raw = raw.clone()
    nbytes = raw.numel()
    full = nbytes - nbytes % 8
    pieces = [raw[:full].view(torch.int64)]
    if full != nbytes:
        pad = raw.new_zeros(8)
        pad[: nbytes - full] = raw[full:]
        pieces.append(pad.view(torch.int64))
    return pieces


def _prepare(t: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Check `t` and return its word pieces (steps 1-2) and header halves (step 4)."""
    if not isinstance(t, torch.Tensor):
        raise InvalidArgumentError(f"fingerprint expects a torch.Tensor, got {type(t).__name__}")
    if t.device.type == "meta":
        raise InvalidArgumentError("cannot fingerprint a meta tensor: it holds no data")
    if t.is_quantized:
        raise InvalidArgumentError("cannot fingerprint a quantized tensor; fingerprint t.int_repr() instead")
    if t.is_nested:
        raise InvalidArgumentError("cannot fingerprint a nested tensor; fingerprint its components")
    layout = str(t.layout).removeprefix("torch.")
    shape = tuple(t.shape)
    if t.layout == torch.strided:
        pieces = _dense_words(t)
        nbytes = t.numel() * t.element_size()
    elif layout.startswith("sparse"):
        coo = t.detach()
        if t.layout != torch.sparse_coo:
            coo = coo.to_sparse_coo()
        coo = coo.coalesce()
        pieces = [fingerprint_many([coo.indices(), coo.values()]).reshape(-1)]
        nbytes = 32
    else:
        raise InvalidArgumentError(f"cannot fingerprint a tensor with layout {t.layout}")
    return pieces, _header(t.dtype, shape, layout, nbytes)


def _finalized(pre: torch.Tensor, kernel: _Kernel) -> torch.Tensor:
    """Step 5 on `pre` of shape (n, 2): each lane's finalizer on its column, as a new tensor."""
    x = pre.t().contiguous()
    kernel.finalize_(x, torch.empty_like(x))
    return x.t().contiguous()


def fingerprint(t: torch.Tensor) -> torch.Tensor:
    """The 128-bit fingerprint of `t` as an int64 tensor of shape (2,) on `t.device`.

    Computed with torch ops where `t` lives and returned without a host-device sync, so it can be
    called inside a training step; `to_hex` turns it into text when the caller is ready to wait.
    """
    return fingerprint_many([t])[0]


def fingerprint_many(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fingerprints of several tensors as one (n, 2) int64 tensor, so the caller needs one transfer.

    Row i equals ``fingerprint(tensors[i])``. Small tensors on one device are hashed together, which
    is most of the saving for a model's many biases and norms. The result lives on the first tensor's
    device; tensors on other devices are hashed where they are and only their (k, 2) results move
    (which waits for that device when the target is the CPU). No tensors give a (0, 2) CPU tensor.
    """
    tensors = list(tensors)
    if not tensors:
        return torch.empty((0, 2), dtype=torch.int64)
    prepared = [_prepare(t) for t in tensors]
    target = tensors[0].device
    by_device: dict[torch.device, list[int]] = {}
    for i, (pieces, _) in enumerate(prepared):
        by_device.setdefault(pieces[0].device, []).append(i)
    rows: list[torch.Tensor] = []
    order: list[int] = []
    kernels = {}
    for device, members in by_device.items():
        groups = [prepared[i][0] for i in members]
        kernels[device] = _Kernel(device, sum(p.numel() for pieces in groups for p in pieces))
        block = kernels[device].sums(groups)
        rows.extend((block if device == target else block.to(target)).unbind())
        order.extend(members)
    if order != sorted(order):
        rows = [row for _, row in sorted(zip(order, rows, strict=True), key=lambda pair: pair[0])]
    sums = torch.stack(rows)
    headers = _on_device(torch.tensor([h for _, h in prepared], dtype=torch.int64), target)
    return _finalized(sums.bitwise_xor_(headers), kernels[target])


def to_hex(fp: torch.Tensor) -> list[str] | str:
    """Fingerprint(s) as 32-char lowercase hex: (2,) gives a str, (n, 2) a list. This is the one sync."""
    if not isinstance(fp, torch.Tensor) or fp.dtype != torch.int64 or fp.shape[-1:] != (2,) or fp.dim() > 2:
        raise InvalidArgumentError(
            "to_hex expects an int64 tensor of shape (2,) or (n, 2) from fingerprint()"
        )
    rows = fp.reshape(-1, 2).tolist()
    hexes = [f"{a & _MASK64:016x}{b & _MASK64:016x}" for a, b in rows]
    return hexes[0] if fp.dim() == 1 else hexes


def fingerprint_hex(t: torch.Tensor) -> str:
    """`to_hex(fingerprint(t))`: convenient where a sync does not matter (tests, tools, notebooks)."""
    out = to_hex(fingerprint(t))
    assert isinstance(out, str)
    return out


def combine_hex(hexes: Sequence[str]) -> str:
    """One fingerprint for an ordered group of fingerprints (e.g. a batch's input tensors).

    Order-aware and length-aware: the xxh3_128 of the hex strings joined by ``,`` with a version tag.
    """
    if isinstance(hexes, str):
        raise InvalidArgumentError("combine_hex expects a sequence of hex strings, not a single str")
    for h in hexes:
        if not isinstance(h, str) or len(h) != 32 or not set(h) <= _HEX_DIGITS:
            raise InvalidArgumentError(f"combine_hex expects 32-char hex strings, got {h!r}")
    text = f"lakelog-combine-v{VERSION}|{len(hexes)}|" + ",".join(h.lower() for h in hexes)
    return xxhash.xxh3_128_hexdigest(text.encode())


def fingerprint_bytes(data: bytes | bytearray | memoryview) -> str:
    """xxh3_128 of raw bytes as 32-char hex: for non-tensor state (RNG states, lists of sample ids)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(
            f"fingerprint_bytes expects bytes or memoryview, got {type(data).__name__}"
        )
    return xxhash.xxh3_128_hexdigest(data)
