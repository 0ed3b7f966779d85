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
from lakelog.write.chunking import bounded_runs
from lakelog.write.fingerprint import algorithm_prefix
from lakelog.write.telemetry import flat_cpu
from lakelog.write.telemetry import groups as groups_mod
from lakelog.write.telemetry import holdout as holdout_mod
from lakelog.write.telemetry.pack import Pack
from lakelog.write.telemetry.previous_weights import Update
from lakelog.write.telemetry.summaries import RowFlags, Section, finish_stats


@dataclass
class Capture:
    """One capture's host-bound data (training thread); ``build_many`` turns it into rows (writer thread)."""

    step: int
    pack: Pack
    grads: Section | None = None
    params: Section | None = None
    buffers: Section | None = None
    meta: list[tuple[str, str]] | None = None
    optim: Section | None = None
    optim_rows: list[tuple[int, str, str, str]] | None = None
    update: Update | None = None
    hyper: list[tuple[str, Any]] | None = None
    labels: str | None = None
    num_classes: int = 0
    holdout: bool = False
    initial: bool = False
    resume: bool = False
    time: float = 0.0

    @property
    def nbytes(self) -> int:
        """Host bytes the capture holds until its rows are built."""
        sections = (self.grads, self.params, self.buffers, self.optim)
        return self.pack.nbytes + sum(s.nbytes for s in sections if s is not None)

    @property
    def prefix(self) -> str:
        """The kind prefix of its rows: ``initial:`` (the run's true start), ``resume:`` (the state a resumed
        process starts from, stamped with the step it resumes after) or none (a training step)."""
        return "initial:" if self.initial else "resume:" if self.resume else ""


_STATS = ("norm", "mean", "std", "min", "max", "absmax")
_COUNTS = ("nan_count", "inf_count")


class _Static:
    """The params columns of one layout that stay the same from capture to capture, as Arrow arrays."""

    def __init__(self, layout: groups_mod.Layout, c: Capture) -> None:
        assert c.params is not None and c.buffers is not None and c.meta is not None
        pre = c.prefix
        optim_rows = c.optim_rows if c.optim is not None and c.optim_rows else []
        self.key = (c.meta, optim_rows)
        self.n_p, self.n_b, self.n_o = len(layout.params), len(layout.buffers), len(optim_rows)
        self.n = self.n_p + self.n_b + self.n_o
        self.names = [e.name for e in layout.params]
        self.buffer_names = [e.name for e in layout.buffers]
        groups = [e.group for e in layout.params]
        idx = [i for i, _, _, _ in optim_rows]
        self.optim_names = [f"{self.names[i]} ({pre}{k})" for i, k, _, _ in optim_rows]
        meta = c.meta + [(shape, dtype) for _, _, shape, dtype in optim_rows]
        kinds = (
            [pre + "param"] * self.n_p + [pre + "buffer"] * self.n_b + [pre + k for _, k, _, _ in optim_rows]
        )
        self.columns = {
            "name": pa.array(self.names + self.buffer_names + [self.names[i] for i in idx], pa.string()),
            "kind": pa.array(kinds, pa.string()),
            "group": pa.array(
                groups + [e.group for e in layout.buffers] + [groups[i] for i in idx], pa.string()
            ),
            "shape": pa.array([m[0] for m in meta], pa.string()),
            "numel": pa.array(
                np.concatenate(
                    [c.params.numels, c.buffers.numels, c.optim.numels if self.n_o else []]
                ).astype(np.int64)
            ),
            "dtype": pa.array([m[1] for m in meta], pa.string()),
        }
        # One row per family, then the gradients of the parameters, all finished in one call.
        self.full = np.repeat([True, True, False, False], [self.n_p, self.n_b, self.n_o, self.n_p])
        self.minmax = np.repeat([True, True, False, True], [self.n_p, self.n_b, self.n_o, self.n_p])
        self.masks = groups_mod.GroupMasks(groups)
        self.no_grad_fps = [None] * (self.n_b + self.n_o)
        self.capture = pre.rstrip(":") or "step"
        self.layout = layout
        self.flags: RowFlags | None = None


class RowsCache:
    """A watcher's ``_Static`` columns per capture prefix, built again when the layout or a tensor's
    shape, dtype or optimizer state key changes (writer thread)."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], _Static] = {}

    def get(self, layout: groups_mod.Layout, c: Capture) -> _Static:
        key = (id(layout), c.prefix)
        static = self._last.get(key)
        optim_rows = c.optim_rows if c.optim is not None and c.optim_rows else []
        if (
            static is None
            or static.key[0] != c.meta
            or static.key[1] != optim_rows
            or static.layout is not layout
        ):
            static = _Static(layout, c)
            self._last = {k: v for k, v in self._last.items() if v.layout is layout}
            self._last[key] = static
        return static


def _masked(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.float64(), mask=~valid)


def _counts(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(np.where(valid, values, 0).astype(np.int64), type=pa.int64(), mask=~valid)


def _nulls(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, np.nan), np.zeros(n, dtype=bool)


def _params_only(values: np.ndarray, valid: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A params-only column over all ``n`` rows (null after the params)."""
    out, ok = np.full(n, np.nan), np.zeros(n, dtype=bool)
    out[: len(values)], ok[: len(values)] = values, valid
    return out, ok


