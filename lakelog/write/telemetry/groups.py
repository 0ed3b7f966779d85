"""Which tensors a watcher follows, under which names, and which group each belongs to.

A group is what a user compares: "is the head learning 10x faster than the backbone?". By default
the groups are the optimizer's param groups (``group_0``, ``group_1``… or the group's ``name`` key);
``groups={"backbone": "features.", "head": "classifier."}`` names them by module prefix instead.
Everything here runs once, at ``watch`` time, so nothing in this module is on the hot path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lakelog.errors import InvalidArgumentError
from lakelog.write import unwrap

log = logging.getLogger("lakelog")

NOT_OPTIMIZED = "not_optimized"
"""Default group of parameters that are in the model but in none of the optimizer's param groups."""
OTHER = "other"
"""Group of parameters that match none of the user's group patterns."""

Matcher = Callable[[str], bool]


@dataclass
class Entry:
    """One watched tensor: its row name, the live tensor, its group and its kind (param or buffer)."""

    name: str
    tensor: torch.Tensor
    group: str | None
    kind: str


@dataclass
class Layout:
    """The watched tensors and the names of the optimizer's param groups (for ``lr/<group>`` scalars)."""

    params: list[Entry] = field(default_factory=list)
    buffers: list[Entry] = field(default_factory=list)
    opt_groups: list[str] = field(default_factory=list)


def unwrap_model(model: Any) -> torch.nn.Module:
    """The module whose parameter names the user knows (``lakelog.write.unwrap``); refuses non-modules."""
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return unwrap.unwrap_model(model)


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer behind a Lightning/accelerate wrapper (``lakelog.write.unwrap``), or None."""
    inner = unwrap.unwrap_optimizer(optimizer)
    if inner is None or isinstance(inner, torch.optim.Optimizer):
        return inner
    raise InvalidArgumentError(
        f"optimizer: expected a torch.optim.Optimizer (or None), got {type(optimizer).__name__}"
    )


def _matcher(pattern: Any, arg: str) -> Matcher:
    if isinstance(pattern, re.Pattern):
        return lambda name: pattern.search(name) is not None
    if isinstance(pattern, str) and pattern:
        if pattern.endswith("."):
            return lambda name: name.startswith(pattern)
        return lambda name: name == pattern or name.startswith(pattern + ".")
    if callable(pattern):
        return lambda name: bool(pattern(name))
    raise InvalidArgumentError(
        f"{arg}: expected a module prefix (str), a compiled regex (re.compile(...)), a callable(name) -> bool "
        f"or a list of those, got {pattern!r}"
    )


def compile_groups(groups: Any) -> list[tuple[str, list[Matcher]]] | None:
    """Check the user's ``groups`` mapping; None keeps the optimizer's param groups."""
    if groups is None:
        return None
    if not isinstance(groups, Mapping) or not groups:
        raise InvalidArgumentError(
            "groups: expected a non-empty mapping of group name to module prefix / regex, e.g. "
            '{"backbone": "features.", "head": "classifier."}, got ' + repr(groups)
        )
    out = []
    for name, patterns in groups.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidArgumentError(
                f"groups: group names must be non-empty strings without '/', got {name!r}"
            )
        items = list(patterns) if isinstance(patterns, list | tuple | set) else [patterns]
        if not items:
            raise InvalidArgumentError(f"groups[{name!r}]: expected at least one pattern")
        out.append((name, [_matcher(p, f"groups[{name!r}]") for p in items]))
    return out


def _user_group(name: str, compiled: list[tuple[str, list[Matcher]]]) -> str:
    for group, matchers in compiled:
        if any(m(name) for m in matchers):
            return group
    return OTHER


def _check_tensor(name: str, t: torch.Tensor) -> None:
    if isinstance(t, torch.nn.parameter.UninitializedParameter | torch.nn.parameter.UninitializedBuffer):
        raise InvalidArgumentError(
            f"model: {name!r} is an uninitialized lazy tensor; run one forward pass before watch()"
        )
    if t.device.type == "meta":
        raise InvalidArgumentError(
            f"model: {name!r} is on the meta device and holds no data; materialize the model before watch()"
        )
    if t.is_quantized or t.is_nested:
        raise InvalidArgumentError(
            f"model: {name!r} is a quantized or nested tensor, which lakelog cannot summarize"
        )


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n}_{i}" if seen[n] > 1 else n for i, n in enumerate(names)]


def _opt_group_names(optimizer: torch.optim.Optimizer | None, owners: dict[int, str]) -> list[str]:
    """``name`` key, else the one user group all the group's params fall in, else ``group_<i>``."""
    if optimizer is None:
        return []
    names = []
    for i, group in enumerate(optimizer.param_groups):
        label = group.get("name")
        if not isinstance(label, str) or not label:
            found = {owners.get(id(p)) for p in group["params"]}
            label = found.pop() if len(found) == 1 and None not in found else f"group_{i}"
        names.append(label.replace("/", "_"))
    return _unique(names)


