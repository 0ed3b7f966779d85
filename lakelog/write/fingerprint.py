"""Exact 128-bit fingerprints of tensors: one pass over the bytes on CPU, no device sync on accelerators.

Why: to say *where* two training runs first differ, lakelog records a fingerprint of every parameter,
gradient, optimizer state and input batch. A norm or a sum cannot do this (a permutation, or two
changes that cancel, leave it unchanged). Two algorithms do it, each the fastest where it runs:

- ``x3`` (CPU tensors): ``xxh3_128`` of the tensor's bytes, seeded with a hash of its header. One
  pass over the bytes in native code with the GIL released, tensors spread over a small thread pool.
- ``v1`` (tensors on accelerators): the sum of mixed words, computed with torch ops where the tensor
  lives so nothing waits for the device (lakelog/write/fingerprint_v1.py). It gives the same bits on
  every device; on CPU it is several times slower than ``x3``.

The two give different values for the same bytes, so every fingerprint carries its algorithm: ``x3``
ones are written ``x3:<32 hex digits>``, ``v1`` ones as the bare 32 hex digits (the format of lakes
written before ``x3`` existed). Readers compare two fingerprints only when their algorithms match and
report "not comparable" otherwise (``fingerprint_algorithm`` here, the ``fp_algorithm`` macro in SQL).
``LAKELOG_FINGERPRINT=v1`` makes CPU tensors use ``v1`` too, for a CPU run compared with a GPU run.

Common to both, for a tensor ``t``:

1. Bytes: its logical contents (``t.contiguous()``, conj/neg views resolved) in its native dtype, as
   little-endian bytes in row-major order; ``nbytes = numel * element_size``.
2. Header text: ``lakelog-fingerprint-<algorithm>|<dtype>|<shape>|<layout>|<nbytes>``, dtype e.g.
   ``float32``, shape the repr of a Python tuple (``()``, ``(3,)``, ``(2, 3)``), layout ``strided``.
3. ``x3``: ``xxh3_128(bytes, seed=xxh3_64(header))``. ``v1``: see fingerprint_v1.py, with ``H`` the
   two 64-bit halves (high, low) of ``xxh3_128(header)``.
4. Result: two int64 (the two's complement of the high and low 64 bits); ``to_hex`` prints them as
   16 hex digits each, after the algorithm's prefix.

Sparse tensors are coalesced (COO; other sparse layouts converted to COO first) and hashed as the 32
bytes ``fingerprint(indices) ++ fingerprint(values)`` under a header with their own layout name.
Coalescing a tensor that is not yet coalesced counts its entries, which on CUDA waits for the device;
dense tensors never do. Both algorithms are checked bit for bit against pure-Python implementations
of these steps in ``tests/test_fingerprint.py``.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import xxhash

from lakelog.errors import InvalidArgumentError
from lakelog.write import fingerprint_v1 as v1

__all__ = [
    "ALGORITHMS",
    "algorithm_for",
    "algorithm_prefix",
    "combine_hex",
    "fingerprint",
    "fingerprint_algorithm",
    "fingerprint_bytes",
    "fingerprint_hex",
    "fingerprint_many",
    "to_hex",
    "x3_hex_packed",
    "x3_seed",
]

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("lakelog.write.fingerprint defines words as little-endian and assumes such a host")

VERSION = 1
ALGORITHMS = ("x3", "v1")
ENV = "LAKELOG_FINGERPRINT"
_MASK64 = v1.MASK64
_HEX_DIGITS = frozenset("0123456789abcdef")

_NUMPY_DTYPES = frozenset(
    (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8)
)
POOL_MIN_BYTES = 4 << 20
"""Below this many bytes per call, ``x3`` hashes on the calling thread (a hand-off costs more)."""


def _forced() -> str | None:
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value != "v1":
        raise InvalidArgumentError(f"{ENV}: expected 'auto' or 'v1', got {value!r}")
    return value


def algorithm_for(t: torch.Tensor | torch.device) -> str:
    """The algorithm ``fingerprint`` uses for a tensor (or a device): ``x3`` on CPU, ``v1`` elsewhere,
    ``v1`` everywhere when the environment sets ``LAKELOG_FINGERPRINT=v1``."""
    device = t if isinstance(t, torch.device) else t.device
    return _forced() or ("x3" if device.type == "cpu" else "v1")


def _check_algorithm(algorithm: str | None) -> None:
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise InvalidArgumentError(f"algorithm: expected one of {ALGORITHMS} or None, got {algorithm!r}")


@functools.lru_cache(maxsize=8192)
def _header(
    algorithm: str, dtype: torch.dtype, shape: tuple[int, ...], layout: str, nbytes: int
) -> tuple[int, int]:
    """Step 2-3's header hash: ``x3``'s seed (twice), or ``v1``'s two signed halves."""
    name = str(dtype).removeprefix("torch.")
    version = f"v{VERSION}" if algorithm == "v1" else algorithm
    text = f"lakelog-fingerprint-{version}|{name}|{shape}|{layout}|{nbytes}".encode()
    if algorithm == "x3":
        seed = xxhash.xxh3_64_intdigest(text)
        return seed, seed
    h = xxhash.xxh3_128_intdigest(text)
    return v1.signed(h >> 64), v1.signed(h)


