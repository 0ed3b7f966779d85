"""Training telemetry: ``run.watch(model, optimizer)`` and nothing else changes in the training loop.

Two optimizer hooks do the work. The step pre-hook (gradients exist, weights not yet updated)
summarizes and fingerprints the gradients; the post-hook summarizes and fingerprints the weights,
buffers and optimizer state, measures the update since the previous capture, evaluates the holdout
and hands everything to the run's writer thread. On steps that are not captured the hooks only
advance a counter. A capture queues batched device work and starts one non-blocking copy per device;
the Arrow rows are built on the writer thread (``run.submit``).

Step numbering: a capture is stamped with the step of your latest log call plus the optimizer steps
taken since that call was first seen (before any log call: the run's step at ``watch`` time plus the
optimizer steps taken), and happens when that stamp is a multiple of ``every``. So when you log the
iteration's step before ``optimizer.step()`` (``log_batch`` at the top of the loop, ``log_predictions``
after the forward, ``log`` of the loss after ``backward``), the params and holdout rows carry the same
step as your other rows. Pass ``step=callable`` (e.g. ``lambda: trainer.global_step``) to set it
exactly, or ``step="optimizer"`` for the 0-based index of the optimizer step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from . import groups as groups_mod
from . import holdout as holdout_mod
from . import schemas
from .errors import InvalidArgumentError
from .summaries import Pack, Previous, Section, dtype_text, shape_text

log = logging.getLogger("lakelog")

FINGERPRINT_KINDS = ("param", "grad", "buffer", "optim")
KEEP = ("device", "cpu", "disk", None)


@dataclass
class Options:
    """What ``watch`` accepts besides the model and optimizer (see the README's Telemetry section)."""

    every: int = 100
    groups: Any = None
    holdout: Any = None
    holdout_every: int | None = None
    keep_previous: str | None = "cpu"
    fingerprints: Any = True
    step: Any = None
    prefix: str = ""
    initial: bool = True


def _positive(value: Any, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{arg}: expected a positive int, got {value!r}")
    return value


def _options(options: dict[str, Any]) -> Options:
    names = [f.name for f in fields(Options)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise InvalidArgumentError(f"watch: unknown option(s) {unknown}; expected some of {names}")
    opts = Options(**options)
    _positive(opts.every, "every")
    if opts.holdout_every is None:
        opts.holdout_every = opts.every
    if _positive(opts.holdout_every, "holdout_every") % opts.every:
        raise InvalidArgumentError(
            f"holdout_every: expected a multiple of every={opts.every}, got {opts.holdout_every}"
        )
    if opts.keep_previous == "none":
        opts.keep_previous = None
    if opts.keep_previous not in KEEP:
        raise InvalidArgumentError(f"keep_previous: expected one of {KEEP}, got {opts.keep_previous!r}")
    if opts.step is not None and opts.step != "optimizer" and not callable(opts.step):
        raise InvalidArgumentError(
            f"step: expected None, 'optimizer' or a callable returning the step, got {opts.step!r}"
        )
    fp = opts.fingerprints
    kinds = set(FINGERPRINT_KINDS) if fp is True else set() if fp is False or fp is None else None
    if kinds is None:
        kinds = {fp} if isinstance(fp, str) else set(fp) if isinstance(fp, list | tuple | set) else {None}
        if not kinds <= set(FINGERPRINT_KINDS):
            raise InvalidArgumentError(
                f"fingerprints: expected True, False or some of {FINGERPRINT_KINDS}, got {fp!r}"
            )
    opts.fingerprints = kinds
    return opts


@dataclass
class _Capture:
    """One capture's host-bound data (training thread); ``_build`` turns it into rows (writer thread)."""

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
    time: float = 0.0


class Watcher:
    """The hooks of one ``watch`` call; ``detach()`` removes them (done for you at ``run.finish()``)."""

    def __init__(
        self,
        run: Any,
        layout: groups_mod.Layout,
        optimizer: torch.optim.Optimizer | None,
        opts: Options,
        holdout: tuple[list[Any], Callable] | None,
        model: torch.nn.Module,
        index: int,
    ) -> None:
        self.run = run
        self.layout = layout
        self.optimizer = optimizer
        self.options = opts
        self.model = model
        self.every = opts.every
        self.error: BaseException | None = None
        self._holdout = holdout
        self._fp = opts.fingerprints
        self._count = 0
        self._seen = run.step
        self._base = 0
        self._pending: _Capture | None = None
        self._labels: list[torch.Tensor] = []
        self._num_classes = 0
        self._hooks: list[Any] = []
        self._attached = True
        self._groups_seen = len(optimizer.param_groups) if optimizer is not None else 0
        path = None
        if opts.keep_previous == "disk":
            try:
                path = Path(run.path) / ".telemetry" / f"previous-r{run.rank}-{index}.safetensors"
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(
                    f"keep_previous: 'disk' needs a run folder on local disk ({exc})"
                ) from exc
        self._previous = Previous(opts.keep_previous, path)

    # -- hooks (training thread) -----------------------------------------------------------
    def _stamp(self) -> int:
        if self.options.step is None:
            return self._seen + self._count - self._base
        if self.options.step == "optimizer":
            return self._count
        return int(self.options.step())

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step = self.run.step
        if step != self._seen:
            self._seen, self._base = step, self._count
        try:
            stamp = self._stamp()
        except Exception as exc:  # a user step callable that fails must not stop training either
            self._fail(exc)
            return
        if stamp % self.every == 0:
            # step(closure) (LBFGS, Lightning) computes the gradients inside the step: read them after it.
            closure = kwargs.get("closure") if kwargs else None
            closure = closure or next((a for a in args if callable(a) and a is not optimizer), None)
            self._guard(self._begin, stamp, closure is None)

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._count += 1
        if self._pending is not None:
            capture, self._pending = self._pending, None
            self._guard(self._finish, capture)
        if self._labels:
            self._labels = []

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Telemetry must not stop training: a failure is logged, recorded in run.json and detaches."""
        try:
            fn(*args)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        log.error("lakelog.watch: capture failed, telemetry is off for this run: %r", exc)
        self.detach()
        try:
            self.run.update_info(telemetry_error=f"{type(exc).__name__}: {exc}")
        except Exception as info_exc:  # e.g. the run is already finished
            log.error("lakelog.watch: could not record the failure in run.json: %r", info_exc)

    def observe(self, labels: Any, *, num_classes: int | None = None) -> None:
        """Labels of the current batch, for ``label_pct/<class>`` at the next capture; no device sync."""
        labels = holdout_mod.check_labels(labels)
        if not self._attached:
            return
        if num_classes is not None:
            self._num_classes = max(self._num_classes, int(num_classes))
        self._labels.append(labels.detach())

    # -- captures ----------------------------------------------------------------------------
    def _begin(self, stamp: int, grads_now: bool = True) -> None:
        """Pre-hook of a captured step: the gradients, before the optimizer consumes them."""
        if self.optimizer is not None and len(self.optimizer.param_groups) != self._groups_seen:
            self._relayout()  # add_param_group (progressive unfreezing): new groups, new group names
        capture = _Capture(step=stamp, pack=Pack())
        if grads_now:
            self._grads(capture)
        self._pending = capture

    def _grads(self, capture: _Capture) -> None:
        grads = [e.tensor.grad for e in self.layout.params]
        capture.grads = Section(capture.pack, "g", grads, full=False, fingerprint="grad" in self._fp)

    def _weights(self, capture: _Capture) -> None:
        params = [e.tensor.detach() for e in self.layout.params]
        buffers = [e.tensor.detach() for e in self.layout.buffers]
        pack = capture.pack
        capture.params = Section(pack, "w", params, full=True, fingerprint="param" in self._fp)
        capture.buffers = Section(pack, "b", buffers, full=True, fingerprint="buffer" in self._fp)
        capture.meta = [(shape_text(t), dtype_text(t)) for t in params + buffers]
        capture.time = time.time()

    def _finish(self, capture: _Capture) -> None:
        """Post-hook of a captured step: weights, buffers, update, optimizer state, holdout; then submit."""
        if capture.grads is None:
            self._grads(capture)
        self._weights(capture)
        pack = capture.pack
        tensors = [e.tensor.detach() for e in self.layout.params]
        update = self._previous.update([e.name for e in self.layout.params], tensors)
        if update is not None:
            pack.add("update", update)
            capture.update_known = self._previous.known
        if self.optimizer is not None:
            rows = self._optim_rows()
            capture.optim_rows = [(i, key, shape_text(t), dtype_text(t)) for i, key, t in rows]
            capture.optim = Section(
                pack, "o", [t for _, _, t in rows], full=False, minmax=False, fingerprint="optim" in self._fp
            )
            capture.hyper = self._hyper(pack)
        if self._labels:
            capture.labels, capture.num_classes = self._pack_labels(pack), self._num_classes
        if self._holdout is not None and capture.step % self.options.holdout_every == 0:
            capture.holdout = self._evaluate_holdout(pack)
        self._submit(capture)

    def _relayout(self) -> None:
        opts = self.options
        self.layout = groups_mod.resolve(self.model, self.optimizer, opts.groups, prefix=opts.prefix)
        self._groups_seen = len(self.optimizer.param_groups)  # type: ignore[union-attr]

    def _submit(self, capture: _Capture) -> None:
        capture.pack.send()
        layout = self.layout  # bound now: a later relayout must not change this capture's rows
        self.run.submit(lambda: _build(layout, capture), epoch=self.run.epoch)

    def capture(self, *, step: int | None = None) -> None:
        """Capture now (gradients as they are, weights, state): for loops without an optimizer to hook."""
        self._begin(self._stamp() if step is None else int(step))
        capture, self._pending = self._pending, None
        assert capture is not None
        self._finish(capture)
        self._labels = []

    def _optim_rows(self) -> list[tuple[int, str, torch.Tensor]]:
        state = self.optimizer.state  # type: ignore[union-attr]
        rows = []
        for i, entry in enumerate(self.layout.params):
            for key, value in state.get(entry.tensor, {}).items():
                if isinstance(value, torch.Tensor):
                    rows.append((i, f"optim:{key}", value))
        return rows

    def _hyper(self, pack: Pack) -> list[tuple[str, float | str]]:
        """Hyperparameters as numbers, or as the pack key of a device tensor (read without a sync)."""
        out: list[tuple[str, float | str]] = []
        for j, (name, value) in enumerate(groups_mod.hyperparameters(self.optimizer, self.layout.opt_groups)):  # type: ignore[arg-type]
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                pack.add(f"hyper/{j}", value.detach().reshape(1))
                out.append((name, f"hyper/{j}"))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append((name, float(value)))
        return out

    def _pack_labels(self, pack: Pack) -> str:
        first = self._labels[0]
        if first.is_floating_point():  # (batch, classes) one-hot or probabilities: class sums
            sums = torch.stack(
                [lab.to(first.device, non_blocking=True).sum(0).to(torch.float64) for lab in self._labels]
            ).sum(0)
            n = sum(lab.shape[0] for lab in self._labels)
            pack.add(
                "labels/sums",
                torch.cat([sums, torch.full((1,), float(n), dtype=sums.dtype, device=sums.device)]),
            )
            return "sums"
        flat = torch.cat(
            [lab.to(first.device, torch.int64, non_blocking=True).reshape(-1) for lab in self._labels]
        )
        pack.add("labels/ids", flat)
        return "ids"

    def _evaluate_holdout(self, pack: Pack | None) -> bool:
        """Holdout logits and labels into ``pack``; at watch time (no pack) a failure is the caller's error,
        later it turns the holdout off and training goes on."""
        batches, forward = self._holdout  # type: ignore[misc]
        try:
            logits, labels = holdout_mod.evaluate(self.model, batches, forward)
        except Exception as exc:
            if pack is None and isinstance(exc, InvalidArgumentError):
                raise
            if pack is None:
                raise InvalidArgumentError(
                    f"holdout: forward_fn raised {type(exc).__name__}: {exc} when tried at watch() time; "
                    "call watch() once the model can run a forward pass on the holdout batches"
                ) from exc
            self._holdout, self.error = None, exc
            log.error("lakelog.watch: holdout evaluation failed and is turned off: %r", exc)
            self.run.update_info(telemetry_error=f"holdout: {type(exc).__name__}: {exc}")
            return False
        if pack is not None:
            pack.add("holdout/logits", logits)
            if labels is not None:
                pack.add("holdout/labels", labels)
        return True

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Check the holdout runs, write the initial fingerprints at the run's current step, add the hooks."""
        if self._holdout is not None:
            self._evaluate_holdout(None)
        if self.options.initial:
            capture = _Capture(step=self.run.step, pack=Pack(), initial=True)
            self._weights(capture)
            self._submit(capture)
        if self.optimizer is not None:
            self._hooks = [
                self.optimizer.register_step_pre_hook(self._pre),
                self.optimizer.register_step_post_hook(self._post),
            ]

    def detach(self) -> None:
        """Remove the hooks and the kept previous weights; captures already queued are still written."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._attached = False
        self._pending = None
        self._labels = []
        self._previous.clear()
        watchers = getattr(self.run, "_watchers", None)
        if watchers and self in watchers:
            watchers.remove(self)

    @property
    def steps(self) -> int:
        """Optimizer steps seen since ``watch``."""
        return self._count


def _masked(values: np.ndarray, valid: np.ndarray, dtype: pa.DataType | None = None) -> pa.Array:
    dtype = dtype or pa.float64()
    if pa.types.is_integer(dtype):
        values = np.where(valid, np.nan_to_num(values), 0).astype(np.int64)
    return pa.array(values, type=dtype, mask=~np.asarray(valid, dtype=bool))


def _nulls(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, np.nan), np.zeros(n, dtype=bool)


def _table(
    step: int,
    names: list[str],
    kinds: list[str],
    groups: list[str | None],
    meta: list[tuple[str, str]],
    numels: list[int],
    section: tuple[dict, dict],
    fps: list[str | None],
    extra: dict[str, Any],
) -> pa.Table:
    """Rows of the params table; ``extra`` holds grad/update columns as (values, valid) or string lists."""
    n = len(names)
    cols, valid = section
    data: dict[str, Any] = {
        "step": pa.array(np.full(n, step, dtype=np.int64)),
        "name": pa.array(names, pa.string()),
        "kind": pa.array(kinds, pa.string()),
        "group": pa.array(groups, pa.string()),
        "shape": pa.array([m[0] for m in meta], pa.string()),
        "numel": pa.array(numels, pa.int64()),
        "dtype": pa.array([m[1] for m in meta], pa.string()),
    }
    for col in ("norm", "mean", "std", "min", "max", "absmax"):
        data[col] = _masked(cols[col], valid[col])
    for col in ("nan_count", "inf_count"):
        data[col] = _masked(cols[col], valid[col], pa.int64())
    for col in ("grad_norm", "grad_absmax", "update_norm", "update_ratio"):
        data[col] = _masked(*extra.get(col, _nulls(n)))
    data["fingerprint"] = pa.array(fps, pa.string())
    data["grad_fingerprint"] = pa.array(extra.get("grad_fingerprint", [None] * n), pa.string())
    return pa.table(data, schema=schemas.PARAMS)


def _build(layout: groups_mod.Layout, c: _Capture) -> dict[str, pa.Table | None]:
    """Writer thread: the capture's params, scalars and holdout rows."""
    pack = c.pack
    assert c.params is not None and c.buffers is not None and c.meta is not None
    n_p, n_b = c.params.n, c.buffers.n
    pre = "initial:" if c.initial else ""
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
    tables = [
        _table(
            c.step,
            [e.name for e in layout.params],
            [pre + "param"] * n_p,
            groups,
            c.meta[:n_p],
            c.params.numels,
            wcols,
            c.params.fingerprints(pack),
            extra,
        ),
        _table(
            c.step,
            [e.name for e in layout.buffers],
            [pre + "buffer"] * n_b,
            [e.group for e in layout.buffers],
            c.meta[n_p:],
            c.buffers.numels,
            c.buffers.columns(pack),
            c.buffers.fingerprints(pack),
            {},
        ),
    ]
    if c.optim is not None and c.optim_rows:
        idx = [i for i, _, _, _ in c.optim_rows]
        tables.append(
            _table(
                c.step,
                [layout.params[i].name for i in idx],
                [k for _, k, _, _ in c.optim_rows],
                [groups[i] for i in idx],
                [(s, d) for _, _, s, d in c.optim_rows],
                c.optim.numels,
                c.optim.columns(pack),
                c.optim.fingerprints(pack),
                {},
            )
        )
    out: dict[str, pa.Table | None] = {"params": pa.concat_tables(tables)}
    scalars: list[tuple[str, float | None]] = []
    if not c.initial:
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


def observe_labels(run: Any, labels: Any, *, num_classes: int | None = None) -> None:
    """Feed a batch's labels to every watcher of ``run`` (the hook ``Run.log_predictions`` calls)."""
    for watcher in list(getattr(run, "_watchers", ())):
        watcher.observe(labels, num_classes=num_classes)


def watch(run: Any, model: Any, optimizer: Any = None, **options: Any) -> Watcher:
    """Watch ``model`` (and ``optimizer``) for ``run``: see the module docstring and ``Options``."""
    opts = _options(options)
    module = groups_mod.unwrap_model(model)
    layout = groups_mod.resolve(model, optimizer, opts.groups, prefix=opts.prefix)
    opt = groups_mod.unwrap_optimizer(optimizer)
    watchers: list[Watcher] = run.__dict__.setdefault("_watchers", [])
    if opt is not None and any(w.optimizer is opt for w in watchers):
        raise InvalidArgumentError(
            "optimizer: this run already watches it; call watcher.detach() before watching again"
        )
    spec = holdout_mod.parse(opts.holdout, module)
    watcher = Watcher(run, layout, opt, opts, spec, module, index=len(watchers))
    watcher.start()
    watchers.append(watcher)
    run.on_finish(watcher.detach)
    if opt is None:
        log.info("lakelog.watch: no optimizer given; call watcher.capture() to capture")
    run.update_info(
        watch={
            "every": opts.every,
            "holdout_every": opts.holdout_every,
            "keep_previous": opts.keep_previous,
            "groups": sorted({e.group or "" for e in layout.params}),
            "fingerprints": sorted(opts.fingerprints),
            "prefix": opts.prefix,
        }
    )
    return watcher
