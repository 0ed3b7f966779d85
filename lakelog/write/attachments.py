"""What a run lends to telemetry, dumps and integrations: watchers, dumps, loader passes, finish hooks.

A mixin of ``lakelog.write.run.Run`` (its one user), kept apart so the run module holds the run's own
job (its folder, log calls, lifecycle) and this one the attachments that live in their own packages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lakelog.write.dumps.writer import DumpWriter
from lakelog.write.telemetry.watch import watch


class Attachments:
    """Telemetry watchers, the dump writer and finish hooks of a run (mixed into ``Run``)."""

    _watchers: list[Any]
    _loader_passes: dict[str, int]
    _finish_callbacks: list[Callable[[], None]]
    _dumper: Any
    _dump_options: dict[str, Any]
    _position: Callable[[int | None, int | None], tuple[int, int]]  # Run._position

    def watch(self, model: Any, optimizer: Any = None, **options: Any) -> Any:
        """Capture per-parameter summaries every N optimizer steps; see ``lakelog.write.telemetry.watch``."""
        return watch(self, model, optimizer, **options)

    def configure_dumps(
        self, *, every: int | None = None, keep_first: int | None = None, keep_every: int | None = None
    ) -> None:
        """Options for ``dump``: dump every N-th step, keep only the first K, or every N-th dump."""
        self._dump_options = {"every": every, "keep_first": keep_first, "keep_every": keep_every}
        if self._dumper is not None:
            self._dumper.configure(**self._dump_options)

    def dump(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        step: int | None = None,
        epoch: int | None = None,
        loss: float | None = None,
        acc: float | None = None,
        every: int | None = None,
    ) -> Path | None:
        """Model (and optimizer) state to safetensors under ``dumps/step=<s>/``, written off the training thread."""
        step, epoch = self._position(step, epoch)
        if every is not None and self._dump_options.get("every") != every:
            self.configure_dumps(**{**self._dump_options, "every": every})
        if self._dumper is None:
            self._dumper = DumpWriter(self, **self._dump_options)
            self.on_finish(lambda d=self._dumper: d.close())
        return self._dumper.dump(model, optimizer, step=step, epoch=epoch, loss=loss, acc=acc)

    @property
    def watchers(self) -> tuple[Any, ...]:
        """The telemetry watchers attached to this run (``run.watch``), in the order they were attached."""
        return tuple(self._watchers)

    def attach_watcher(self, watcher: Any) -> None:
        """Register a watcher: it is fed the labels of ``log_predictions`` and detached at ``finish``."""
        self._watchers.append(watcher)
        self.on_finish(watcher.detach)

    def detach_watcher(self, watcher: Any) -> None:
        """Forget a watcher (its ``detach`` calls this); unknown watchers are ignored."""
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    @property
    def loader_passes(self) -> dict[str, int]:
        """Passes (epochs) seen per recorded DataLoader name: shared by loaders rebuilt under one name."""
        return self._loader_passes

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Call this before the writer closes (telemetry detaches, dumps drain)."""
        self._finish_callbacks.append(callback)
