"""A dump's files: written whole under a temporary name then renamed, read back bit-exactly.

Each file's metadata holds an xxh3-128 checksum per tensor, so a flipped bit is reported as a
corrupted file instead of being compared, or trained from, as if it were weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
import xxhash
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lakelog.errors import DumpError
from lakelog.lake import dump_layout as L
from lakelog.lake.files import write_atomic

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: safetensors creates files 0600, the lake's other files follow the umask


class Dump(NamedTuple):
    """One loaded dump; unpacks as ``state_dict, optimizer_flat, metadata``."""

    state_dict: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def _checksum(t: torch.Tensor) -> str:
    return xxhash.xxh3_128_hexdigest(t.reshape(-1).view(torch.uint8).numpy())


def _write_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> int:
    """Write atomically (``lake.files.write_atomic``): a reader never sees half a file."""
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), mode=0o666 & ~_UMASK)
    return path.stat().st_size


def write_dump_files(
    folder: Path,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, torch.Tensor] | None,
    metadata: dict[str, str],
    *,
    names: list[str],
    ties: dict[str, str],
    optimizer_meta: dict[str, Any] | None = None,
    optimizer_ties: dict[str, str] | None = None,
) -> tuple[int, int]:
    """Write one step's files (optimizer first, model last: the model file marks a finished dump)."""
    folder.mkdir(parents=True, exist_ok=True)
    opt_path = folder / L.OPTIMIZER_FILE
    opt_bytes = 0
    if optimizer is None:
        opt_path.unlink(missing_ok=True)  # a stale file from an earlier dump of this step would mislead
    else:
        opt_meta = {
            **metadata,
            L.META_OPTIMIZER: json.dumps(optimizer_meta or {}),
            L.META_TIES: json.dumps(optimizer_ties or {}),
            L.META_CHECKSUMS: json.dumps({n: _checksum(t) for n, t in optimizer.items()}),
        }
        opt_bytes = _write_file(opt_path, optimizer, opt_meta)
    model_meta = {
        **metadata,
        L.META_NAMES: json.dumps(names),
        L.META_TIES: json.dumps(ties),
        L.META_CHECKSUMS: json.dumps({n: _checksum(t) for n, t in model.items()}),
    }
    return _write_file(folder / L.MODEL_FILE, model, model_meta), opt_bytes


def _read_file(path: Path, *, verify: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError) as exc:
        raise DumpError(f"{path}: not a readable safetensors dump ({exc})") from exc
    meta = L.parse_metadata(raw)
    if verify:
        for name, expected in meta[L.META_CHECKSUMS].items():
            if name in tensors and _checksum(tensors[name]) != expected:
                raise DumpError(f"{path}: tensor {name!r} does not match its checksum: the file is corrupted")
    return tensors, meta


def load_dump(path: str | os.PathLike[str], *, verify: bool = True) -> Dump:
    """Load a dump (its step folder or its model.safetensors) bit-exactly, ties restored; never unpickles."""
    path = Path(path)
    model_path = path / L.MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise DumpError(f"{model_path}: no such dump file (expected <run>/dumps/step=<s>/{L.MODEL_FILE})")
    tensors, meta = _read_file(model_path, verify=verify)
    for alias, canonical in meta[L.META_TIES].items():
        if canonical not in tensors:
            raise DumpError(
                f"{model_path}: tied name {alias!r} points at {canonical!r}, which the file lacks"
            )
        tensors[alias] = tensors[canonical]  # one tensor under both names, as in the model
    order = meta[L.META_NAMES] or list(tensors)
    state = {n: tensors[n] for n in order if n in tensors} | {
        n: t for n, t in tensors.items() if n not in order
    }
    optimizer: dict[str, torch.Tensor] = {}
    opt_path = model_path.parent / L.OPTIMIZER_FILE
    if opt_path.is_file():
        optimizer, opt_meta = _read_file(opt_path, verify=verify)
        for alias, canonical in opt_meta[L.META_TIES].items():
            optimizer[alias] = optimizer[canonical]
        meta[L.META_OPTIMIZER] = opt_meta[L.META_OPTIMIZER]
    return Dump(state, optimizer, meta)
