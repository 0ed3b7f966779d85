"""Arrow rows of one telemetry capture: the params, scalars and holdout tables, built on the writer thread.

Why it exists: the training thread only queues device work and starts the host copies (the hooks in
``watcher.py``); turning the copied statistics, fingerprints, update norms, labels and
holdout logits into the Arrow tables of the ``params``, ``scalars`` and ``holdout`` tables happens
here, inside ``run.submit``, where waiting on the copies costs training nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from lakelog.lake import schemas
from lakelog.write.fingerprint import algorithm_prefix
from lakelog.write.telemetry import groups as groups_mod
from lakelog.write.telemetry import holdout as holdout_mod
from lakelog.write.telemetry.pack import Pack
from lakelog.write.telemetry.summaries import Section


@dataclass
class Capture:
    """One capture's host-bound data (training thread); ``build_rows`` turns it into rows (writer thread)."""

    step: int
    pack: Pack
    grads: Section | None = None
    params: Section | None = None
    buffers: Section | None = None
    meta: list[tuple[str, str]] | None = None
    optim: Section | None = None
    optim_rows: list[tuple[int, str, str, str]] | None = None
    update_known: list[bool] | None = None
    hyper: list[tuple[str, Any]] | None = None
    labels: str | None = None
    num_classes: int = 0
    holdout: bool = False
    initial: bool = False
    resume: bool = False
    time: float = 0.0

    @property
    def prefix(self) -> str:
        """The kind prefix of its rows: ``initial:`` (the run's true start), ``resume:`` (the state a resumed
        process starts from, stamped with the step it resumes after) or none (a training step)."""
        return "initial:" if self.initial else "resume:" if self.resume else ""


def _masked(values: np.ndarray, valid: np.ndarray, dtype: pa.DataType | None = None) -> pa.Array:
    dtype = dtype or pa.float64()
    if pa.types.is_integer(dtype):
        values = np.where(valid, np.nan_to_num(values), 0).astype(np.int64)
    return pa.array(values, type=dtype, mask=~np.asarray(valid, dtype=bool))


def _nulls(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, np.nan), np.zeros(n, dtype=bool)


@dataclass
class _Part:
    """One family's rows of the params table (weights, buffers or optimizer state), as host columns."""

    names: list[str]
    kinds: list[str]
    groups: list[str | None]
    meta: list[tuple[str, str]]
    numels: list[int]
    section: tuple[dict, dict]
    fps: list[str | None]
    extra: dict[str, Any]


_STATS = ("norm", "mean", "std", "min", "max", "absmax")
_COUNTS = ("nan_count", "inf_count")
_EXTRA = ("grad_norm", "grad_absmax", "update_norm", "update_ratio")


def _table(step: int, parts: list[_Part]) -> pa.Table:
    """The params rows of all families in one table: each column is concatenated on the host and
    converted once (a capture's families share one Arrow conversion per column). ``extra`` holds
    grad/update columns as (values, valid) or string lists; a family without one writes nulls."""
    n = sum(len(p.names) for p in parts)

    def cat(col: str, j: int) -> np.ndarray:
        return np.concatenate([p.section[j][col] for p in parts])

    def cat_extra(col: str, j: int) -> np.ndarray:
        return np.concatenate([p.extra.get(col, _nulls(len(p.names)))[j] for p in parts])

    def strings(values: list[list[Any]]) -> pa.Array:
        return pa.array([v for vs in values for v in vs], pa.string())

    data: dict[str, Any] = {
        "step": pa.array(np.full(n, step, dtype=np.int64)),
        "name": strings([p.names for p in parts]),
        "kind": strings([p.kinds for p in parts]),
        "group": strings([p.groups for p in parts]),
        "shape": strings([[m[0] for m in p.meta] for p in parts]),
        "numel": pa.array(np.concatenate([np.asarray(p.numels, dtype=np.int64) for p in parts])),
        "dtype": strings([[m[1] for m in p.meta] for p in parts]),
    }
    for col in _STATS:
        data[col] = _masked(cat(col, 0), cat(col, 1))
    for col in _COUNTS:
        data[col] = _masked(cat(col, 0), cat(col, 1), pa.int64())
    for col in _EXTRA:
        data[col] = _masked(cat_extra(col, 0), cat_extra(col, 1))
    data["fingerprint"] = strings([p.fps for p in parts])
    data["grad_fingerprint"] = strings(
        [p.extra.get("grad_fingerprint", [None] * len(p.names)) for p in parts]
    )
    return pa.table(data, schema=schemas.PARAMS)


