"""Tensors on their way to the host: started on the training thread, finished on the writer thread.

A CUDA tensor is copied with ``non_blocking=True`` into pinned memory and an event is recorded;
the training thread returns at once and only the writer thread waits on the event. A CPU tensor
is cloned, so a training loop that reuses its buffers cannot change what was logged. Every copy is
contiguous, so its bytes can be viewed, hashed and written as they are (Parquet, safetensors).
This is the one host copy: records, telemetry packs and dumps all use it.
"""

from __future__ import annotations

import numpy as np
import torch


class HostCopy:
    """One tensor's contiguous host copy in flight; ``get()``/``numpy()`` wait for it (off the training thread)."""

    __slots__ = ("event", "tensor")

    def __init__(self, tensor: torch.Tensor, *, dtype: torch.dtype | None = None) -> None:
        t = tensor.detach() if tensor.requires_grad else tensor
        self.event = None
        if t.is_cpu:  # the common case first, in few calls: one copy (a conversion is the copy)
            if dtype is not None and t.dtype != dtype:
                self.tensor = t.to(dtype, memory_format=torch.contiguous_format)
            elif t.is_contiguous():
                self.tensor = t.clone()
            else:
                self.tensor = t.clone(memory_format=torch.contiguous_format)
            return
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype, memory_format=torch.contiguous_format)  # on the tensor's own device, queued there
        if t.is_cuda:
            # non_blocking from CUDA allocates the destination pinned, so the copy is truly asynchronous
            self.tensor = t.to("cpu", non_blocking=True, memory_format=torch.contiguous_format)
            self.event = torch.cuda.Event()
            self.event.record()
        else:  # mps, xpu…: no portable event, a plain copy is the honest option
            self.tensor = t.to("cpu", memory_format=torch.contiguous_format)

    def get(self) -> torch.Tensor:
        """The host tensor, once its copy has finished."""
        if self.event is not None:
            self.event.synchronize()
        return self.tensor

    def numpy(self) -> np.ndarray:
        return self.get().numpy()


def resolve(value: HostCopy | np.ndarray | None) -> np.ndarray | None:
    """The numpy array behind a pending copy (writer thread only)."""
    if isinstance(value, HostCopy):
        return value.numpy()
    return value
