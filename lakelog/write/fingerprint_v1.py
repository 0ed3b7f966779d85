"""Fingerprint algorithm ``v1``: the sum of mixed words, computed with torch ops where the tensor lives.

Why it exists: on an accelerator, copying a tensor to the host to hash its bytes would stall training,
so ``v1`` is built from elementwise torch ops and reductions only. They run on any device, never wait
for it, and give bit-identical results everywhere, so ``v1`` fingerprints compare across devices. On
CPU the native byte hash ``x3`` (lakelog/write/fingerprint.py) is several times faster and is the
default there; ``v1`` on CPU is what ``LAKELOG_FINGERPRINT=v1`` selects, for a CPU run whose
fingerprints must compare with a GPU run's.

The algorithm (all arithmetic modulo 2**64, ``>>>`` a logical right shift), for the tensor's words
``w[0..W)`` (its little-endian bytes read as uint64, the last word zero-padded) and lanes L in (0, 1)::

    S[L] = sum over i of  F[L]( w[i] XOR (i * G[L]) )
    fp[L] = F[L]( S[L] XOR H[L] )

``G`` = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03); ``F[0]`` is splitmix64's finalizer (shifts 30,
27, 31), ``F[1]`` murmur3's fmix64 (shifts 33, 33, 33), each ``x ^= x >>> a; x *= c1; x ^= x >>> b;
x *= c2; x ^= x >>> d``; ``H`` the two halves of ``xxh3_128`` of the header text (see the README).
Mixing the index through a nonlinear bijection before the sum makes the result order-aware, and
changes that cancel in a plain sum do not cancel here.

How it runs: tensors above ``1 / GROUP_DIVISOR`` of a chunk are hashed alone, chunk by chunk (views,
no copy); the others are concatenated into batches of up to a chunk of words and hashed together, each word mixed
with its index inside its own tensor, the per-tensor sums read from one cumulative sum at the tensor
boundaries. So a capture of many tensors costs about 14 kernels per chunk of words, whatever the
number of tensors, and nothing waits for the device.
"""

from __future__ import annotations

import torch

from lakelog.write.chunking import bounded_runs

# Words per chunk. Temporaries stay under 64 bytes per chunk word (4 MiB on CPU, 128 MiB on CUDA). On
# CPU the buffers of a chunk stay in cache through its ~14 ops; on accelerators large chunks keep
# kernel launches few. Neither changes the result.
CHUNK_WORDS_CPU = 1 << 16
CHUNK_WORDS_CUDA = 1 << 21
# Tensors up to chunk / divisor words are batched with others. On accelerators a copy into the batch
# is cheap next to a kernel launch, so every tensor up to a whole chunk is batched (a ResNet-50's
# weights take ~7 batches, ~100 launches); on CPU the copy costs more than the calls it saves.
GROUP_DIVISOR_CPU = 4
GROUP_DIVISOR_CUDA = 1

MASK64 = (1 << 64) - 1

# Per-lane index keys (odd, so i -> i * G is a bijection): the golden-ratio gamma of splitmix64, and
# the R2-sequence constant of Roberts (2018).
INDEX_KEYS = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03)
# Per-lane finalizers (shift1, mult1, shift2, mult2, shift3): splitmix64 and murmur3 fmix64.
FINALIZERS = (
    (30, 0xBF58476D1CE4E5B9, 27, 0x94D049BB133111EB, 31),
    (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33),
)


def signed(x: int) -> int:
    """The int64 whose two's complement bits equal the unsigned 64-bit `x`: what torch ops accept."""
    x &= MASK64
    return x - (1 << 64) if x >> 63 else x


# Both lanes run side by side as the two rows of a (2, m) tensor; each constant is a (2, 1) column.
# Rows of the table: index key, then (shift, mask for the logical shift, multiplier) x 3 (the last
# multiplier is unused). torch's `>>` on int64 is arithmetic, so a logical shift is the arithmetic
# shift with the copies of the sign bit masked off; `*` wraps modulo 2**64 on CPU and CUDA.
_CONSTANTS = [[signed(g) for g in INDEX_KEYS]]
for _step in range(3):
    _shifts = [f[2 * _step] for f in FINALIZERS]
    _CONSTANTS.append(_shifts)
    _CONSTANTS.append([(1 << (64 - k)) - 1 for k in _shifts])
    _CONSTANTS.append([signed(f[2 * _step + 1]) if _step < 2 else 1 for f in FINALIZERS])
_CPU_TABLE = torch.tensor(_CONSTANTS, dtype=torch.int64)
del _step, _shifts


def chunk_words(device: torch.device) -> int:
    return CHUNK_WORDS_CPU if device.type == "cpu" else CHUNK_WORDS_CUDA