def _check(t: torch.Tensor) -> str:
    """The layout name of `t`, or a clear error for what has no bytes to hash."""
    if not isinstance(t, torch.Tensor):
        raise InvalidArgumentError(f"fingerprint expects a torch.Tensor, got {type(t).__name__}")
    if t.layout is torch.strided and t.is_cpu and not (t.is_quantized or t.is_nested):
        return "strided"  # the common case, in few calls: a capture checks every tensor
    if t.device.type == "meta":
        raise InvalidArgumentError("cannot fingerprint a meta tensor: it holds no data")
    if t.is_quantized:
        raise InvalidArgumentError("cannot fingerprint a quantized tensor; fingerprint t.int_repr() instead")
    if t.is_nested:
        raise InvalidArgumentError("cannot fingerprint a nested tensor; fingerprint its components")
    layout = str(t.layout).removeprefix("torch.")
    if t.layout != torch.strided and not layout.startswith("sparse"):
        raise InvalidArgumentError(f"cannot fingerprint a tensor with layout {t.layout}")
    return layout


def _sparse_parts(t: torch.Tensor, algorithm: str) -> torch.Tensor:
    """The 4 int64 words ``fingerprint(indices) ++ fingerprint(values)`` of the coalesced COO form."""
    coo = t.detach()
    if t.layout != torch.sparse_coo:
        coo = coo.to_sparse_coo()
    coo = coo.coalesce()
    return fingerprint_many([coo.indices(), coo.values()], algorithm=algorithm).reshape(-1)


# -- x3 ----------------------------------------------------------------------------------------------
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1, torch.get_num_threads()))


def _executor() -> ThreadPoolExecutor:
    """The process's hashing pool, made again in a forked child (a fork copies no threads)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=3, thread_name_prefix="lakelog-fp"))
        return _pool[1]


def _host_bytes(t: torch.Tensor) -> memoryview:
    """Step 1 for a strided tensor: its bytes as a memoryview of host memory (a view when possible)."""
    if t.requires_grad:
        t = t.detach()
    if not t.is_cpu:
        t = t.cpu()  # x3 of a device tensor was asked for explicitly: this waits for the device
    if not t.is_contiguous() or t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg().contiguous()
    if t.dtype in _NUMPY_DTYPES and t.numel():  # a NumPy view of the tensor itself, in fewer calls
        return memoryview(t.numpy().reshape(-1)).cast("B")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _hash_all(items: list[tuple[memoryview, int]]) -> list[int]:
    def run(part: list[int]) -> None:
        for i in part:
            data, seed = items[i]
            out[i] = xxhash.xxh3_128_intdigest(data, seed)

    out = [0] * len(items)
    total = sum(len(d) for d, _ in items)
    threads = _threads() if total >= POOL_MIN_BYTES and len(items) > 1 else 1
    if threads == 1:
        run(list(range(len(items))))
        return out
    # Largest first onto the least loaded of `threads` bins; the calling thread hashes bin 0.
    bins: list[list[int]] = [[] for _ in range(threads)]
    loads = [0] * threads
    for i in sorted(range(len(items)), key=lambda i: -len(items[i][0])):
        k = loads.index(min(loads))
        bins[k].append(i)
        loads[k] += len(items[i][0])
    pool = _executor()
    futures = [pool.submit(run, part) for part in bins[1:] if part]
    run(bins[0])
    for f in futures:
        f.result()
    return out


def _x3_many(tensors: list[torch.Tensor], layouts: list[str]) -> torch.Tensor:
    """``x3`` fingerprints as a CPU (n, 2) int64 tensor (sparse ones through their parts)."""
    items: list[tuple[memoryview, int]] = []
    for t, layout in zip(tensors, layouts, strict=True):
        if layout == "strided":
            data = _host_bytes(t)
            nbytes = len(data)
        else:
            data = memoryview(_sparse_parts(t, "x3").numpy()).cast("B")
            nbytes = 32
        items.append((data, _header("x3", t.dtype, tuple(t.shape), layout, nbytes)[0]))
    digests = _hash_all(items)
    words = np.array([(h >> 64, h & _MASK64) for h in digests], dtype=np.uint64).reshape(-1, 2)
    return torch.from_numpy(words.view(np.int64))


def x3_seed(dtype: torch.dtype, shape: tuple[int, ...], nbytes: int) -> int:
    """``x3``'s seed for a dense (strided) tensor of this dtype, shape and size in bytes (steps 2-3)."""
    return _header("x3", dtype, tuple(shape), "strided", nbytes)[0]