def _digest(names: list[str], fingerprints: list[str | None]) -> str | None:
    """One exact digest of a family's tensors (names and fingerprints, in order); None without fingerprints."""
    if not names or all(fp is None for fp in fingerprints):
        return None
    text = "\n".join(f"{n}\t{fp}" for n, fp in zip(names, fingerprints, strict=True))
    return algorithm_prefix(fingerprints) + xxhash.xxh3_128_hexdigest(text.encode())  # x3: as its parts


_FLOATS = (
    "norm",
    "mean",
    "std",
    "min",
    "max",
    "absmax",
    "grad_norm",
    "grad_absmax",
    "update_norm",
    "update_ratio",
)


@dataclass
class _Rows:
    """One capture's rows as host columns, before any Arrow conversion (``build_many`` converts many)."""

    st: _Static
    step: int
    values: dict[str, tuple[np.ndarray, np.ndarray] | None]
    fps: list[str | None]
    grad_fps: list[str | None] | None
    digest: list[Any]
    scalars: list[tuple[str, float]]
    time_us: int
    holdout: pa.Table | None


FLAT_VALUES = 1 << 22
"""Values of flat copies read in one ``flat_cpu.raw_rows`` call (32 MiB of float64 scratch), at most."""

_Flats = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]


def _flat_sections(c: Capture, st: _Static) -> tuple[list, list]:
    """A capture's flat copies: (weights, buffers), read with every column, and (optimizer state,
    gradients), read for their norms and absmax only."""
    optim = c.optim if st.n_o else None
    full = [c.params.flat, c.buffers.flat]  # type: ignore[union-attr]
    light = [optim.flat if optim else None, c.grads.flat if c.grads else None]
    return full, light


def _copy_values(copies: list) -> int:
    return sum(f.plan.total for f in copies if f is not None)


def _read_flats(captures: list[tuple[Capture, _Static]]) -> list[_Flats]:
    """The ``RAW`` rows of the captures' flat copies, read together: one float64 copy and one
    ``flat_rows`` per kind for many captures (their fixed cost is per call), in runs of at most
    ``FLAT_VALUES`` values so the scratch stays small."""
    sections = [_flat_sections(c, st) for c, st in captures]
    sizes = ((i, _copy_values(full) + _copy_values(light)) for i, (full, light) in enumerate(sections))
    out: list[_Flats] = []
    for run in bounded_runs(sizes, FLAT_VALUES):
        full = flat_cpu.raw_rows([f for i in run for f in sections[i][0]], full=True, minmax=True)
        light = flat_cpu.raw_rows([f for i in run for f in sections[i][1]], full=False, minmax=True)
        out.extend((full[2 * k], full[2 * k + 1], light[2 * k], light[2 * k + 1]) for k in range(len(run)))
    return out


