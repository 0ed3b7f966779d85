"""Tests of lakelog.write.fingerprint: exactness, sensitivity, every dtype, and both algorithms against
references.

The pure-Python references below re-implement the algorithms from the module docstrings: ``v1`` with
Python integers (no torch arithmetic), so equality proves the torch kernel computes the documented
hash; ``x3`` from the bytes numpy reads and the ``xxhash`` package, so equality proves the header,
seed and byte order are the documented ones.
"""

from __future__ import annotations

import struct

import pytest
import torch
import xxhash

import lakelog.write.fingerprint_v1 as v1mod
from lakelog.errors import InvalidArgumentError
from lakelog.write.fingerprint import (
    algorithm_for,
    combine_hex,
    fingerprint,
    fingerprint_algorithm,
    fingerprint_bytes,
    fingerprint_hex,
    fingerprint_many,
    to_hex,
)

M64 = (1 << 64) - 1
# torch.arange(6, dtype=torch.float32).reshape(2, 3) under each algorithm (v1: the value since v1 existed).
KNOWN_X3 = "x3:27e949b6b7cbf9774413420cf683af62"
KNOWN_V1 = "a5dd88568b9fd587f6f8ab3cff075a7f"
INDEX_KEYS = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03)
FINALIZERS = (
    (30, 0xBF58476D1CE4E5B9, 27, 0x94D049BB133111EB, 31),  # splitmix64
    (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33),  # murmur3 fmix64
)


# ---------------------------------------------------------------------------------------------------
# Pure-Python reference


def ref_finalize(x: int, lane: int) -> int:
    a, c1, b, c2, d = FINALIZERS[lane]
    x &= M64
    x ^= x >> a
    x = (x * c1) & M64
    x ^= x >> b
    x = (x * c2) & M64
    x ^= x >> d
    return x


def ref_x3(data: bytes, dtype_name: str, shape: tuple[int, ...], layout: str = "strided") -> str:
    header = f"lakelog-fingerprint-x3|{dtype_name}|{shape}|{layout}|{len(data)}"
    seed = xxhash.xxh3_64_intdigest(header.encode())
    return "x3:" + xxhash.xxh3_128_hexdigest(data, seed=seed)


def ref_from_bytes(
    data: bytes, dtype_name: str, shape: tuple[int, ...], layout: str = "strided", algo: str = "v1"
) -> str:
    if algo == "x3":
        return ref_x3(data, dtype_name, shape, layout)
    nbytes = len(data)
    padded = data + b"\0" * (-nbytes % 8)
    words = struct.unpack(f"<{len(padded) // 8}Q", padded)
    text = f"lakelog-fingerprint-v1|{dtype_name}|{shape}|{layout}|{nbytes}"
    header = xxhash.xxh3_128_intdigest(text.encode())
    halves = (header >> 64, header & M64)
    out = []
    for lane in (0, 1):
        s = 0
        for i, w in enumerate(words):
            s = (s + ref_finalize(w ^ ((i * INDEX_KEYS[lane]) & M64), lane)) & M64
        out.append(ref_finalize(s ^ halves[lane], lane))
    return f"{out[0]:016x}{out[1]:016x}"


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The logical contents of `t` as bytes, via numpy (only used to *read* bits, not to hash)."""
    flat = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def ref(t: torch.Tensor, algo: str = "v1") -> str:
    if t.layout != torch.strided:
        coo = (t if t.layout == torch.sparse_coo else t.to_sparse_coo()).coalesce()
        inner = ref(coo.indices(), algo).removeprefix("x3:") + ref(coo.values(), algo).removeprefix("x3:")
        data = b"".join(struct.pack("<Q", int(inner[k : k + 16], 16)) for k in range(0, 64, 16))
        return ref_from_bytes(data, str(t.dtype)[6:], tuple(t.shape), str(t.layout)[6:], algo)
    return ref_from_bytes(tensor_bytes(t), str(t.dtype)[6:], tuple(t.shape), algo=algo)


def ref_a(algo: str, t: torch.Tensor) -> str:
    return ref(t, algo)


def fph(algo: str, t: torch.Tensor) -> str:
    return fingerprint_hex(t, algorithm=algo)


# ---------------------------------------------------------------------------------------------------
# Helpers


def _opt_dtypes(*names: str) -> list[torch.dtype]:
    return [getattr(torch, n) for n in names if hasattr(torch, n)]


def make(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Deterministic tensor of any dtype, built from random bytes (no global RNG touched)."""
    gen = torch.Generator().manual_seed(seed)
    numel = 1
    for s in shape:
        numel *= s
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (numel * itemsize,), dtype=torch.uint8, generator=gen)
    if dtype == torch.bool:
        raw &= 1
    return raw.view(dtype).reshape(shape)