def on_device(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to `device` without making the host wait (pinned memory, async copy)."""
    if device.type == "cpu":
        return table
    if device.type == "cuda":
        table = table.pin_memory()
    return table.to(device, non_blocking=True)


def dense_words(t: torch.Tensor) -> list[torch.Tensor]:
    """The words of a strided tensor as 1-D int64 pieces (a view of `t` when possible).

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


class Kernel:
    """The lane sums (and finalizers) on one device, with buffers reused across tensors.

    The per-lane constants are (2, 1) columns, copied to the device once per call. The scratch
    buffers of a chunk are allocated once per call too: allocating them per tensor made the CPU
    allocator return and re-fault the pages on every tensor, which doubled the time for a model.
    """

    def __init__(self, device: torch.device, total_words: int, chunk: int | None = None) -> None:
        table = on_device(_CPU_TABLE, device).unsqueeze(-1)
        self.device = device
        self.key = table[0]
        self.steps = [
            (table[1 + 3 * k], table[2 + 3 * k], table[3 + 3 * k] if k < 2 else None) for k in range(3)
        ]
        self.chunk = chunk or chunk_words(device)
        self.divisor = GROUP_DIVISOR_CPU if device.type == "cpu" else GROUP_DIVISOR_CUDA
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
        """Lane sums of one tensor whose words are `pieces` joined: (2,) int64, chunk by chunk.

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
        """Lane sums of several small tensors at once (at most a chunk of words): (k, 2) int64.

        Hashing a 64-element bias alone costs as many kernel calls as a chunk of a big tensor, so
        small tensors are concatenated, mixed with their own word indices, and split again by
        reading a cumulative sum at the tensor boundaries. The indices and boundaries come from one
        small host table copied without waiting, so the kernel count does not grow with the tensors.
        """
        counts = [sum(p.numel() for p in pieces) for pieces in groups]
        words = torch.cat([p for pieces in groups for p in pieces])
        total = words.numel()
        ends = [0]
        for c in counts:
            ends.append(ends[-1] + c)
        host = torch.tensor([ends[:-1], counts, ends[1:]], dtype=torch.int64)
        starts, sizes, at = on_device(host, self.device).unbind()
        # Each word's index within its own tensor: its flat position minus its tensor's start.
        local = self.ramp[:total] - torch.repeat_interleave(starts, sizes, output_size=total)
        x = self.x[:, :total]
        torch.mul(local, self.key, out=x)
        torch.bitwise_xor(x, words, out=x)
        self.finalize_(x, self.tmp[:, :total])
        cums = torch.zeros((2, total + 1), dtype=torch.int64, device=self.device)
        torch.cumsum(x, dim=1, out=cums[:, 1:])
        before = cums.index_select(1, starts)
        return (cums.index_select(1, at) - before).t()

    def sums(self, groups: list[list[torch.Tensor]]) -> torch.Tensor:
        """Lane sums of tensors on this device, given as word pieces: (k, 2) int64 in the same order.

        Tensors above ``chunk / GROUP_DIVISOR`` words are hashed alone, in chunks; the others are
        batched, up to a chunk of words per batch, whatever their order among the large ones.
        """
        rows: list[torch.Tensor | None] = [None] * len(groups)
        small: list[tuple[int, int]] = []
        for i, pieces in enumerate(groups):
            n = sum(p.numel() for p in pieces)
            if n > self.chunk // self.divisor:
                rows[i] = self.large_sums(pieces)
            else:
                small.append((i, n))
        for batch in bounded_runs(small, self.chunk):
            for i, row in zip(batch, self.group_sums([groups[i] for i in batch]).unbind(), strict=True):
                rows[i] = row
        return torch.stack(rows)  # type: ignore[arg-type]

    def finalized(self, pre: torch.Tensor) -> torch.Tensor:
        """The last step on `pre` of shape (n, 2): each lane's finalizer on its column, as a new tensor."""
        x = pre.t().contiguous()
        self.finalize_(x, torch.empty_like(x))
        return x.t().contiguous()


def fingerprint_words(groups: list[list[torch.Tensor]], headers: list[tuple[int, int]]) -> torch.Tensor:
    """``v1`` fingerprints of tensors on one device, given as word pieces and signed header halves.

    Returns (k, 2) int64 on that device, computed without waiting for it.
    """
    device = groups[0][0].device
    kernel = Kernel(device, sum(p.numel() for pieces in groups for p in pieces))
    sums = kernel.sums(groups)
    head = on_device(torch.tensor(headers, dtype=torch.int64), device)
    return kernel.finalized(sums.bitwise_xor_(head))