def _capture_rows(layout: groups_mod.Layout, c: Capture, st: _Static, flats: _Flats) -> _Rows:
    """The host columns of one capture: the columns that depend on the layout only come from ``st``
    (built once per layout); the numbers of all families (weights, buffers, optimizer state and the
    gradients) are finished in one pass; ``flats`` are its flat copies' rows (``_read_flats``)."""
    pack = c.pack
    assert c.params is not None and c.buffers is not None and c.meta is not None
    n_p, n, pre = st.n_p, st.n, c.prefix
    grads, optim = c.grads, (c.optim if st.n_o else None)
    sections = [c.params, c.buffers] + ([optim] if optim is not None else [])
    sections += [grads] if grads is not None else []
    fw, fb, fo, fg = flats
    flat = {id(c.params): fw, id(c.buffers): fb, id(optim): fo, id(grads): fg}
    raw = np.concatenate([sec.raw(pack, flat[id(sec)]) for sec in sections])  # type: ignore[union-attr]
    kinds = [k for sec in sections for k in sec.kinds]  # type: ignore[union-attr]
    numels = [k for sec in sections for k in sec.numels]  # type: ignore[union-attr]
    flags = st.flags
    if flags is None or not flags.matches(kinds, numels):
        flags = st.flags = RowFlags(kinds, numels, st.full[: len(kinds)], st.minmax[: len(kinds)])
    cols, valid = finish_stats(raw, kinds, numels, flags=flags)
    values: dict[str, tuple[np.ndarray, np.ndarray] | None] = {
        col: (cols[col][:n], valid[col][:n]) for col in (*_STATS, *_COUNTS)
    }
    w_norm = cols["norm"][:n_p]
    grad = values["grad_norm"] = values["grad_absmax"] = None
    if grads is not None:
        grad = cols["norm"][n:], valid["norm"][n:]
        values["grad_norm"] = _params_only(*grad, n)
        values["grad_absmax"] = _params_only(cols["absmax"][n:], valid["absmax"][n:], n)
    upd = c.update.columns(pack.get("update") if "update" in pack else None, n_p) if c.update else None
    update, known = upd if upd is not None else (None, np.zeros(n_p, dtype=bool))
    values["update_norm"] = values["update_ratio"] = None
    if update is not None:
        values["update_norm"] = _params_only(update, known, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = update / w_norm
        values["update_ratio"] = _params_only(ratio, known & (w_norm != 0), n)
    w_fps, b_fps = c.params.fingerprints(pack), c.buffers.fingerprints(pack)
    o_fps = optim.fingerprints(pack) if optim is not None else []
    g_fps = grads.fingerprints(pack) if grads is not None else None
    digest = [
        c.step,
        st.capture,
        n,
        _digest(st.names, w_fps),
        _digest(st.names, g_fps) if g_fps is not None else None,
        _digest(st.buffer_names, b_fps),
        _digest(st.optim_names, o_fps),
    ]
    scalars: list[tuple[str, float | None]] = []
    if not pre:
        scalars += groups_mod.norm_scalars(st.masks, w_norm, grad, update, known)
        for name, value in c.hyper or []:
            scalars.append((name, float(pack.get(value)[0]) if isinstance(value, str) else value))
        if c.labels is not None:
            scalars += holdout_mod.label_scalars(pack.get(f"labels/{c.labels}"), c.labels, c.num_classes)
    holdout = None
    if c.holdout:
        labels = pack.get("holdout/labels") if "holdout/labels" in pack else None
        holdout, acc = holdout_mod.rows(c.step, pack.get("holdout/logits").astype(np.float32), labels)
        scalars += list(acc.items())
    kept = [(k, v) for k, v in scalars if v is not None]
    fps = w_fps + b_fps + o_fps
    return _Rows(st, c.step, values, fps, g_fps, digest, kept, int(c.time * 1e6), holdout)  # type: ignore[arg-type]


def build_many(
    items: list[tuple[groups_mod.Layout, Capture, RowsCache | None]],
) -> dict[str, pa.Table | None]:
    """Writer thread: the rows of several captures, each table converted to Arrow once for all of them
    (on a small model a conversion costs more than the numbers it converts)."""
    statics = [(layout, c, (cache or RowsCache()).get(layout, c)) for layout, c, cache in items]
    flats = _read_flats([(c, st) for _, c, st in statics])
    rows = [_capture_rows(*item, flat) for item, flat in zip(statics, flats, strict=True)]
    sizes = [r.st.n for r in rows]
    total = sum(sizes)

    def column(name: str) -> pa.Array | pa.ChunkedArray:
        arrays = [r.st.columns[name] for r in rows]
        return arrays[0] if len(arrays) == 1 else pa.chunked_array(arrays)

    data: dict[str, Any] = {
        "step": pa.array(np.repeat(np.array([r.step for r in rows], dtype=np.int64), sizes))
    }
    for name in ("name", "kind", "group", "shape", "numel", "dtype"):
        data[name] = column(name)
    for name in (*_FLOATS, *_COUNTS):
        parts = [r.values[name] for r in rows]
        if all(p is None for p in parts):
            data[name] = pa.nulls(total, pa.int64() if name in _COUNTS else pa.float64())
            continue
        filled = [p if p is not None else _nulls(r.st.n) for p, r in zip(parts, rows, strict=True)]
        values = np.concatenate([v for v, _ in filled]) if len(filled) > 1 else filled[0][0]
        valid = np.concatenate([ok for _, ok in filled]) if len(filled) > 1 else filled[0][1]
        data[name] = _counts(values, valid) if name in _COUNTS else _masked(values, valid)
    data["fingerprint"] = pa.array([fp for r in rows for fp in r.fps], pa.string())
    grad_fps = [fp for r in rows for fp in (r.grad_fps + r.st.no_grad_fps if r.grad_fps else [None] * r.st.n)]
    data["grad_fingerprint"] = pa.array(grad_fps, pa.string())
    out: dict[str, pa.Table | None] = {
        "params": pa.Table.from_arrays([data[f.name] for f in schemas.PARAMS], schema=schemas.PARAMS)
    }
    digests = list(zip(*(r.digest for r in rows), strict=True))
    out["param_digests"] = pa.Table.from_arrays(
        [pa.array(list(col), f.type) for col, f in zip(digests, schemas.PARAM_DIGESTS, strict=True)],
        schema=schemas.PARAM_DIGESTS,
    )
    counts = [len(r.scalars) for r in rows]
    out["scalars"] = pa.Table.from_arrays(
        [
            pa.array(np.repeat(np.array([r.step for r in rows], dtype=np.int64), counts)),
            pa.array([k for r in rows for k, _ in r.scalars], pa.string()),
            pa.array([v for r in rows for _, v in r.scalars], pa.float64()),
            pa.array(np.repeat(np.array([r.time_us for r in rows], dtype=np.int64), counts)).view(
                schemas.TIME
            ),
        ],
        schema=schemas.SCALARS,
    )
    holdouts = [r.holdout for r in rows if r.holdout is not None]
    if holdouts:
        out["holdout"] = holdouts[0] if len(holdouts) == 1 else pa.concat_tables(holdouts)
    return out