def flip_first_bit(t: torch.Tensor, byte: int = 0) -> torch.Tensor:
    u = t.clone().reshape(-1).view(torch.uint8)
    u[byte] ^= 1
    return u.view(t.dtype).reshape(t.shape)


DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
    *_opt_dtypes("uint16", "uint32", "uint64"),
    *_opt_dtypes("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"),
    *_opt_dtypes("float4_e2m1fn_x2"),
]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 8 words, so small test tensors exercise the chunked and grouped paths."""
    monkeypatch.setattr(v1mod, "CHUNK_WORDS_CPU", 8)


# ---------------------------------------------------------------------------------------------------
# The kernel equals the documented algorithm


ALGOS = ["x3", "v1"]


@pytest.fixture(params=ALGOS)
def algo(request: pytest.FixtureRequest) -> str:
    """Each test below runs once per algorithm."""
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3,), (5, 7), (2, 3, 4)], ids=str)
def test_kernel_matches_reference(dtype: torch.dtype, shape: tuple[int, ...], algo: str) -> None:
    t = make(dtype, shape, seed=len(shape))
    assert fingerprint_hex(t, algorithm=algo) == ref(t, algo)


def test_known_values_pin_both_algorithms() -> None:
    """Literal values: a change to either algorithm (header text, seed, constants) fails here."""
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert fingerprint_hex(t, algorithm="x3") == ref(t, "x3")
    assert fingerprint_hex(t, algorithm="x3") == KNOWN_X3
    assert fingerprint_hex(t, algorithm="v1") == KNOWN_V1


def test_cpu_default_is_x3_and_the_environment_selects_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert algorithm_for(t) == "x3" and fingerprint_hex(t) == KNOWN_X3
    assert to_hex(fingerprint(t)) == KNOWN_X3
    monkeypatch.setenv("LAKELOG_FINGERPRINT", "v1")
    assert algorithm_for(t) == "v1" and fingerprint_hex(t) == KNOWN_V1
    assert to_hex(fingerprint(t)) == KNOWN_V1
    monkeypatch.setenv("LAKELOG_FINGERPRINT", "fast")
    with pytest.raises(InvalidArgumentError, match="LAKELOG_FINGERPRINT"):
        fingerprint(t)


def test_algorithm_of_a_fingerprint_and_bad_names() -> None:
    assert fingerprint_algorithm(KNOWN_X3) == "x3"
    assert fingerprint_algorithm(KNOWN_V1) == "v1"
    assert fingerprint_algorithm(combine_hex([KNOWN_X3, KNOWN_V1])) == "v1+x3"
    with pytest.raises(InvalidArgumentError, match="algorithm"):
        fingerprint(torch.zeros(2), algorithm="md5")
    with pytest.raises(InvalidArgumentError, match="one per row"):
        to_hex(torch.zeros((3, 2), dtype=torch.int64), ["x3", "v1"])


def test_to_hex_labels_each_row_with_its_algorithm() -> None:
    tensors = [make(torch.float32, (n,), seed=n) for n in (5, 300, 7)]
    per_row = ["x3", "v1", "x3"]
    rows = torch.cat([fingerprint_many([t], algorithm=a) for t, a in zip(tensors, per_row, strict=True)])
    assert to_hex(rows, per_row) == [ref(t, a) for t, a in zip(tensors, per_row, strict=True)]


@pytest.mark.parametrize("divisor", [4, 1], ids=["cpu-batching", "accelerator-batching"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 8, 64, 1 << 17])
def test_kernel_matches_reference_across_chunk_sizes(
    monkeypatch: pytest.MonkeyPatch, chunk: int, algo: str, divisor: int
) -> None:
    monkeypatch.setattr(v1mod, "CHUNK_WORDS_CPU", chunk)
    monkeypatch.setattr(v1mod, "GROUP_DIVISOR_CPU", divisor)  # the accelerators' batching, run on CPU
    # Odd byte count (tail word), words with the sign bit set (logical-shift emulation), tiny and
    # large tensors (grouped and chunked paths) in one call.
    tensors = [
        make(torch.float32, (301,), seed=1),
        make(torch.int64, (40,), seed=2) | (1 << 63),
        make(torch.uint8, (13,), seed=3),
        torch.full((9,), -1, dtype=torch.int64),
        make(torch.float16, (2, 2), seed=4),
        torch.empty(0),
    ]
    assert to_hex(fingerprint_many(tensors, algorithm=algo), algo) == [ref(t, algo) for t in tensors]


def test_large_tensor_chunking_invariance(monkeypatch: pytest.MonkeyPatch) -> None:
    t = make(torch.float32, (100_003,), seed=5)
    results = set()
    for chunk in (1 << 17, 1 << 12, 1000, 333):
        monkeypatch.setattr(v1mod, "CHUNK_WORDS_CPU", chunk)
        results.add(fingerprint_hex(t, algorithm="v1"))
    assert len(results) == 1


def test_thread_pool_gives_the_single_thread_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many tensors above the pool threshold are hashed on several threads, each row still its own."""
    import lakelog.write.fingerprint as fpmod

    tensors = [make(torch.float32, (n,), seed=n) for n in (300_000, 5, 1_200_000, 40_000, 700_001)]
    expected = [ref(t, "x3") for t in tensors]
    monkeypatch.setattr(fpmod, "POOL_MIN_BYTES", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert to_hex(fingerprint_many(tensors)) == expected
    finally:
        torch.set_num_threads(before)


def test_wrapping_sum_matches_reference() -> None:
    # Many large words: the lane sums overflow int64 many times and must wrap exactly like mod 2**64.
    t = torch.full((2000,), 0x7FFF_FFFF_FFFF_FFFF, dtype=torch.int64)
    assert fingerprint_hex(t, algorithm="v1") == ref(t)


# ---------------------------------------------------------------------------------------------------
# Equal exactly when the bits are equal


def test_result_is_int64_pair_on_device(algo: str) -> None:
    t = torch.randn(10, generator=torch.Generator().manual_seed(0))
    fp = fingerprint(t, algorithm=algo)
    assert fp.dtype == torch.int64
    assert fp.shape == (2,)
    assert fp.device == t.device


def test_equal_for_identical_bits(algo: str) -> None:
    t = make(torch.float32, (17, 5), seed=7)
    same = t.view(torch.int32).clone().view(torch.float32)  # a copy made through another dtype
    assert torch.equal(fingerprint(t, algorithm=algo), fingerprint(same, algorithm=algo))
    assert torch.equal(fingerprint(t, algorithm=algo), fingerprint(t.clone(), algorithm=algo))
    finite = torch.randn(17, 5, generator=torch.Generator().manual_seed(7))
    assert fph(algo, finite) == fph(algo, finite.double().float())  # exact round trip


def test_non_contiguous_hashes_as_contiguous(algo: str) -> None:
    t = make(torch.float32, (6, 9), seed=8)
    views = [t.t(), t[:, ::2], t[1:], t[1:, 1:], t.reshape(-1)[1:], t[0:1].expand(4, 9), t.unsqueeze(0)]
    for v in views:
        assert fph(algo, v) == fph(algo, v.contiguous())
        assert fph(algo, v) == ref_a(algo, v)


def test_misaligned_storage_offset(algo: str) -> None:
    base = make(torch.int8, (101,), seed=9)
    for start in range(1, 9):
        v = base[start:]
        assert fph(algo, v) == ref_a(algo, v)


def test_conj_and_neg_views(algo: str) -> None:
    c = make(torch.complex64, (5,), seed=10)
    assert c.conj().is_conj()
    assert fph(algo, c.conj()) == fph(algo, c.conj().resolve_conj())
    assert fph(algo, c.conj()) != fph(algo, c)


def test_parameter_with_grad_is_left_untouched(algo: str) -> None:
    p = torch.nn.Parameter(torch.randn(33, generator=torch.Generator().manual_seed(1)))
    before = p.detach().clone()
    fp = fingerprint(p, algorithm=algo)
    assert not fp.requires_grad
    assert torch.equal(p.detach(), before)
    assert p.grad is None


@pytest.mark.usefixtures("small_chunks")
def test_inputs_not_modified_on_any_path(algo: str) -> None:
    tensors = [make(torch.float32, (n,), seed=n) for n in (1, 3, 16, 17, 100)]
    copies = [t.clone() for t in tensors]
    fingerprint_many(tensors, algorithm=algo)
    for t, c in zip(tensors, copies, strict=True):
        assert torch.equal(t.view(torch.int32), c.view(torch.int32))


# ---------------------------------------------------------------------------------------------------
# Sensitive to every change


def test_one_ulp_change(algo: str) -> None:
    t = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    u = t.clone()
    u[500] = torch.nextafter(u[500], torch.tensor(float("inf")))
    assert not torch.equal(t, u) and torch.allclose(t, u)
    assert fph(algo, t) != fph(algo, u)


def test_permutation_and_swap(algo: str) -> None:
    t = torch.arange(64, dtype=torch.float32)
    assert fph(algo, t) != fph(algo, t.flip(0))
    swapped = t.clone()
    swapped[[3, 40]] = swapped[[40, 3]]
    assert fph(algo, t) != fph(algo, swapped)
    # Swapping two adjacent float32 within one 64-bit word also counts.
    assert fph(algo, torch.tensor([1.0, 2.0])) != fph(algo, torch.tensor([2.0, 1.0]))


def test_sign_flip_and_negative_zero(algo: str) -> None:
    t = torch.randn(100, generator=torch.Generator().manual_seed(3))
    u = t.clone()
    u[7] = -u[7]
    assert fph(algo, t) != fph(algo, u)
    assert fph(algo, torch.tensor([0.0])) != fph(algo, torch.tensor([-0.0]))
    assert fph(algo, torch.zeros(4)) != fph(algo, -torch.zeros(4))


def test_cancelling_changes(algo: str) -> None:
    t = torch.arange(100, dtype=torch.int64)
    u = t.clone()
    u[10] += 12345
    u[90] -= 12345
    assert t.sum() == u.sum()
    assert fph(algo, t) != fph(algo, u)
    f = torch.ones(100)
    g = f.clone()
    g[1] += 0.5
    g[2] -= 0.5
    assert f.sum() == g.sum() and f.norm(1) == g.norm(1)
    assert fph(algo, f) != fph(algo, g)


def test_nan_payloads(algo: str) -> None:
    a = torch.tensor([0x7FC00000], dtype=torch.int32).view(torch.float32)
    b = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)
    assert a.isnan().all() and b.isnan().all()
    assert fph(algo, a) != fph(algo, b)
    assert fph(algo, a) == fph(algo, a.clone())