def x3_hex_packed(data: memoryview, bounds: Sequence[tuple[int, int]], seeds: Sequence[int]) -> list[str]:
    """``x3`` fingerprints, as ``to_hex`` writes them, of dense tensors whose bytes lie back to back in
    ``data`` (a copy made in one call: byte ranges ``bounds``, seeds from ``x3_seed``). Bit for bit what
    ``fingerprint`` gives for each tensor, without a call per tensor to find its bytes."""
    if len(data) < POOL_MIN_BYTES:  # one thread: no hand-off, one call per tensor
        digest = xxhash.xxh3_128_intdigest
        return [f"x3:{digest(data[s:e], seed):032x}" for (s, e), seed in zip(bounds, seeds, strict=True)]
    digests = _hash_all([(data[s:e], seed) for (s, e), seed in zip(bounds, seeds, strict=True)])
    return [f"x3:{h:032x}" for h in digests]


# -- v1 ----------------------------------------------------------------------------------------------
def _v1_many(tensors: list[torch.Tensor], layouts: list[str]) -> torch.Tensor:
    """``v1`` fingerprints of tensors on one device: (n, 2) int64 there, without waiting for it."""
    groups, headers = [], []
    for t, layout in zip(tensors, layouts, strict=True):
        if layout == "strided":
            pieces, nbytes = v1.dense_words(t), t.numel() * t.element_size()
        else:
            pieces, nbytes = [_sparse_parts(t, "v1")], 32
        groups.append(pieces)
        headers.append(_header("v1", t.dtype, tuple(t.shape), layout, nbytes))
    return v1.fingerprint_words(groups, headers)


# -- public ------------------------------------------------------------------------------------------
def fingerprint(t: torch.Tensor, *, algorithm: str | None = None) -> torch.Tensor:
    """The 128-bit fingerprint of `t` as an int64 tensor of shape (2,) on `t.device`.

    ``algorithm=None`` uses ``algorithm_for(t)``, computed without a host-device sync so it can be
    called inside a training step; ``to_hex`` turns it into text when the caller is ready to wait.
    """
    return fingerprint_many([t], algorithm=algorithm)[0]


