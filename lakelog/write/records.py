"""Rows of ``run.log_predictions``, and the id and digest helpers the row modules share.

``predictions_job`` runs on the training thread: it checks its arguments (so a mistake is reported
where it was made, naming the argument), starts the host copies, and returns a closure that the
writer thread calls to build the rows and the batch's digest row. No Python loop runs per sample.
Batch order rows are in ``batch_rows``, scalar rows in ``scalar_rows``.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import xxhash

from lakelog.errors import InvalidArgumentError
from lakelog.lake import schemas
from lakelog.lake.checks import optional_non_negative_int
from lakelog.write.hostcopy import HostCopy, resolve
from lakelog.write.keytypes import check_key_types
from lakelog.write.partfiles import Row

RESERVED = set(schemas.PREDICTIONS.names) | {"epoch", "rank", "run"}
ID_SEPARATOR = "\x1f"


def _length(value: Any, arg: str) -> int:
    if isinstance(value, torch.Tensor | np.ndarray):
        if value.ndim != 1:
            raise InvalidArgumentError(
                f"{arg}: expected one value per sample (1-D), got shape {tuple(value.shape)}"
            )
        return int(value.shape[0])
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return len(value)
    raise InvalidArgumentError(
        f"{arg}: expected a 1-D tensor, numpy array or list with one value per sample, got {type(value).__name__}"
    )


def _digest(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _values_digest(values: np.ndarray | list | None) -> str | None:
    """Exact digest of one batch's column: raw bytes of a numpy array, or the joined text of a list."""
    if values is None:
        return None
    if isinstance(values, np.ndarray):
        digest = xxhash.xxh3_128(values.dtype.str.encode())
        digest.update(np.ascontiguousarray(values))  # the same as hashing the two joined
        return digest.hexdigest()
    return _digest(ID_SEPARATOR.join(values).encode())  # lists hold only str (see _uniform_list)


_NO_KEYS_DIGEST = _digest(b"")


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
            raise InvalidArgumentError(
                f"keys[{name!r}]: expected integer or string ids, got a {value.dtype} tensor"
            )
        return HostCopy(value, dtype=torch.int64)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuUSO":
            raise InvalidArgumentError(
                f"keys[{name!r}]: expected integer or string ids, got dtype {value.dtype}"
            )
        if value.dtype.kind in "USO":
            return value.astype(str).tolist()
        return _int64(value, f"keys[{name!r}]")
    return _uniform_list(value, f"keys[{name!r}]")


_CONSTANT_COLUMNS: dict[tuple[str, int], Any] = {}


def _nulls(n: int, kind: str) -> pa.Array:
    """A null column of ``n`` rows, made once per size and type (Arrow arrays are immutable)."""
    column = _CONSTANT_COLUMNS.get((kind, n))
    if column is None:
        column = _CONSTANT_COLUMNS[(kind, n)] = pa.nulls(n, getattr(pa, kind)())
    return column


def _sample_idx(n: int) -> np.ndarray:
    """0..n-1, made once per batch size (read-only: the writer only concatenates it)."""
    column = _CONSTANT_COLUMNS.get(("sample_idx", n))
    if column is None:
        column = _CONSTANT_COLUMNS[("sample_idx", n)] = np.arange(n, dtype=np.int32)
        column.flags.writeable = False
    return column


def _int64(values: np.ndarray, arg: str) -> np.ndarray:
    """An integer array as int64; unsigned values beyond int64 are refused instead of wrapping around."""
    if (
        values.dtype.kind == "u"
        and values.dtype.itemsize == 8
        and values.size
        and int(values.max()) > 2**63 - 1
    ):
        raise InvalidArgumentError(f"{arg}: expected integers that fit in int64, got {int(values.max())}")
    return values.astype(np.int64)


def _uniform_list(values: Sequence, arg: str) -> list[str] | np.ndarray:
    """A copy of a list of ids, checked to hold only strings or only integers with C-level passes."""
    values = list(values)
    if values and type(values[0]) is str:
        try:
            "".join(values)  # raises TypeError unless every value is a str
        except TypeError:
            pass
        else:
            return values
    else:
        try:
            return np.frombuffer(array.array("q", values), dtype=np.int64)  # rejects floats, strings, None
        except (TypeError, OverflowError):
            pass
    names = ", ".join(sorted({type(v).__name__ for v in values}))
    raise InvalidArgumentError(f"{arg}: expected all strings or all integers, got values of types {names}")


def _logits_host(logits: Any) -> tuple[HostCopy | np.ndarray, int, int]:
    """The host copy of ``(batch, classes)`` scores (1-D: one score per sample), its rows and columns."""
    if isinstance(logits, torch.Tensor):
        ndim = logits.ndim
        if ndim == 2 and not logits.is_complex():  # the common case, in few calls
            n, classes = logits.shape
            if classes:
                return HostCopy(logits, dtype=torch.float32), n, classes
    elif not isinstance(logits, np.ndarray):
        raise InvalidArgumentError(
            f"logits: expected a tensor or numpy array of shape (batch, classes), got {type(logits).__name__}"
        )
    if logits.ndim == 1:
        logits = logits.reshape(-1, 1)
    if logits.ndim != 2:
        raise InvalidArgumentError(f"logits: expected shape (batch, classes), got {tuple(logits.shape)}")
    if isinstance(logits, torch.Tensor) and logits.is_complex():
        raise InvalidArgumentError("logits: complex tensors are not supported; log the real scores")
    n, classes = int(logits.shape[0]), int(logits.shape[1])
    if classes == 0:
        raise InvalidArgumentError(
            f"logits: expected at least one score per sample, got shape {tuple(logits.shape)}"
        )
    if isinstance(logits, torch.Tensor):
        return HostCopy(logits, dtype=torch.float32), n, classes
    return np.asarray(logits, dtype=np.float32).copy(), n, classes


