"""``Watcher``: the optimizer hooks of one ``watch`` call, and what they queue at a captured step.

Why it exists: this is the code that runs on the training thread at every optimizer step, so it is
kept apart from option checking (``options.py``) and row building (``rows.py``).
On steps that are not captured the hooks only advance a counter; at a captured step they queue the
batched summaries and fingerprints into a ``Pack``, start its copies and hand the capture to the
writer thread. Step numbering is described in ``watch.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lakelog.errors import InvalidArgumentError
from lakelog.write.telemetry import groups as groups_mod
from lakelog.write.telemetry import holdout as holdout_mod
from lakelog.write.telemetry.batch import Batch
from lakelog.write.telemetry.pack import Pack
from lakelog.write.telemetry.previous_weights import Previous
from lakelog.write.telemetry.reader import Reader
from lakelog.write.telemetry.rows import Capture

if TYPE_CHECKING:
    from lakelog.write.telemetry.options import Options

log = logging.getLogger("lakelog")


def resume_point(run: Any) -> tuple[bool, int | None]:
    """Whether this process resumed ``run`` (it was in the lake before), and the last step it resumes after.

    The step is ``run.resumed_from`` where the run knows it from its committed data, else the latest
    resume record of run.json (None when the interrupted process never recorded its last step).
    """
    resumes = run.info.get("resumes") or []
    after = getattr(run, "resumed_from", None)
    if after is None and resumes:
        after = resumes[-1].get("after_step")
    return bool(resumes) or after is not None, None if after is None else int(after)


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
        self.optimizer = optimizer
        self.options = opts
        self.model = model
        self.every = opts.every
        self.error: BaseException | None = None
        self._holdout = holdout
        self._fp = opts.fingerprints
        self._count = 0
        self._resumed, after = resume_point(run)
        # a resumed process continues after the committed step, not from a fresh counter
        self._seen = after + 1 if after is not None and run.step <= after else run.step
        self._base = 0
        self._calls = run.log_calls  # log calls seen at the latest pre-hook (or at watch)
        self._order: str | None = None  # "before" / "after": where the loop logs a batch's step
        self._last: int | None = None  # the stamp of the latest optimizer step
        self._pending: Capture | None = None
        self._open: int | None = None  # "after" loops: the predicted stamp of the step not yet settled
        self._held: tuple[Capture, groups_mod.Layout] | None = None  # its capture, waiting for the step
        self._resume_held: tuple[Capture, groups_mod.Layout] | None = None  # the resume point, likewise
        self._labels: list[torch.Tensor] = []
        self._num_classes = 0
        self._hooks: list[Any] = []
        self._attached = True
        self._groups_seen = len(optimizer.param_groups) if optimizer is not None else 0
        self._use_layout(layout)
        self._batch = Batch()
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

    def _logged_step(self) -> int:
        """The step of the batch this optimizer step consumes, as far as the pre-hook can tell.

        A loop that logs a batch before ``optimizer.step()`` has logged its step already ("before"); one
        that logs after it ("after": no log call between ``watch`` and the first step, or a logged step
        that lags one batch behind) logs it after the post-hook, so its capture is held until the next
        pre-hook (``_settle``) and the stamp here is a prediction: the previous stamp plus one.
        """
        run = self.run
        calls = run.log_calls
        if self._order is None:
            self._order = "before" if calls > self._calls else "after"
        self._settle()
        self._calls = calls
        if self._order == "before":
            if run.step != self._seen:
                self._seen, self._base = run.step, self._count
            stamp = self._seen + self._count - self._base
            if self._last is None or stamp > self._last:
                self._last = stamp
                return stamp
            self._order = "after"  # the logged step lags one batch behind: the loop logs after the step
        self._open = self._seen if self._last is None else self._last + 1
        return self._open

    def _settle(self) -> None:
        """ "after" loops: the step the previous optimizer step logged is known now; stamp its capture."""
        if self._open is None:
            return
        run, stamp, self._open = self.run, self._open, None
        if run.log_calls > self._calls:
            stamp = run.step
        if self._last is not None and stamp <= self._last:
            stamp = self._last + 1  # two captures never share a step
        self._last = stamp
        self._release_resume_point(stamp)
        if self._held is not None:
            (capture, layout), self._held = self._held, None
            capture.step = stamp
            self._guard(self._submit, capture, layout)

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            stamp = self._stamp() if self.options.step is not None else self._logged_step()
        except Exception as exc:  # a user step callable that fails must not stop training either
            self._fail(exc)
            return
        if self._open is None:  # the step is final (an "after" loop settles it at the next pre-hook)
            self._release_resume_point(stamp)
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
        capture = Capture(step=stamp, pack=Pack())
        if grads_now:
            self._reader.grads(capture)
        self._pending = capture

    def _use_layout(self, layout: groups_mod.Layout) -> None:
        self.layout = layout
        self._reader = Reader(layout, self.optimizer, self._fp)

    def _finish(self, capture: Capture) -> None:
        """Post-hook of a captured step: weights, buffers, update, optimizer state, holdout; then submit."""
        reader, pack = self._reader, capture.pack
        if capture.grads is None:
            reader.grads(capture)
        reader.weights(capture)
        reader.update(capture, self._previous)
        if self.optimizer is not None:
            reader.optim(capture)
        if self._labels:
            capture.labels, capture.num_classes = self._pack_labels(pack), self._num_classes
        if self._holdout is not None and capture.step % self.options.holdout_every == 0:
            capture.holdout = self._evaluate_holdout(pack)
        if self._open is not None:  # its step is logged after this hook: hold it until then
            pack.send()
            self._held = (capture, self.layout)
            return
        self._submit(capture, self.layout)

    def _resume_point(self) -> None:
        """The restored weights, buffers and optimizer state (kinds ``resume:*``), taken now and held until
        the first step is known: it is stamped with the step before it, the step the checkpoint holds
        (which can be later than the lake's committed step after a crash), so a reader compares it with
        what the interrupted process had at that step."""
        capture = Capture(step=-1, pack=Pack(), resume=True)
        self._reader.weights(capture)
        if self.optimizer is not None:
            self._reader.optim(capture)
        capture.pack.send()
        self._resume_held = (capture, self.layout)

    def _release_resume_point(self, first_step: int) -> None:
        if self._resume_held is None:
            return
        (capture, layout), self._resume_held = self._resume_held, None
        if first_step > 0:
            capture.step = first_step - 1
            self._guard(self._submit, capture, layout)

    def _relayout(self) -> None:
        opts = self.options
        self._use_layout(groups_mod.resolve(self.model, self.optimizer, opts.groups, prefix=opts.prefix))
        self._groups_seen = len(self.optimizer.param_groups)  # type: ignore[union-attr]

    def _submit(self, capture: Capture, layout: groups_mod.Layout) -> None:
        """Hand the capture to the writer; ``layout`` is the one it was taken with (a later relayout must
        not change its rows)."""
        capture.pack.send()
        epoch = self.run.epoch
        build = self._batch.builder(layout, capture, self._reader.rows_cache, epoch)
        build.nbytes = capture.nbytes  # small captures wait for others before the writer wakes (submit)
        self.run.submit(build, epoch=epoch)

    def capture(self, *, step: int | None = None) -> None:
        """Capture now (gradients as they are, weights, state): for loops without an optimizer to hook."""
        stamp = self._stamp() if step is None else int(step)
        self._release_resume_point(stamp)
        self._begin(stamp)
        capture, self._pending = self._pending, None
        assert capture is not None
        self._finish(capture)
        self._labels = []

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
        """Check the holdout runs, write the initial fingerprints at the run's current step, add the hooks.

        The initial state is the run's true start: a process that resumes the run does not capture it again
        (its weights are the restored ones, compared by the captures after the resume point).
        """
        if self._holdout is not None:
            self._evaluate_holdout(None)
        if self.options.initial and not self._resumed:
            capture = Capture(step=self.run.step, pack=Pack(), initial=True)
            self._reader.weights(capture)
            self._submit(capture, self.layout)
        elif self.options.initial:
            self._resume_point()
        if self.optimizer is not None:
            self._hooks = [
                self.optimizer.register_step_pre_hook(self._pre),
                self.optimizer.register_step_post_hook(self._post),
            ]

    def detach(self) -> None:
        """Remove the hooks and the kept previous weights; captures already taken are still written."""
        if self._held is not None and self._attached:
            self._settle()  # the last step of an "after" loop: its step is logged by now
        if self._resume_held is not None and self._attached:
            self._release_resume_point(self.run.step + 1)  # no step taken since the resume
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self._attached = False
        self._pending = None
        self._labels = []
        self._previous.clear()
        self.run.detach_watcher(self)

    @property
    def steps(self) -> int:
        """Optimizer steps seen since ``watch``."""
        return self._count