def fingerprint_many(tensors: Sequence[torch.Tensor], *, algorithm: str | None = None) -> torch.Tensor:
    """Fingerprints of several tensors as one (n, 2) int64 tensor, so the caller needs one transfer.

    Row i equals ``fingerprint(tensors[i], algorithm=algorithm)``; with ``algorithm=None`` each tensor
    uses ``algorithm_for`` its device (pass the same choice to ``to_hex``). Tensors on one device are
    hashed together. The result lives on the first tensor's device; tensors on other devices are
    hashed where they are and only their (k, 2) results move (which waits for that device when the
    target is the CPU). ``algorithm="x3"`` on an accelerator copies the tensor to the host first
    (a sync: for tools, not training loops). No tensors give a (0, 2) CPU tensor.
    """
    _check_algorithm(algorithm)
    tensors = list(tensors)
    if not tensors:
        return torch.empty((0, 2), dtype=torch.int64)
    layouts = [_check(t) for t in tensors]
    target = tensors[0].device
    forced = _forced()
    by_key: dict[tuple[str, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        algo = algorithm or forced or ("x3" if t.device.type == "cpu" else "v1")
        by_key.setdefault((algo, torch.device("cpu") if algo == "x3" else t.device), []).append(i)
    if len(by_key) == 1:
        ((algo, device), _), *_ = by_key.items()
        block = (_x3_many if algo == "x3" else _v1_many)(tensors, layouts)
        return block if device == target else block.to(target)
    out = torch.empty((len(tensors), 2), dtype=torch.int64, device=target)
    for (algo, device), members in by_key.items():
        part, part_layouts = [tensors[i] for i in members], [layouts[i] for i in members]
        block = (_x3_many if algo == "x3" else _v1_many)(part, part_layouts)
        index = v1.on_device(torch.tensor(members, dtype=torch.int64), target)
        out.index_copy_(0, index, block if device == target else block.to(target))
    return out


def to_hex(fp: torch.Tensor, algorithm: str | Sequence[str] | None = None) -> list[str] | str:
    """Fingerprint(s) as text: (2,) gives a str, (n, 2) a list. This is the one sync.

    ``algorithm``: the algorithm that computed them (one for all rows, or one per row); None takes
    ``algorithm_for(fp.device)``, right for what ``fingerprint_many(..., algorithm=None)`` returned
    when all its tensors were on one device. ``x3`` is written ``x3:`` + 32 hex digits, ``v1`` as
    the bare 32 lowercase hex digits.
    """
    if not isinstance(fp, torch.Tensor) or fp.dtype != torch.int64 or fp.shape[-1:] != (2,) or fp.dim() > 2:
        raise InvalidArgumentError(
            "to_hex expects an int64 tensor of shape (2,) or (n, 2) from fingerprint()"
        )
    rows = fp.reshape(-1, 2).tolist()
    if algorithm is None or isinstance(algorithm, str):
        algos = [algorithm or algorithm_for(fp.device)] * len(rows)
    else:
        algos = list(algorithm)
        if len(algos) != len(rows):
            raise InvalidArgumentError(
                f"algorithm: expected {len(rows)} names (one per row), got {len(algos)}"
            )
    for a in set(algos):
        _check_algorithm(a)
    hexes = [
        f"{'' if algo == 'v1' else algo + ':'}{a & _MASK64:016x}{b & _MASK64:016x}"
        for (a, b), algo in zip(rows, algos, strict=True)
    ]
    return hexes[0] if fp.dim() == 1 else hexes


def fingerprint_hex(t: torch.Tensor, *, algorithm: str | None = None) -> str:
    """`to_hex(fingerprint(t))`: convenient where a sync does not matter (tests, tools, notebooks)."""
    out = to_hex(fingerprint(t, algorithm=algorithm), algorithm or algorithm_for(t))
    assert isinstance(out, str)
    return out


def fingerprint_algorithm(fp: str) -> str:
    """The algorithm of a fingerprint's text: the prefix before ``:``, ``v1`` when there is none.

    Two fingerprints say anything about equality only when their algorithms match; the SQL macro
    ``fp_algorithm`` is the same rule for queries.
    """
    head, sep, _ = fp.partition(":")
    return head if sep else "v1"


def _split_hex(h: object) -> tuple[str, str]:
    if not isinstance(h, str):
        raise InvalidArgumentError(f"combine_hex expects fingerprint strings, got {h!r}")
    algo = fingerprint_algorithm(h)
    digits = h.rpartition(":")[2].lower()
    if len(digits) != 32 or not set(digits) <= _HEX_DIGITS or not algo:
        raise InvalidArgumentError(f"combine_hex expects fingerprints like to_hex writes them, got {h!r}")
    return algo, digits


def algorithm_prefix(fingerprints: Iterable[str | None]) -> str:
    """The prefix a digest of these fingerprints carries: ``x3:``, none for ``v1`` (and for none at
    all), ``v1+x3:`` for a mix; so digests of differently hashed tensors read as not comparable."""
    algos = sorted({fingerprint_algorithm(fp) for fp in fingerprints if fp is not None})
    return "" if algos in ([], ["v1"]) else "+".join(algos) + ":"


def combine_hex(hexes: Sequence[str]) -> str:
    """One fingerprint for an ordered group of fingerprints (e.g. a batch's input tensors).

    Order-aware and length-aware: the xxh3_128 of the fingerprints joined by ``,`` with a version tag.
    It carries the algorithms of its parts (``x3:``, bare for ``v1`` and for ``fingerprint_bytes``,
    ``v1+x3:`` for a mix), so groups hashed by different algorithms read as not comparable.
    """
    if isinstance(hexes, str):
        raise InvalidArgumentError("combine_hex expects a sequence of hex strings, not a single str")
    parts = [_split_hex(h) for h in hexes]
    prefix = algorithm_prefix(hexes)
    joined = ",".join(d if a == "v1" else f"{a}:{d}" for a, d in parts)
    text = f"lakelog-combine-v{VERSION}|{len(parts)}|" + joined
    return prefix + xxhash.xxh3_128_hexdigest(text.encode())


def fingerprint_bytes(data: bytes | bytearray | memoryview) -> str:
    """xxh3_128 of raw bytes as 32-char hex: for non-tensor state (RNG states, lists of sample ids)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(
            f"fingerprint_bytes expects bytes or memoryview, got {type(data).__name__}"
        )
    return xxhash.xxh3_128_hexdigest(data)
