"""Optimizer state under stable names, and back.

``optimizer.state_dict()`` keys its state by the position of each parameter in the param groups,
which means nothing once two codebases are compared. A dump names each state tensor after its
parameter instead: ``<param name>.<state key>`` (``fc.weight.exp_avg``, ``fc.weight.momentum_buffer``,
``fc.weight.step``). What is needed to rebuild a loadable state dict (positions, hyperparameters,
non-tensor state) goes to the optimizer file's metadata as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lakelog.errors import DumpError, InvalidArgumentError
from lakelog.write.unwrap import unwrap_model, unwrap_optimizer


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _names_from_state_dicts(model: Mapping[str, Any], state_dict: Mapping[str, Any]) -> dict[int, str]:
    """Positions -> names for a saved optimizer next to a saved model (``torch.save`` checkpoints).

    The model's parameters are its state-dict tensors less BatchNorm's running statistics and tied
    duplicates, in order, as ``model.parameters()`` gives them. Used only when the counts agree and
    every state tensor has its parameter's shape; otherwise the positions stay ``param<i>``.
    """
    seen: set[tuple] = set()
    candidates = []
    for name, tensor in model.items():
        if not isinstance(tensor, torch.Tensor) or name.endswith(_BUFFERS):
            continue
        key = (
            (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if tensor.numel()
            else None
        )
        if key is None or key not in seen:
            candidates.append(name)
            seen.add(key)
    positions = [int(i) for group in state_dict["param_groups"] for i in group["params"]]
    if len(candidates) != len(positions):
        return {}
    names = dict(zip(positions, candidates, strict=True))
    for index, entries in state_dict["state"].items():
        shape = model[names[int(index)]].shape
        if any(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != shape for v in entries.values()):
            return {}
    return names


def _names(groups: list[Mapping[str, Any]], optimizer: Any, model: Any) -> dict[int, str]:
    """Position in the state dict -> parameter name: by identity with the model's parameters where we
    have both, else the groups' ``param_names`` (optimizers built from ``named_parameters()``), else by
    order from a saved model's state dict when that is certain, else ``param<i>``."""
    by_id: dict[int, str] = {}
    model = unwrap_model(model)
    if isinstance(model, torch.nn.Module):
        by_id = {id(p): n for n, p in model.named_parameters()}
    live = optimizer.param_groups if isinstance(optimizer, torch.optim.Optimizer) else None
    if live is None and isinstance(model, Mapping) and not any(g.get("param_names") for g in groups):
        inferred = _names_from_state_dicts(model, optimizer)
        if inferred:
            groups = [{**g, "param_names": [inferred[int(i)] for i in g["params"]]} for g in groups]
    names: dict[int, str] = {}
    used: set[str] = set()
    position = 0
    for g, group in enumerate(groups):
        labels = group.get("param_names") or []
        for j, index in enumerate(group["params"]):
            key = position if live is not None else int(index)
            name = by_id.get(id(live[g]["params"][j])) if live is not None else None
            name = name or (labels[j] if j < len(labels) else None)
            if not name or name in used:
                name = f"param{key}"
            names[key] = name
            used.add(name)
            position += 1
    return names


def flatten_optimizer(
    optimizer: Any, model: Any = None
) -> tuple[list[tuple[str, torch.Tensor]], dict[str, Any]]:
    """An optimizer (or its state dict) as named tensors plus the JSON needed to rebuild its state dict."""
    optimizer = unwrap_optimizer(optimizer)
    if isinstance(optimizer, torch.optim.Optimizer):
        state_dict = optimizer.state_dict()
        kind = type(optimizer).__name__
    elif isinstance(optimizer, Mapping) and "state" in optimizer and "param_groups" in optimizer:
        state_dict, kind = optimizer, None
    else:
        raise InvalidArgumentError(
            f"optimizer: expected a torch.optim.Optimizer or its state_dict(), got {type(optimizer).__name__}"
        )
    names = _names(list(state_dict["param_groups"]), optimizer, model)
    flat: list[tuple[str, torch.Tensor]] = []
    tensors: dict[str, dict[str, str]] = {}
    scalars: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for index, entries in state_dict["state"].items():
        base = names.get(int(index), f"param{index}")
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                name = f"{base}.{key}"
                if name in taken:
                    raise DumpError(f"optimizer: two state entries would both be named {name!r}")
                taken.add(name)
                flat.append((name, value))
                tensors.setdefault(str(index), {})[str(key)] = name
            else:
                scalars.setdefault(str(index), {})[str(key)] = _jsonable(value)
    meta = {
        "class": kind,
        "param_names": {str(k): v for k, v in names.items()},
        "state": tensors,
        "scalars": scalars,
        "param_groups": [_jsonable(dict(group)) for group in state_dict["param_groups"]],
    }
    return flat, meta


def optimizer_state_dict(flat: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild what ``optimizer.load_state_dict`` takes from a dump's flat tensors and its metadata."""
    info = metadata.get("optimizer") if "optimizer" in metadata else metadata
    if not info or "state" not in info:
        raise DumpError("optimizer_state_dict: the dump has no optimizer metadata (was an optimizer dumped?)")
    state: dict[int, dict[str, Any]] = {}
    for index, entries in info["state"].items():
        for key, name in entries.items():
            if name not in flat:
                raise DumpError(f"optimizer_state_dict: tensor {name!r} is missing from the optimizer file")
            state.setdefault(int(index), {})[key] = flat[name]
    for index, entries in info.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": [dict(group) for group in info["param_groups"]]}