def test_dtype_and_shape_are_part_of_the_hash(algo: str) -> None:
    assert fph(algo, torch.zeros(4, dtype=torch.int32)) != fph(algo, torch.zeros(4))
    t = torch.randn(6, generator=torch.Generator().manual_seed(4))
    assert fph(algo, t) != fph(algo, t.view(torch.int32))
    assert fph(algo, t.reshape(2, 3)) != fph(algo, t.reshape(3, 2))
    assert fph(algo, t) != fph(algo, t.reshape(1, 6))
    assert fph(algo, torch.zeros(())) != fph(algo, torch.zeros(1))
    # Zero padding of the last word is not confused with real zero bytes.
    assert fph(algo, torch.zeros(3, dtype=torch.uint8)) != fph(algo, torch.zeros(8, dtype=torch.uint8))


def test_empty_tensors(algo: str) -> None:
    shapes = [(0,), (0, 3), (3, 0), (0, 0)]
    hexes = [fph(algo, torch.empty(s)) for s in shapes]
    assert len(set(hexes)) == len(shapes)
    assert fph(algo, torch.empty(0)) != fph(algo, torch.empty(0, dtype=torch.int64))
    assert hexes[0] == ref_a(algo, torch.empty(0))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_detects_one_bit(dtype: torch.dtype, algo: str) -> None:
    t = make(dtype, (3, 11), seed=11)
    base = fph(algo, t)
    assert base == fph(algo, t.clone())
    nbytes = t.numel() * t.element_size()
    for byte in (0, nbytes // 2, nbytes - 1):
        assert fph(algo, flip_first_bit(t, byte)) != base


def test_no_collisions_among_many_small_variants(algo: str) -> None:
    # Every single-bit flip of a 64-byte tensor gives a distinct fingerprint.
    t = torch.zeros(16, dtype=torch.int32)
    variants = [t] + [flip_first_bit(t, byte) for byte in range(64)]
    variants += [(t.view(torch.uint8) ^ (1 << b)).view(torch.int32) for b in range(1, 8)]
    hexes = to_hex(fingerprint_many(variants, algorithm=algo), algo)
    assert len(set(hexes)) == len(variants)


# ---------------------------------------------------------------------------------------------------
# Sparse


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")
def test_sparse_coo(algo: str) -> None:
    i = torch.tensor([[0, 1, 2], [2, 0, 1]])
    v = torch.tensor([1.0, 2.0, 3.0])
    s = torch.sparse_coo_tensor(i, v, (3, 3))
    assert fph(algo, s) == ref_a(algo, s)
    assert fph(algo, s) == fph(algo, s.coalesce())
    assert fph(algo, s) != fph(algo, s.to_dense())
    changed_value = torch.sparse_coo_tensor(i, torch.tensor([1.0, 2.0, 3.5]), (3, 3))
    changed_index = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2], [2, 0, 0]]), v, (3, 3))
    bigger = torch.sparse_coo_tensor(i, v, (4, 3))
    assert len({fph(algo, x) for x in (s, changed_value, changed_index, bigger)}) == 4
    # Duplicate entries are summed by coalescing, as the tensor's value says.
    dup = torch.sparse_coo_tensor(torch.tensor([[0, 0], [1, 1]]), torch.tensor([1.0, 2.0]), (2, 2))
    one = torch.sparse_coo_tensor(torch.tensor([[0], [1]]), torch.tensor([3.0]), (2, 2))
    assert fph(algo, dup) == fph(algo, one)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")
