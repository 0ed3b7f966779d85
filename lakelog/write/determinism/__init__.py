"""Seeding a run, reading its RNG states without drawing from them, recording DataLoader workers.

``seeding`` seeds and steers (``seed_everything``, ``should_stop``, ``log_initial_state``), ``rng``
fingerprints and saves RNG states, ``workers`` records each DataLoader worker's seeds. ``lakelog.check_determinism``, which trains a
function twice and reports, sits above the write and read sides.
"""

from __future__ import annotations

from lakelog.write.determinism.rng import (
    restore_flags,
    restore_state,
    rng_fingerprints,
    save_flags,
    save_state,
)
from lakelog.write.determinism.seeding import (
    dataloader_generator,
    init_overrides,
    log_initial_state,
    max_steps,
    seed_everything,
    should_stop,
)
from lakelog.write.determinism.workers import (
    RecordedLoader,
    WorkerRecorder,
    describe_loader,
    record_workers,
    seed_worker,
)

__all__ = [
    "RecordedLoader",
    "WorkerRecorder",
    "dataloader_generator",
    "describe_loader",
    "init_overrides",
    "log_initial_state",
    "max_steps",
    "record_workers",
    "restore_flags",
    "restore_state",
    "rng_fingerprints",
    "save_flags",
    "save_state",
    "seed_everything",
    "seed_worker",
    "should_stop",
]
