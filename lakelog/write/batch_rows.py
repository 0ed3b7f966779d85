"""Rows of ``run.log_batch``: the batch's sample ids in order and an exact fingerprint of its inputs.

``batch_job`` runs on the training thread: it checks the ids and inputs (errors name the argument),
starts the host copies and returns the builder of the batch's one row, which the writer thread calls.

Where the input fingerprint is computed: small CPU inputs (up to ``DEFER_BYTES`` in all) are copied
and fingerprinted on the writer thread, since the hashing call's fixed cost is what a small batch pays
on the training thread, not its bytes; larger CPU inputs are hashed where they are, with no copy; inputs
on an accelerator are fingerprinted there, without waiting for the device (only the 16-byte results
travel). A copy has the same bytes, dtype and shape as its input, so the fingerprint is the same either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import optional_non_negative_int
from lakelog.write.fingerprint import algorithm_for, fingerprint_many
from lakelog.write.hostcopy import HostCopy, resolve
from lakelog.write.partfiles import Row
from lakelog.write.records import _digest, _length, _uniform_list, _values_digest

DEFER_BYTES = 1 << 20
"""CPU inputs up to this many bytes (all tensors of a batch together) are fingerprinted on the writer thread."""


def _ids_array(sample_ids: Any) -> HostCopy | np.ndarray | list:
    if isinstance(sample_ids, torch.Tensor) and sample_ids.ndim == 1:  # the common case, in few calls
        if sample_ids.is_floating_point() or sample_ids.is_complex():
            raise InvalidArgumentError(
                f"sample_ids: expected integer or string ids, got a {sample_ids.dtype} tensor"
            )
        return HostCopy(sample_ids, dtype=torch.int64)
    _length(sample_ids, "sample_ids")
    if isinstance(sample_ids, np.ndarray):
        if sample_ids.dtype.kind == "f":
            raise InvalidArgumentError(
                f"sample_ids: expected integer or string ids, got dtype {sample_ids.dtype}"
            )
        return sample_ids.copy()
    return _uniform_list(sample_ids, "sample_ids")


def _input_tensors(inputs: Any) -> list[tuple[str, torch.Tensor]]:
    """Flatten a tensor, a sequence or a mapping of tensors into named tensors in a stable order."""
    if inputs is None:
        return []
    if isinstance(inputs, torch.Tensor):
        return [("0", inputs)]
    if isinstance(inputs, np.ndarray):
        return [("0", torch.from_numpy(inputs))]
    if isinstance(inputs, Mapping):
        items = list(inputs.items())
    elif isinstance(inputs, Sequence) and not isinstance(inputs, str | bytes):
        items = [(str(i), v) for i, v in enumerate(inputs)]
    else:
        raise InvalidArgumentError(
            f"inputs: expected a tensor, or a list/tuple/dict of tensors, got {type(inputs).__name__}"
        )
    out = []
    for name, value in items:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise InvalidArgumentError(f"inputs[{name!r}]: expected a tensor, got {type(value).__name__}")
        out.append((str(name), value))
    return out


def _plain_cpu(t: torch.Tensor) -> bool:
    """A dense real CPU tensor: its copy is fingerprinted exactly as it is (nothing to refuse later)."""
    return t.is_cpu and t.layout is torch.strided and not (t.is_quantized or t.is_nested or t.is_complex())


def _described(names: list[str], tensors: list[torch.Tensor]) -> tuple[str, str]:
    """The inputs' shapes text and their fingerprint's prefix: the algorithms of its parts (x3 on CPU,
    v1 elsewhere; none written for v1 alone), as fingerprints carry them."""
    shapes = ";".join(
        f"{name}:{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"
        for name, t in zip(names, tensors, strict=True)
    )
    algos = sorted({algorithm_for(t) for t in tensors})
    return shapes, "" if algos == ["v1"] else "+".join(algos) + ":"


def _input_fingerprint(described: tuple[str, str], words: np.ndarray) -> str:
    """One text for all inputs of a batch: their fingerprints and shapes hashed together."""
    shapes, prefix = described
    return prefix + _digest(np.ascontiguousarray(words).tobytes() + shapes.encode())


def batch_job(
    *,
    step: int,
    sample_ids: Any,
    inputs: Any = None,
    batch_idx: int | None = None,
    rng: Mapping[str, str | None] | None = None,
) -> Callable[[], dict[str, Row]]:
    """Validate one batch's ids and inputs and return the builder of its row (see the module docstring)."""
    if batch_idx is not None:
        batch_idx = optional_non_negative_int(batch_idx, "batch_idx")
    host_ids = _ids_array(sample_ids)
    named = _input_tensors(inputs)
    names = [name for name, _ in named]
    tensors = [t for _, t in named]
    copies: list[HostCopy] | None = None  # small CPU inputs: fingerprinted on the writer thread
    pending: HostCopy | torch.Tensor | None = None  # the others' fingerprints, computed here
    described: tuple[str, str] | None = None
    nbytes = 0
    if tensors:
        if all(_plain_cpu(t) for t in tensors) and sum(t.nbytes for t in tensors) <= DEFER_BYTES:
            copies = [HostCopy(t) for t in tensors]
            nbytes = sum(c.tensor.nbytes for c in copies)
        else:
            described = _described(names, tensors)
            fp = fingerprint_many(tensors)  # a fresh tensor: on the host it needs no copy
            pending = fp if fp.is_cpu else HostCopy(fp)
    rng = dict(rng or {})
    stamp = int(time.time() * 1e6)

    def build() -> dict[str, Row]:
        raw = resolve(host_ids)
        strings = list(map(str, raw.tolist() if isinstance(raw, np.ndarray) else raw))
        input_fp = shapes = None
        if copies is not None:
            held = [c.tensor for c in copies]
            described_now = _described(names, held)
            input_fp, shapes = (
                _input_fingerprint(described_now, fingerprint_many(held).numpy()),
                described_now[0],
            )
        elif pending is not None:
            input_fp, shapes = _input_fingerprint(described, pending.numpy()), described[0]
        row = (
            step,
            batch_idx,
            len(strings),
            strings,
            _values_digest(strings),
            _values_digest(sorted(strings)),
            input_fp,
            shapes,
            rng.get("torch"),
            rng.get("cuda"),
            rng.get("numpy"),
            rng.get("python"),
            stamp,
        )
        return {"batches": Row(row, 256 + 16 * len(strings))}

    build.rows = 1
    build.steps = (step, step)
    build.nbytes = nbytes
    return build