def _labels_host(labels: Any, n: int) -> HostCopy | np.ndarray:
    """The host copy of ``n`` integer class indices (int64)."""
    if isinstance(labels, torch.Tensor) and labels.ndim == 1 and labels.shape[0] == n:
        if labels.is_floating_point() or labels.is_complex():
            raise InvalidArgumentError(
                f"labels: expected integer class indices, got a {labels.dtype} tensor (use .long())"
            )
        return HostCopy(labels, dtype=torch.int64)
    if _length(labels, "labels") != n:
        raise InvalidArgumentError(
            f"labels: expected {n} labels (one per row of logits), got {_length(labels, 'labels')}"
        )
    if isinstance(labels, torch.Tensor):
        return _labels_host(labels, n)
    array = np.asarray(labels)
    if array.dtype.kind not in "iub":
        raise InvalidArgumentError(
            f"labels: expected integer class indices, got values of dtype {array.dtype}"
        )
    return _int64(array, "labels")


def _loss_host(loss: Any, n: int) -> HostCopy | np.ndarray:
    """The host copy of ``n`` per-sample losses (float32)."""
    if isinstance(loss, torch.Tensor) and loss.ndim == 1 and loss.shape[0] == n:
        if loss.is_complex():
            raise InvalidArgumentError("loss: complex tensors are not supported; log the real losses")
        return HostCopy(loss, dtype=torch.float32)
    if _length(loss, "loss") != n:
        raise InvalidArgumentError(f"loss: expected {n} per-sample losses, got {_length(loss, 'loss')}")
    if isinstance(loss, torch.Tensor):
        return _loss_host(loss, n)
    try:
        return np.asarray(loss, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"loss: expected {n} per-sample numbers, got {loss!r:.80} ({exc})"
        ) from None


def predictions_job(
    logits: Any,
    *,
    step: int,
    labels: Any = None,
    keys: Mapping[str, Any] | None = None,
    loss: Any = None,
    batch_idx: int | None = None,
    key_types: dict[str, str] | None = None,
) -> Callable[[], dict[str, dict[str, Any]]]:
    """Validate one batch of predictions and return the builder of its rows (and its digest row).

    ``key_types`` (the run's, name -> "int" or "str") fixes each key column's type by its first
    batch for the whole run: a later batch of the other type is refused here, on the caller's thread,
    instead of failing the part file or being stored as the wrong type.
    """
    if batch_idx is not None:
        batch_idx = optional_non_negative_int(batch_idx, "batch_idx")
    host_logits, n, classes = _logits_host(logits)
    host_labels = None if labels is None else _labels_host(labels, n)
    host_loss = None if loss is None else _loss_host(loss, n)
    if keys is not None and not isinstance(keys, Mapping):
        raise InvalidArgumentError(
            f"keys: expected a mapping of column name to per-sample values, got {type(keys).__name__}"
        )
    host_keys = {name: _key_column(name, value, n) for name, value in keys.items()} if keys else {}
    if key_types is not None and host_keys:
        check_key_types({name: isinstance(column, list) for name, column in host_keys.items()}, key_types)

    def build() -> dict[str, dict[str, Any]]:
        values = resolve(host_logits).reshape(n, classes)
        label_values = resolve(host_labels)
        loss_values = resolve(host_loss)
        prediction = values.argmax(axis=1) if classes > 1 else (values[:, 0] > 0)
        key_values = {
            name: resolve(value) if not isinstance(value, list) else value
            for name, value in host_keys.items()
        }
        rows = {
            "step": np.full(n, step, dtype=np.int64),
            "batch_idx": _nulls(n, "int64") if batch_idx is None else np.full(n, batch_idx, dtype=np.int64),
            "sample_idx": _sample_idx(n),
            "label": _nulls(n, "int64") if label_values is None else label_values,
            "prediction": prediction.astype(np.int64, copy=False),
            "logits": values,
            "loss": _nulls(n, "float32") if loss_values is None else loss_values.reshape(-1),
            **key_values,
        }
        keys_digest = (
            _digest(
                "|".join(
                    f"{name}={_values_digest(value)}" for name, value in sorted(key_values.items())
                ).encode()
            )
            if key_values
            else _NO_KEYS_DIGEST
        )
        logits_digest = xxhash.xxh3_128(values)  # the same as hashing the bytes and the shape joined
        logits_digest.update(f"{n}x{classes}".encode())
        digest = Row(
            (step, batch_idx, n, logits_digest.hexdigest(), _values_digest(label_values), keys_digest), 160
        )
        return {"predictions": rows, "pred_digests": digest}

    build.rows = n  # what a failure would cost, for the writer's counts
    build.steps = (step, step)  # every row it builds has this step: the writer need not scan them
    build.nbytes = 4 * n * (classes + 4)  # the host copies it holds, about
    return build
