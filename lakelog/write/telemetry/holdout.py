"""A fixed holdout set, evaluated every N steps without changing the training run.

The contract of ``holdout=(batches, forward_fn)``: ``batches`` is a list (or any iterable, read
once at ``watch`` time) of whatever your loader yields; ``forward_fn(model, batch)`` returns
``(logits, labels)``: logits a float tensor of shape (n, classes), or (n,) for a single binary logit;
labels an integer tensor of shape (n,) (negative labels, e.g. -100, count as "no label") or None.
``holdout=batches`` (or ``(batches, None)``) works when each batch is an ``(inputs, labels)`` pair
(labels may be None), and ``holdout=(inputs, labels)`` is one such batch: the default forward
moves the inputs to the model's device and calls ``model(inputs)`` (``model(*inputs)`` for a tuple,
``model(**inputs)`` for a dict); a model output with a ``.logits`` attribute or a tuple gives its logits.

Evaluating must not change training, so ``untouched(model)`` wraps every evaluation: no_grad, every
submodule in eval mode (set flag by flag, then each restored to its own previous value, without
calling user ``train()`` overrides), and the torch CPU, CUDA, NumPy and Python RNG states saved and
restored (a forward in eval mode normally draws nothing, but user code may). Eval mode also keeps
BatchNorm running statistics and ``num_batches_tracked`` as they were.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lakelog.errors import InvalidArgumentError
from lakelog.lake import schemas

ForwardFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, torch.Tensor | None]]


@contextmanager
def untouched(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no_grad inside; every module's mode and the RNG states as they were afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    py_rng = random.getstate()
    np_rng = np.random.get_state()
    try:
        for m, _ in modes:
            m.training = False
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def default_forward(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, labels)`` batches: the model's logits on the inputs, and the labels."""
    inputs, labels = batch
    inputs = _to(inputs, _model_device(model))
    if isinstance(inputs, Mapping):
        out = model(**inputs)
    elif isinstance(inputs, list | tuple):
        out = model(*inputs)
    else:
        out = model(inputs)
    if hasattr(out, "logits"):
        out = out.logits
    elif isinstance(out, list | tuple):
        out = out[0]
    return out, labels


def parse(spec: Any, model: torch.nn.Module) -> tuple[list[Any], ForwardFn] | None:
    """Check ``holdout=`` and read its batches once (under ``untouched``: a DataLoader draws RNG)."""
    if spec is None:
        return None
    forward: ForwardFn = default_forward
    batches = spec
    if (
        isinstance(spec, tuple | list)
        and len(spec) == 2
        and callable(spec[1])
        and not isinstance(spec[1], torch.Tensor)
    ):
        batches, forward = spec
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], torch.Tensor):
        batches = [spec]  # holdout=(inputs, labels) or (inputs, None): one batch
    elif isinstance(spec, tuple) and len(spec) == 2 and spec[1] is None:
        batches = spec[0]  # holdout=(batches, None): the default forward
    if isinstance(batches, torch.Tensor | str | bytes | Mapping) or not hasattr(batches, "__iter__"):
        raise InvalidArgumentError(
            "holdout: expected (batches, forward_fn) or a list of (inputs, labels) batches, "
            f"got {type(batches).__name__}"
        )
    with untouched(model):
        batches = list(batches)
    if not batches:
        raise InvalidArgumentError("holdout: the holdout has no batches")
    if forward is default_forward:
        for i, b in enumerate(batches):
            if not isinstance(b, tuple | list) or len(b) != 2:
                raise InvalidArgumentError(
                    f"holdout: batch {i} is a {type(b).__name__}, not an (inputs, labels) pair; pass "
                    "holdout=(batches, forward_fn) with forward_fn(model, batch) -> (logits, labels)"
                )
    return batches, forward