def test_sparse_csr_and_empty_sparse(algo: str) -> None:
    dense = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    csr = dense.to_sparse_csr()
    assert fph(algo, csr) == ref_a(algo, csr)
    assert fph(algo, csr) != fph(algo, dense.to_sparse())
    empty = torch.sparse_coo_tensor(torch.empty(2, 0, dtype=torch.int64), torch.empty(0), (3, 3))
    assert fph(algo, empty) == ref_a(algo, empty)


# ---------------------------------------------------------------------------------------------------
# API


def test_fingerprint_many_equals_stacked_fingerprints(algo: str) -> None:
    tensors = [make(d, (n,), seed=n) for n, d in enumerate(DTYPES)]
    tensors += [torch.randn(70_000, generator=torch.Generator().manual_seed(5)), torch.empty(0)]
    many = fingerprint_many(tensors, algorithm=algo)
    assert many.shape == (len(tensors), 2)
    assert torch.equal(many, torch.stack([fingerprint(t, algorithm=algo) for t in tensors]))
    assert fingerprint_many([]).shape == (0, 2)
    assert fingerprint_many(iter(tensors[:2])).shape == (2, 2)


def test_no_rng_consumed(algo: str) -> None:
    tensors = [torch.randn(n) for n in (3, 1000, 300_000)]
    state = torch.get_rng_state()
    fingerprint_many(tensors, algorithm=algo)
    fingerprint_hex(tensors[0], algorithm=algo)
    assert torch.equal(state, torch.get_rng_state())