def resolve(model: Any, optimizer: Any, groups: Any = None, *, prefix: str = "") -> Layout:
    """The watched parameters and buffers of ``model`` with their groups; checks every argument."""
    module = unwrap_model(model)
    opt = unwrap_optimizer(optimizer)
    compiled = compile_groups(groups)
    if not isinstance(prefix, str):
        raise InvalidArgumentError(f"prefix: expected a str, got {type(prefix).__name__}")
    named = list(module.named_parameters())
    buffers = list(module.named_buffers())
    if not named and not buffers:
        raise InvalidArgumentError("model: has no parameters or buffers to watch")
    for name, t in named + buffers:
        _check_tensor(name, t)
    by_id = {id(p): name for name, p in named}
    opt_params: list[tuple[int, int, torch.Tensor]] = []
    if opt is not None:
        for g, group in enumerate(opt.param_groups):
            opt_params += [(g, j, p) for j, p in enumerate(group["params"])]
        foreign = [(g, j, p) for g, j, p in opt_params if id(p) not in by_id]
        if opt_params and len(foreign) == len(opt_params):
            raise InvalidArgumentError(
                f"optimizer: none of its {len(opt_params)} parameters belongs to model "
                f"({type(module).__name__}); pass the model the optimizer was built from"
            )
        if foreign:
            log.warning(
                "lakelog.watch: %d optimizer parameter(s) are not in the model; they are recorded as "
                "'optimizer.<group>.<index>'",
                len(foreign),
            )
    user_owner = {id(p): _user_group(name, compiled) for name, p in named} if compiled else {}
    opt_names = _opt_group_names(opt, user_owner)
    opt_owner = {id(p): opt_names[g] for g, _, p in opt_params}
    layout = Layout(opt_groups=opt_names)
    for name, p in named:
        group = (
            user_owner[id(p)]
            if compiled
            else opt_owner.get(id(p), NOT_OPTIMIZED if opt is not None else None)
        )
        layout.params.append(Entry(prefix + name, p, group, "param"))
    for g, j, p in opt_params:
        if id(p) not in by_id:
            _check_tensor(f"optimizer.{opt_names[g]}.{j}", p)
            group = opt_names[g] if not compiled else OTHER
            layout.params.append(Entry(f"{prefix}optimizer.{opt_names[g]}.{j}", p, group, "param"))
    module_group = {}
    for entry, (name, _) in zip(layout.params, named, strict=False):
        module_group.setdefault(name.rpartition(".")[0], entry.group)
    for name, b in buffers:
        group = _user_group(name, compiled) if compiled else module_group.get(name.rpartition(".")[0])
        layout.buffers.append(Entry(prefix + name, b, group, "buffer"))
    return layout


def hyperparameters(optimizer: torch.optim.Optimizer, names: Iterable[str]) -> list[tuple[str, Any]]:
    """``lr/<group>``, ``momentum/<group>``, ``beta1/<group>``… as (scalar name, number or tensor) pairs."""
    out: list[tuple[str, Any]] = []
    for group, label in zip(optimizer.param_groups, names, strict=True):
        for key in ("lr", "momentum", "weight_decay"):
            if key in group and group[key] is not None:
                out.append((f"{key}/{label}", group[key]))
        betas = group.get("betas")
        if isinstance(betas, list | tuple) and len(betas) == 2:
            out += [(f"beta1/{label}", betas[0]), (f"beta2/{label}", betas[1])]
    return out


class GroupMasks:
    """The whole model ("") and each named group (first-seen order): scalar suffixes and row masks, made
    once per layout so the per-group norms of a capture are a few array operations."""

    def __init__(self, groups: list[str | None]) -> None:
        named = [g for g in dict.fromkeys(groups) if g is not None]
        self.labels = [""] + [f"/{g}" for g in named]
        garr = np.asarray(groups, dtype=object)
        self.matrix = np.vstack([np.ones(len(groups), dtype=bool)] + [garr == g for g in named])

    def norms(self, values: np.ndarray, valid: np.ndarray | None = None) -> list[float | None]:
        """Per label: the L2 norm of the concatenated tensors from their norms, over the rows that are
        ``valid``; None where no row counts."""
        m = self.matrix if valid is None else self.matrix & valid
        with np.errstate(invalid="ignore", over="ignore"):
            totals = np.sqrt(np.where(m, values * values, 0.0).sum(axis=1)).tolist()
        return [t if ok else None for t, ok in zip(totals, m.any(axis=1).tolist(), strict=True)]


def norm_scalars(
    masks: GroupMasks,
    weight: np.ndarray,
    grad: tuple[np.ndarray, np.ndarray] | None,
    update: np.ndarray | None,
    known: np.ndarray,
) -> list[tuple[str, float | None]]:
    """grad_norm, weight_norm, update_norm and update_ratio, overall and per group; ``grad`` is the
    gradient norms and where they are known."""
    w = masks.norms(weight)
    g = masks.norms(*grad) if grad is not None else None
    u = masks.norms(update, known) if update is not None else None
    out: list[tuple[str, float | None]] = []
    for j, label in enumerate(masks.labels):
        out.append((f"weight_norm{label}", w[j]))
        if g is not None:
            out.append((f"grad_norm{label}", g[j]))
        if u is not None:
            uj, wj = u[j], w[j]
            out.append((f"update_norm{label}", uj))
            out.append((f"update_ratio{label}", uj / wj if uj is not None and wj else None))
    return out
