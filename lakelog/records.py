"""Turning what a training loop hands us into Arrow batches, in bulk.

Each ``*_job`` function runs on the training thread: it checks its arguments (so a mistake is
reported where it was made, naming the argument), starts the host copies, and returns a closure
that the writer thread calls to build the Arrow batch. No Python loop runs per sample.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import xxhash

from . import schemas
from .errors import InvalidArgumentError
from .hostcopy import HostCopy, as_host, resolve

RESERVED = set(schemas.PREDICTIONS.names) | {"epoch", "rank", "run"}
ID_SEPARATOR = "\x1f"


def _times(stamp: float, n: int) -> pa.Array:
    return pa.array(np.full(n, int(stamp * 1e6), dtype=np.int64)).cast(schemas.TIME)


def _length(value: Any, arg: str) -> int:
    if isinstance(value, torch.Tensor | np.ndarray):
        if value.ndim != 1:
            raise InvalidArgumentError(f"{arg}: expected one value per sample (1-D), got shape {tuple(value.shape)}")
        return int(value.shape[0])
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return len(value)
    raise InvalidArgumentError(
        f"{arg}: expected a 1-D tensor, numpy array or list with one value per sample, got {type(value).__name__}"
    )


def _digest(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _array_digest(arr: pa.Array | np.ndarray | None) -> str | None:
    """Exact digest of a column's values (not its buffers' slack)."""
    if arr is None:
        return None
    if isinstance(arr, np.ndarray):
        return _digest(np.ascontiguousarray(arr).tobytes())
    strings = pc.cast(arr, pa.string()).to_pylist()
    return _digest(ID_SEPARATOR.join("" if s is None else s for s in strings).encode())


def _key_column(name: str, value: Any, n: int) -> HostCopy | np.ndarray | list:
    if not isinstance(name, str) or not name or name in RESERVED:
        raise InvalidArgumentError(
            f"keys: key names must be non-empty strings other than {sorted(RESERVED)}, got {name!r}"
        )
    if _length(value, f"keys[{name!r}]") != n:
        raise InvalidArgumentError(
            f"keys[{name!r}]: expected {n} values (one per row of logits), got {_length(value, f'keys[{name!r}]')}"
        )
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            raise InvalidArgumentError(f"keys[{name!r}]: expected integer or string ids, got a {value.dtype} tensor")
        return HostCopy(value, dtype=torch.int64)
    if isinstance(value, np.ndarray):
        return value.copy()
    return list(value)


def _key_array(value: HostCopy | np.ndarray | list) -> pa.Array:
    if isinstance(value, list):
        try:
            return pa.array(value)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidArgumentError(f"keys: values must all be strings or all integers ({exc})") from exc
    return pa.array(resolve(value))


def predictions_job(
    logits: Any,
    *,
    step: int,
    labels: Any = None,
    keys: Mapping[str, Any] | None = None,
    loss: Any = None,
    batch_idx: int | None = None,
) -> Callable[[], dict[str, pa.Table]]:
    """Validate one batch of predictions and return the builder of its rows (and its digest row)."""
    if not isinstance(logits, torch.Tensor | np.ndarray):
        raise InvalidArgumentError(f"logits: expected a tensor or numpy array of shape (batch, classes), got {type(logits).__name__}")
    if logits.ndim == 1:
        logits = logits.reshape(-1, 1)
    if logits.ndim != 2:
        raise InvalidArgumentError(f"logits: expected shape (batch, classes), got {tuple(logits.shape)}")
    if isinstance(logits, torch.Tensor) and logits.is_complex():
        raise InvalidArgumentError("logits: complex tensors are not supported; log the real scores")
    n, classes = int(logits.shape[0]), int(logits.shape[1])
    host_logits = as_host(logits, dtype=torch.float32) if isinstance(logits, torch.Tensor) else np.asarray(logits, dtype=np.float32).copy()

    host_labels = None
    if labels is not None:
        if _length(labels, "labels") != n:
            raise InvalidArgumentError(f"labels: expected {n} labels (one per row of logits), got {_length(labels, 'labels')}")
        if isinstance(labels, torch.Tensor):
            if labels.is_floating_point() or labels.is_complex():
                raise InvalidArgumentError(f"labels: expected integer class indices, got a {labels.dtype} tensor (use .long())")
            host_labels = HostCopy(labels, dtype=torch.int64)
        else:
            array = np.asarray(labels)
            if array.dtype.kind not in "iub":
                raise InvalidArgumentError(f"labels: expected integer class indices, got values of dtype {array.dtype}")
            host_labels = array.astype(np.int64)

    host_loss = None
    if loss is not None:
        if _length(loss, "loss") != n:
            raise InvalidArgumentError(f"loss: expected {n} per-sample losses, got {_length(loss, 'loss')}")
        host_loss = as_host(loss, dtype=torch.float32) if isinstance(loss, torch.Tensor) else np.asarray(loss, dtype=np.float32)

    if keys is not None and not isinstance(keys, Mapping):
        raise InvalidArgumentError(f"keys: expected a mapping of column name to per-sample values, got {type(keys).__name__}")
    host_keys = {name: _key_column(name, value, n) for name, value in (keys or {}).items()}
    batch_column = pa.array(np.full(n, -1 if batch_idx is None else batch_idx, dtype=np.int64))
    if batch_idx is None:
        batch_column = pa.nulls(n, pa.int64())

    def build() -> dict[str, pa.Table]:
        values = resolve(host_logits).reshape(n, classes)
        flat = pa.array(values.reshape(-1))
        offsets = pa.array(np.arange(0, n * classes + 1, classes, dtype=np.int32))
        label_values = resolve(host_labels)
        prediction = values.argmax(axis=1).astype(np.int64) if classes > 1 else (values[:, 0] > 0).astype(np.int64)
        loss_values = resolve(host_loss)
        columns = {
            "step": pa.array(np.full(n, step, dtype=np.int64)),
            "batch_idx": batch_column,
            "sample_idx": pa.array(np.arange(n, dtype=np.int32)),
            "label": pa.nulls(n, pa.int64()) if label_values is None else pa.array(label_values),
            "prediction": pa.array(prediction) if n else pa.array([], pa.int64()),
            "logits": pa.ListArray.from_arrays(offsets, flat),
            "loss": pa.nulls(n, pa.float32()) if loss_values is None else pa.array(loss_values.reshape(-1)),
        }
        key_arrays = {name: _key_array(value) for name, value in host_keys.items()}
        columns.update(key_arrays)
        rows = pa.table(columns)
        keys_digest = _digest(
            "|".join(f"{name}={_array_digest(arr)}" for name, arr in sorted(key_arrays.items())).encode()
        )
        digest = pa.table(
            {
                "step": pa.array([step], pa.int64()),
                "batch_idx": pa.array([batch_idx], pa.int64()),
                "n_samples": pa.array([n], pa.int32()),
                "logits_digest": [_digest(np.ascontiguousarray(values).tobytes() + f"{n}x{classes}".encode())],
                "labels_digest": [_array_digest(label_values)],
                "keys_digest": [keys_digest],
            }
        )
        return {"predictions": rows, "pred_digests": digest}

    return build


def _scalar_values(metrics: Mapping[str, Any]) -> tuple[list[str], list[float], list[str], HostCopy | None]:
    """Split metrics into plain numbers and tensors; tensors go to the host as one stacked copy per call."""
    names: list[str] = []
    numbers_: list[float] = []
    tensor_names: list[str] = []
    tensors: list[torch.Tensor] = []
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"log: metric names must be non-empty strings, got {name!r}")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise InvalidArgumentError(f"log: {name!r} must be a number or a one-element tensor, got shape {tuple(value.shape)}")
            if value.is_complex():
                raise InvalidArgumentError(f"log: {name!r} is a complex tensor; log its real part or abs()")
            tensor_names.append(name)
            tensors.append(value.detach().reshape(()))
        elif (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)) or isinstance(value, bool | np.bool_):
            names.append(name)
            numbers_.append(float(value))
        else:
            raise InvalidArgumentError(
                f"log: {name!r} must be a Python number or a one-element tensor, got {type(value).__name__}"
            )
    pending = None
    if tensors:
        device = tensors[0].device
        same = [t if t.device == device else t.to(device, non_blocking=True) for t in tensors]
        wide = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
        pending = HostCopy(torch.stack([t.to(wide) for t in same]), dtype=torch.float64)
    return names, numbers_, tensor_names, pending


def scalars_job(metrics: Mapping[str, Any], *, step: int) -> Callable[[], dict[str, pa.Table]]:
    if not isinstance(metrics, Mapping):
        raise InvalidArgumentError(f"log: expected a mapping of name to value, got {type(metrics).__name__}")
    names, values, tensor_names, pending = _scalar_values(metrics)
    stamp = time.time()

    def build() -> dict[str, pa.Table]:
        all_names = names + tensor_names
        all_values = np.asarray(values, dtype=np.float64)
        if pending is not None:
            all_values = np.concatenate([all_values, pending.numpy().reshape(-1)])
        n = len(all_names)
        table = pa.table(
            {
                "step": pa.array(np.full(n, step, dtype=np.int64)),
                "name": pa.array(all_names, pa.string()),
                "value": pa.array(all_values),
                "time": _times(stamp, n),
            }
        )
        return {"scalars": table}

    return build


def _ids_array(sample_ids: Any) -> HostCopy | np.ndarray | list:
    n = _length(sample_ids, "sample_ids")
    if isinstance(sample_ids, torch.Tensor):
        if sample_ids.is_floating_point() or sample_ids.is_complex():
            raise InvalidArgumentError(f"sample_ids: expected integer or string ids, got a {sample_ids.dtype} tensor")
        return HostCopy(sample_ids, dtype=torch.int64)
    if isinstance(sample_ids, np.ndarray):
        if sample_ids.dtype.kind == "f":
            raise InvalidArgumentError(f"sample_ids: expected integer or string ids, got dtype {sample_ids.dtype}")
        return sample_ids.copy()
    ids = list(sample_ids)
    assert len(ids) == n
    return ids


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
        raise InvalidArgumentError(f"inputs: expected a tensor, or a list/tuple/dict of tensors, got {type(inputs).__name__}")
    out = []
    for name, value in items:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise InvalidArgumentError(f"inputs[{name!r}]: expected a tensor, got {type(value).__name__}")
        out.append((str(name), value))
    return out


def batch_job(
    *,
    step: int,
    sample_ids: Any,
    inputs: Any = None,
    batch_idx: int | None = None,
    rng: Mapping[str, str | None] | None = None,
) -> Callable[[], dict[str, pa.Table]]:
    """Validate one batch's ids and inputs; the input fingerprint is computed where the inputs live."""
    from .fingerprint import fingerprint_many

    host_ids = _ids_array(sample_ids)
    named = _input_tensors(inputs)
    pending_fp = HostCopy(fingerprint_many([t for _, t in named])) if named else None
    shapes = ";".join(f"{name}:{str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for name, t in named) or None
    rng = dict(rng or {})
    stamp = time.time()

    def build() -> dict[str, pa.Table]:
        ids = _key_array(host_ids) if not isinstance(host_ids, list) else pa.array([str(i) for i in host_ids], pa.string())
        ids = pc.cast(ids, pa.string())
        strings = ids.to_pylist()
        input_fp = None
        if pending_fp is not None:
            words = pending_fp.numpy()
            input_fp = _digest(np.ascontiguousarray(words).tobytes() + (shapes or "").encode())
        table = pa.table(
            {
                "step": pa.array([step], pa.int64()),
                "batch_idx": pa.array([batch_idx], pa.int64()),
                "n_samples": pa.array([len(strings)], pa.int32()),
                "sample_ids": pa.array([strings], pa.list_(pa.string())),
                "ids_hash": [_digest(ID_SEPARATOR.join(strings).encode())],
                "ids_set_hash": [_digest(ID_SEPARATOR.join(sorted(strings)).encode())],
                "input_fingerprint": pa.array([input_fp], pa.string()),
                "input_shapes": pa.array([shapes], pa.string()),
                "rng_torch": pa.array([rng.get("torch")], pa.string()),
                "rng_cuda": pa.array([rng.get("cuda")], pa.string()),
                "rng_numpy": pa.array([rng.get("numpy")], pa.string()),
                "rng_python": pa.array([rng.get("python")], pa.string()),
                "time": _times(stamp, 1),
            }
        )
        return {"batches": table}

    return build
