"""The model and optimizer the user wrote, behind the wrappers trainers put around them.

Telemetry names parameters and dumps name tensors as the user's own module does, so a run trained
under DDP, ``DataParallel`` or ``torch.compile`` compares name for name with a plain run, and a
Lightning or accelerate optimizer wrapper is read through to the torch optimizer inside it.
"""

from __future__ import annotations

from typing import Any

import torch

_MAX_DEPTH = 8  # wrappers nest (DDP of a compiled module, or the reverse); a cycle must not loop forever


def unwrap_model(model: Any) -> Any:
    """``model`` without DDP/``DataParallel`` (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers.

    Anything that is not such a wrapper (a plain module, a state dict) is returned unchanged; the
    caller checks the type it accepts.
    """
    for _ in range(_MAX_DEPTH):
        if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            model = model.module
        elif isinstance(model, torch.nn.Module) and isinstance(
            getattr(model, "_orig_mod", None), torch.nn.Module
        ):
            model = model._orig_mod
        else:
            break
    return model


def unwrap_optimizer(optimizer: Any) -> Any:
    """The innermost ``torch.optim.Optimizer`` behind Lightning/accelerate wrappers (``.optimizer``).

    Such wrappers subclass ``Optimizer`` themselves, but only the inner optimizer's step hooks fire,
    so the ``.optimizer`` chain is followed to its innermost optimizer. Anything else (a state dict,
    None, something the caller refuses by its own type check) is returned unchanged.
    """
    found, inner = optimizer, optimizer
    for _ in range(_MAX_DEPTH):
        inner = getattr(inner, "optimizer", None)
        if inner is None:
            break
        if isinstance(inner, torch.optim.Optimizer):
            found = inner
    return found
