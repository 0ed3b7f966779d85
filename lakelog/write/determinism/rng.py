"""Reading the global RNG states without drawing from them: fingerprints to compare runs, and save/restore.

Also saves and restores the determinism flags and variables, so ``check_determinism(fn)`` can put
everything back after training twice.
"""

from __future__ import annotations

import array
import ctypes
import os
import random
import struct
from typing import Any

import numpy as np
import torch

from lakelog.lake.checker_env import DETERMINISM_ENV
from lakelog.write.fingerprint import combine_hex, fingerprint_bytes


def _numpy_state_bytes(state: tuple) -> bytes:
    _, keys, pos, has_gauss, gauss = state
    return np.ascontiguousarray(keys, dtype=np.uint32).tobytes() + struct.pack("<qqd", pos, has_gauss, gauss)


def _numpy_global_bytes() -> bytes:
    """NumPy's global MT19937 key and position, read through its documented ctypes address (2 us instead of
    the 200+ us of ``np.random.get_state()``); the cached Gaussian of the legacy API is left out."""
    if _FAST_NUMPY:
        return ctypes.string_at(np.random.mtrand._rand._bit_generator.ctypes.state_address, _MT19937_BYTES)
    return _numpy_state_bytes(np.random.get_state())[:_MT19937_BYTES]


def _fast_numpy_works() -> bool:
    try:
        _, keys, pos, _, _ = np.random.get_state()
        raw = ctypes.string_at(np.random.mtrand._rand._bit_generator.ctypes.state_address, _MT19937_BYTES)
        return raw == np.ascontiguousarray(keys, dtype=np.uint32).tobytes() + struct.pack("<i", pos)
    except Exception:
        return False


_MT19937_BYTES = 624 * 4 + 4
_FAST_NUMPY = _fast_numpy_works()


def _python_state_bytes(state: tuple) -> bytes:
    version, internal, gauss = state
    return array.array("Q", internal).tobytes() + repr((version, gauss)).encode()


def rng_fingerprints() -> dict[str, str | None]:
    """Fingerprints of the global RNG states (torch CPU, CUDA devices combined, NumPy, ``random``).

    Reading a state draws nothing. CUDA is fingerprinted only once the program has started it, so
    calling this never initialises CUDA; ``cuda`` is None otherwise.
    """
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = combine_hex([fingerprint_bytes(memoryview(s.numpy())) for s in torch.cuda.get_rng_state_all()])
    return {
        "torch": fingerprint_bytes(memoryview(torch.get_rng_state().numpy())),
        "cuda": cuda,
        "numpy": fingerprint_bytes(_numpy_global_bytes()),
        "python": fingerprint_bytes(_python_state_bytes(random.getstate())),
    }


def save_state() -> dict[str, Any]:
    """The global RNG states, determinism flags and variables, for ``restore_state`` (tests, check_determinism)."""
    cuda = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    return {
        "rng": (torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()),
        "flags": save_flags(),
    }


def restore_state(saved: dict[str, Any]) -> None:
    torch_state, cuda, numpy_state, python_state = saved["rng"]
    torch.set_rng_state(torch_state)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    restore_flags(saved["flags"])


def save_flags() -> dict[str, Any]:
    cudnn = torch.backends.cudnn
    return {
        "cudnn": (cudnn.deterministic, cudnn.benchmark),
        "algorithms": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "env": {name: os.environ.get(name) for name in DETERMINISM_ENV},
    }


def restore_flags(saved: dict[str, Any]) -> None:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved["cudnn"]
    enabled, warn_only = saved["algorithms"]
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    for name, value in saved["env"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
