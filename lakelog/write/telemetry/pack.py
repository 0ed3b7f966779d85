"""``Pack``: device tensors bound for the host, shipped with one non-blocking copy per device.

Why it exists: a capture produces many small device tensors (statistics, fingerprints, update
norms, holdout logits); copying each one would wait for the device once per tensor. ``Pack``
concatenates them per device on the training thread and reads them back on the writer thread.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lakelog.write.hostcopy import HostCopy

F64 = torch.float64


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
        self._host_values: dict[str, np.ndarray] = {}

    def add(self, key: str, t: torch.Tensor) -> None:
        is_int = t.dtype == torch.int64
        flat = t.detach().reshape(-1)
        flat = flat.view(F64) if is_int else flat.to(F64)
        device = flat.device
        offset = self._sizes.get(device, 0)
        self._parts.setdefault(device, []).append(flat)
        self._sizes[device] = offset + flat.numel()
        self._where[key] = (device, offset, tuple(t.shape), is_int)

    def put(self, key: str, value: torch.Tensor | np.ndarray) -> None:
        """``add`` for device tensors; a NumPy array or CPU tensor computed for this capture alone is
        kept as it is (nothing else holds it, so there is nothing to copy)."""
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            self.add(key, value)
            return
        self._host_values[key] = value.numpy() if isinstance(value, torch.Tensor) else value

    @property
    def nbytes(self) -> int:
        """Bytes bound for (or already on) the host."""
        return 8 * sum(self._sizes.values()) + sum(v.nbytes for v in self._host_values.values())

    def __contains__(self, key: str) -> bool:
        return key in self._where or key in self._host_values

    def send(self) -> None:
        """Start the copies (training thread); nothing waits for the device."""
        for device, parts in self._parts.items():
            self._copies[device] = HostCopy(torch.cat(parts) if len(parts) > 1 else parts[0])
        self._parts.clear()

    def get(self, key: str) -> np.ndarray:
        """The host array for ``key`` (writer thread: waits for its device's copy)."""
        if key in self._host_values:
            return self._host_values[key]
        device, offset, shape, is_int = self._where[key]
        if device not in self._host:
            self._host[device] = self._copies[device].numpy()
        size = math.prod(shape)
        out = self._host[device][offset : offset + size]
        return (out.view(np.int64) if is_int else out).reshape(shape)