def test_inference_mode_and_deterministic_algorithms(algo: str) -> None:
    with torch.inference_mode():
        t = torch.arange(1000, dtype=torch.float32)
        inside = fph(algo, t)
    assert inside == fph(algo, t) == fph(algo, torch.arange(1000, dtype=torch.float32))
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert fph(algo, t) == inside
    finally:
        torch.use_deterministic_algorithms(before)


def test_to_hex_format() -> None:
    fp = torch.tensor([-1, 1], dtype=torch.int64)
    assert to_hex(fp, "v1") == "ffffffffffffffff0000000000000001"
    assert to_hex(fp) == to_hex(fp, "x3") == "x3:ffffffffffffffff0000000000000001"  # a CPU tensor: x3
    assert to_hex(torch.stack([fp, fp])) == [to_hex(fp)] * 2
    assert to_hex(torch.empty(0, 2, dtype=torch.int64)) == []
    with pytest.raises(InvalidArgumentError):
        to_hex(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(InvalidArgumentError):
        to_hex(torch.zeros(2))


def test_combine_hex_is_order_aware() -> None:
    a, b = fingerprint_hex(torch.zeros(1)), fingerprint_hex(torch.ones(1))
    c = combine_hex([a, b])
    assert c.startswith("x3:") and len(c) == 35 and int(c[3:], 16) >= 0
    v = combine_hex([fingerprint_hex(torch.zeros(1), algorithm="v1")])
    assert len(v) == 32 and int(v, 16) >= 0  # v1 parts (and fingerprint_bytes) combine to bare hex
    assert combine_hex([fingerprint_bytes(b"x")]) == combine_hex([fingerprint_bytes(b"x").upper()])
    assert c == combine_hex((a, b))
    assert c != combine_hex([b, a])
    assert c != combine_hex([a])
    assert combine_hex([]) != combine_hex([a])
    with pytest.raises(InvalidArgumentError):
        combine_hex(a)
    with pytest.raises(InvalidArgumentError):
        combine_hex(["xyz"])
    with pytest.raises(InvalidArgumentError):
        combine_hex(["g" * 32])


def test_fingerprint_bytes() -> None:
    data = b"some rng state"
    assert fingerprint_bytes(data) == xxhash.xxh3_128_hexdigest(data)
    assert fingerprint_bytes(memoryview(data)) == fingerprint_bytes(data)
    assert len(fingerprint_bytes(b"")) == 32
    with pytest.raises(InvalidArgumentError):
        fingerprint_bytes("text")  # type: ignore[arg-type]


def test_rejects_non_tensors_and_meta() -> None:
    with pytest.raises(InvalidArgumentError):
        fingerprint([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        fingerprint(torch.empty(3, device="meta"))


# ---------------------------------------------------------------------------------------------------
# CUDA (run where a GPU is present)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_matches_cpu_without_sync() -> None:
    tensors = [make(d, (5, 7), seed=3) for d in DTYPES]
    tensors += [torch.randn(3_000_001, generator=torch.Generator().manual_seed(0))]
    on_gpu = [t.cuda() for t in tensors]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    torch.use_deterministic_algorithms(True)
    try:
        fps = fingerprint_many(on_gpu)
        single = fingerprint(on_gpu[0])
    finally:
        torch.use_deterministic_algorithms(False)
        torch.cuda.set_sync_debug_mode("default")
    assert fps.device == on_gpu[0].device and single.device == on_gpu[0].device
    assert algorithm_for(on_gpu[0]) == "v1"
    # The same bits as v1 on the CPU (comparable), and marked apart from the CPU's default x3.
    assert to_hex(fps) == to_hex(fingerprint_many(tensors, algorithm="v1"), "v1")
    cpu_default = to_hex(fingerprint_many(tensors))
    assert {fingerprint_algorithm(h) for h in cpu_default} == {"x3"}
    assert {fingerprint_algorithm(h) for h in to_hex(fps)} == {"v1"}
    assert to_hex(fingerprint_many(on_gpu[:3], algorithm="x3"), "x3") == cpu_default[:3]


@cuda
def test_mixed_devices_result_on_first_device() -> None:
    a, b = torch.arange(10.0), torch.arange(10.0, 20.0)
    out = fingerprint_many([a, b.cuda()])
    assert out.device == a.device
    assert to_hex(out, ["x3", "v1"]) == [ref(a, "x3"), ref(b, "v1")]
    assert torch.equal(
        fingerprint_many([a, b.cuda()], algorithm="v1"), fingerprint_many([a, b], algorithm="v1")
    )