def _check_output(out: Any, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    where = f"holdout: forward_fn(model, batches[{i}])"
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise InvalidArgumentError(f"{where} must return (logits, labels), got {type(out).__name__}")
    logits, labels = out
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() not in (1, 2):
        desc = (
            f"{logits.dtype} tensor of shape {tuple(logits.shape)}"
            if isinstance(logits, torch.Tensor)
            else type(logits).__name__
        )
        raise InvalidArgumentError(
            f"{where}: logits must be a float tensor of shape (n, classes) or (n,), got {desc}"
        )
    if labels is None:
        return logits, None
    if isinstance(labels, np.ndarray | list):
        labels = torch.as_tensor(labels)
    if (
        not isinstance(labels, torch.Tensor)
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dim() != 1
    ):
        raise InvalidArgumentError(
            f"{where}: labels must be a 1-D integer tensor or None, got {labels!r:.80}"
        )
    if labels.shape[0] != logits.shape[0]:
        raise InvalidArgumentError(f"{where}: {labels.shape[0]} labels for {logits.shape[0]} rows of logits")
    return logits, labels


def evaluate(
    model: torch.nn.Module, batches: list[Any], forward: ForwardFn
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All holdout logits as one (n, classes) float32 tensor and labels as (n,) int64 (or None), on device."""
    logits_all: list[torch.Tensor] = []
    labels_all: list[torch.Tensor | None] = []
    with untouched(model):
        for i, batch in enumerate(batches):
            logits, labels = _check_output(forward(model, batch), i)
            logits = logits.detach().float().reshape(logits.shape[0], -1)
            if logits_all and logits.shape[1] != logits_all[0].shape[1]:
                raise InvalidArgumentError(
                    f"holdout: batches[{i}] gives {logits.shape[1]} classes, batches[0] gave {logits_all[0].shape[1]}"
                )
            logits_all.append(logits)
            labels_all.append(
                None if labels is None else labels.detach().to(logits.device, torch.int64, non_blocking=True)
            )
    logits_cat = torch.cat(logits_all)
    if any(lab is None for lab in labels_all):
        return logits_cat, None
    return logits_cat, torch.cat(labels_all)  # type: ignore[arg-type]


def rows(step: int, logits: np.ndarray, labels: np.ndarray | None) -> tuple[pa.Table, dict[str, float]]:
    """The holdout table's rows and the ``holdout/acc`` / ``holdout/loss`` scalars (writer thread)."""
    n, classes = logits.shape
    binary = classes == 1
    pred = (logits[:, 0] > 0).astype(np.int64) if binary else logits.argmax(axis=1).astype(np.int64)
    offsets = pa.array(np.arange(0, n * classes + 1, classes, dtype=np.int32))
    scalars: dict[str, float] = {}
    if labels is None:
        label_arr = pa.nulls(n, pa.int64())
        correct = pa.nulls(n, pa.bool_())
    else:
        valid = labels >= 0
        label_arr = pa.array(labels, mask=~valid)
        hit = pred == labels
        correct = pa.array(hit, mask=~valid)
        if valid.any():
            scalars["holdout/acc"] = float(hit[valid].mean())
            if (labels[valid] < max(classes, 2)).all():
                scalars["holdout/loss"] = _loss(logits[valid].astype(np.float64), labels[valid], binary)
    table = pa.table(
        {
            "step": pa.array(np.full(n, step, dtype=np.int64)),
            "sample_idx": pa.array(np.arange(n, dtype=np.int64)),
            "label": label_arr,
            "prediction": pa.array(pred),
            "correct": correct,
            "logits": pa.ListArray.from_arrays(offsets, pa.array(logits.reshape(-1), pa.float32())),
        },
        schema=schemas.HOLDOUT,
    )
    return table, scalars


def _loss(logits: np.ndarray, labels: np.ndarray, binary: bool) -> float:
    """Mean cross entropy (binary: with logits), as the usual torch losses compute it."""
    if binary:
        x, y = logits[:, 0], labels.astype(np.float64)
        return float(np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))))
    top = logits.max(axis=1, keepdims=True)
    logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(logz - logits[np.arange(len(labels)), labels]))


def check_labels(labels: Any) -> torch.Tensor:
    """Class ids of any shape, or a (batch, classes) one-hot / probability matrix, as a tensor."""
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(np.asarray(labels))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"labels: expected a tensor, array or list of class ids ({exc})"
            ) from exc
    if (
        labels.is_complex()
        or labels.layout != torch.strided
        or (labels.is_floating_point() and labels.dim() != 2)
    ):
        raise InvalidArgumentError(
            "labels: expected integer class ids or a (batch, classes) one-hot/probability matrix, "
            f"got a {labels.dtype} tensor of shape {tuple(labels.shape)}"
        )
    return labels.detach()


def label_scalars(arr: np.ndarray, how: str, num_classes: int) -> list[tuple[str, float | None]]:
    """label_pct/<class> (percent of the labelled samples) and batch_size, from the observed labels."""
    if how == "sums":
        counts, n = arr[:-1], float(arr[-1])
    else:
        ids = arr[arr >= 0]  # ignore_index (-100) and other "no label" markers
        counts, n = np.bincount(ids, minlength=num_classes).astype(np.float64), float(ids.size)
    classes = range(len(counts)) if len(counts) <= 100 else np.nonzero(counts)[0]
    out: list[tuple[str, float | None]] = [("batch_size", n)]
    out += [(f"label_pct/{k}", 100.0 * float(counts[k]) / n if n else None) for k in classes]
    return out
