"""``Reader``: what a capture reads from one layout of a watcher: gradients, weights, buffers, the
update norms, optimizer state and hyperparameters, into a ``Capture``'s sections (training thread).

Why apart from ``watcher.py``: the watcher decides *when* a step is captured and under which step (its
hooks); this decides *what* a capture holds. It also keeps what is the same at every capture of a
layout, so a capture does no per-tensor Python work it did before: the lists of live tensors and names,
the flat-copy plans of each section (``flat_cpu.Plans``), the texts of the optimizer-state rows, and the
writer thread's constant columns (``rows.RowsCache``). The watcher makes a new one when the layout
changes (``add_param_group``).
"""

from __future__ import annotations

import operator
import time
from typing import Any

import torch

from lakelog.write.fingerprint import algorithm_for
from lakelog.write.telemetry import groups as groups_mod
from lakelog.write.telemetry.flat_cpu import Plans
from lakelog.write.telemetry.pack import Pack
from lakelog.write.telemetry.previous_weights import Previous
from lakelog.write.telemetry.rows import Capture, RowsCache
from lakelog.write.telemetry.summaries import Section

OptimRows = list[tuple[int, str, str, str]]
_CPU = torch.device("cpu")
_first = operator.itemgetter(0)


class Reader:
    """The sections of a capture, read from ``layout``'s live tensors and ``optimizer``'s state."""

    def __init__(
        self, layout: groups_mod.Layout, optimizer: torch.optim.Optimizer | None, fp: set[str]
    ) -> None:
        self.layout, self.optimizer, self._fp = layout, optimizer, fp
        self.params = [e.tensor for e in layout.params]
        self.buffers = [e.tensor for e in layout.buffers]
        self.names = [e.name for e in layout.params]
        self._row_of = {id(p): i for i, p in enumerate(self.params)}
        self.plans = Plans()
        self.rows_cache = RowsCache()
        self._optim_cache: tuple[list[tuple[int, str]], OptimRows, list[Any]] | None = None

    def grads(self, capture: Capture) -> None:
        grads = [p.grad for p in self.params]
        capture.grads = Section(
            capture.pack, "g", grads, full=False, fingerprint="grad" in self._fp, plans=self.plans
        )

    def weights(self, capture: Capture) -> None:
        pack, fp, plans = capture.pack, self._fp, self.plans
        x3 = algorithm_for(_CPU) == "x3"  # read once for the capture's sections
        capture.params = Section(
            pack, "w", self.params, full=True, fingerprint="param" in fp, plans=plans, x3=x3
        )
        capture.buffers = Section(
            pack, "b", self.buffers, full=True, fingerprint="buffer" in fp, plans=plans, x3=x3
        )
        capture.meta = capture.params.meta + capture.buffers.meta  # type: ignore[operator]
        capture.time = time.time()

    def update(self, capture: Capture, previous: Previous) -> None:
        """The update norms since the previous capture (after ``weights``): the flat copy of the weights
        is compared, and kept, as the previous weights."""
        update = previous.update_capture(self.names, self.params, capture.params.flat)  # type: ignore[union-attr]
        if update is not None:
            if update.norms is not None:
                capture.pack.add("update", update.norms)
            capture.update = update

    def optim(self, capture: Capture) -> None:
        """The optimizer's state tensors (one row each) and its hyperparameters."""
        keys, tensors = self._state()
        section = Section(
            capture.pack,
            "o",
            tensors,
            full=False,
            minmax=False,
            fingerprint="optim" in self._fp,
            plans=self.plans,
        )
        cached = self._optim_cache  # the rows' texts, made again only when the state's keys or shapes change
        if cached is None or cached[0] != keys or cached[2] is not section.meta:
            rows = [(i, f"optim:{key}", *meta) for (i, key), meta in zip(keys, section.meta, strict=True)]
            cached = self._optim_cache = (keys, rows, section.meta)  # type: ignore[arg-type]
        capture.optim_rows, capture.optim = cached[1], section  # type: ignore[index]
        capture.hyper = self._hyper(capture.pack)

    def _state(self) -> tuple[list[tuple[int, str]], list[torch.Tensor]]:
        """(row of the parameter, state key) and the tensor, for each tensor in the optimizer's state, in
        row order. The state is walked as it is (a lookup per parameter would hash each in Python)."""
        row_of = self._row_of
        found = [(row_of.get(id(p)), entry) for p, entry in self.optimizer.state.items()]  # type: ignore[union-attr]
        found = sorted(((i, e) for i, e in found if i is not None and e), key=_first)
        keys, tensors = [], []
        for i, entry in found:
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    keys.append((i, key))
                    tensors.append(value)
        return keys, tensors  # type: ignore[return-value]

    def _hyper(self, pack: Pack) -> list[tuple[str, float | str]]:
        """Hyperparameters as numbers, or as the pack key of a device tensor (read without a sync)."""
        out: list[tuple[str, float | str]] = []
        pairs = groups_mod.hyperparameters(self.optimizer, self.layout.opt_groups)  # type: ignore[arg-type]
        for j, (name, value) in enumerate(pairs):
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                pack.add(f"hyper/{j}", value.detach().reshape(1))
                out.append((name, f"hyper/{j}"))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append((name, float(value)))
        return out