def _digest(names: list[str], fingerprints: list[str | None]) -> str | None:
    """One exact digest of a family's tensors (names and fingerprints, in order); None without fingerprints."""
    if not names or all(fp is None for fp in fingerprints):
        return None
    text = "\n".join(f"{n}\t{fp}" for n, fp in zip(names, fingerprints, strict=True))
    return algorithm_prefix(fingerprints) + xxhash.xxh3_128_hexdigest(text.encode())  # x3: as its parts


def build_rows(layout: groups_mod.Layout, c: Capture) -> dict[str, pa.Table | None]:
    """Writer thread: the capture's params, param_digests (one row), scalars and holdout rows."""
    pack = c.pack
    assert c.params is not None and c.buffers is not None and c.meta is not None
    n_p, n_b = c.params.n, c.buffers.n
    pre = c.prefix
    wcols = c.params.columns(pack)
    extra: dict[str, Any] = {}
    gcols = c.grads.columns(pack) if c.grads is not None else None
    if gcols is not None and c.grads is not None:
        extra["grad_norm"] = (gcols[0]["norm"], gcols[1]["norm"])
        extra["grad_absmax"] = (gcols[0]["absmax"], gcols[1]["absmax"])
        extra["grad_fingerprint"] = c.grads.fingerprints(pack)
    update = pack.get("update") if "update" in pack else None
    known = np.asarray(c.update_known or [False] * n_p, dtype=bool)
    if update is not None:
        extra["update_norm"] = (update, known)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = update / wcols[0]["norm"]
        extra["update_ratio"] = (ratio, known & (wcols[0]["norm"] != 0))
    groups = [e.group for e in layout.params]
    names, buffer_names = [e.name for e in layout.params], [e.name for e in layout.buffers]
    w_fps, b_fps = c.params.fingerprints(pack), c.buffers.fingerprints(pack)
    parts = [
        _Part(names, [pre + "param"] * n_p, groups, c.meta[:n_p], c.params.numels, wcols, w_fps, extra),
        _Part(
            buffer_names,
            [pre + "buffer"] * n_b,
            [e.group for e in layout.buffers],
            c.meta[n_p:],
            c.buffers.numels,
            c.buffers.columns(pack),
            b_fps,
            {},
        ),
    ]
    optim_names: list[str] = []
    o_fps: list[str | None] = []
    if c.optim is not None and c.optim_rows:
        idx = [i for i, _, _, _ in c.optim_rows]
        kinds = [pre + k for _, k, _, _ in c.optim_rows]
        optim_names = [f"{layout.params[i].name} ({k})" for i, k in zip(idx, kinds, strict=True)]
        o_fps = c.optim.fingerprints(pack)
        parts.append(
            _Part(
                [layout.params[i].name for i in idx],
                kinds,
                [groups[i] for i in idx],
                [(s, d) for _, _, s, d in c.optim_rows],
                c.optim.numels,
                c.optim.columns(pack),
                o_fps,
                {},
            )
        )
    out: dict[str, pa.Table | None] = {"params": _table(c.step, parts)}
    digests = {
        "weights_digest": _digest(names, w_fps),
        "grads_digest": _digest(names, extra["grad_fingerprint"]) if "grad_fingerprint" in extra else None,
        "buffers_digest": _digest(buffer_names, b_fps),
        "optim_digest": _digest(optim_names, o_fps),
    }
    out["param_digests"] = pa.table(
        {
            "step": pa.array([c.step], pa.int64()),
            "capture": pa.array([pre.rstrip(":") or "step"], pa.string()),
            "n_tensors": pa.array([n_p + n_b + len(optim_names)], pa.int64()),
            **{k: pa.array([v], pa.string()) for k, v in digests.items()},
        },
        schema=schemas.PARAM_DIGESTS,
    )
    scalars: list[tuple[str, float | None]] = []
    if not pre:
        scalars += groups_mod.norm_scalars(groups, wcols[0]["norm"], gcols, update, known)
        for name, value in c.hyper or []:
            scalars.append((name, float(pack.get(value)[0]) if isinstance(value, str) else value))
        if c.labels is not None:
            scalars += holdout_mod.label_scalars(pack.get(f"labels/{c.labels}"), c.labels, c.num_classes)
    if c.holdout:
        labels = pack.get("holdout/labels") if "holdout/labels" in pack else None
        out["holdout"], acc = holdout_mod.rows(c.step, pack.get("holdout/logits").astype(np.float32), labels)
        scalars += list(acc.items())
    kept = [(k, v) for k, v in scalars if v is not None]
    out["scalars"] = pa.table(
        {
            "step": pa.array(np.full(len(kept), c.step, dtype=np.int64)),
            "name": pa.array([k for k, _ in kept], pa.string()),
            "value": pa.array([v for _, v in kept], pa.float64()),
            "time": pa.array(np.full(len(kept), int(c.time * 1e6), dtype=np.int64)).cast(schemas.TIME),
        },
        schema=schemas.SCALARS,
    )
    return out
