"""DataLoader workers: seeding them (``seed_worker``) and recording each worker's seeds per pass.

``record_workers`` writes each worker's seeds to the ``workers`` table and the loader's shuffling and
seeding to run.json, so check-determinism can tell workers that share or repeat their randomness.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lakelog.errors import InvalidArgumentError
from lakelog.lake import schemas
from lakelog.lake.files import write_text_atomic
from lakelog.write.context import active_run
from lakelog.write.determinism.rng import _numpy_state_bytes, _python_state_bytes
from lakelog.write.fingerprint import combine_hex, fingerprint_bytes

log = logging.getLogger("lakelog")

_worker_seeds: dict[str, Any] | None = None  # in a worker process: what seed_worker set


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` that seeds NumPy and ``random`` from the worker's torch seed.

    torch gives each worker ``base_seed + worker_id``, and the base seed comes from the loader's
    generator each epoch: so seeds differ per worker and per epoch, and repeat across runs only if
    the generator is seeded. Seeding from it (not from a constant) keeps both properties.
    """
    global _worker_seeds
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    _worker_seeds = {"numpy": seed, "python": seed}


_GENERATOR_TYPES = {
    np.random.Generator: "numpy.Generator",
    np.random.RandomState: "numpy.RandomState",
    random.Random: "random.Random",
    torch.Generator: "torch.Generator",
}


def dataset_generators(dataset: Any) -> dict[str, str]:
    """The generators a dataset holds as attributes: ``{"rng": "numpy.Generator"}`` (a wrapped dataset's,
    such as a Subset's, as ``"dataset.rng"``), so check-determinism can name the one to reseed."""
    found = {}
    for prefix, owner in (("", dataset), ("dataset.", getattr(dataset, "dataset", None))):
        for attr, value in sorted(getattr(owner, "__dict__", {}).items()):
            kind = next((name for t, name in _GENERATOR_TYPES.items() if isinstance(value, t)), None)
            if kind is not None:
                found[prefix + attr] = kind
    return found


def _dataset_rngs(dataset: Any) -> str | None:
    """A fingerprint of the generators a dataset holds as attributes (copied into every worker as they are)."""
    found = []
    for owner in (dataset, getattr(dataset, "dataset", None)):
        for attr, value in sorted(getattr(owner, "__dict__", {}).items()):
            if isinstance(value, np.random.Generator):
                data = repr(value.bit_generator.state).encode()
            elif isinstance(value, np.random.RandomState):
                data = _numpy_state_bytes(value.get_state())
            elif isinstance(value, random.Random):
                data = _python_state_bytes(value.getstate())
            elif isinstance(value, torch.Generator):
                data = value.get_state().numpy().tobytes()
            else:
                continue
            found.append(fingerprint_bytes(attr.encode() + b"=" + data))
    return combine_hex(found) if found else None


class WorkerRecorder:
    """``worker_init_fn`` wrapper: runs the user's function, then leaves this worker's seeds in a JSON file."""

    def __init__(self, inbox: str, loader: str, user_fn: Callable[[int], None] | None) -> None:
        self.inbox, self.loader, self.user_fn, self.pass_idx = inbox, loader, user_fn, 0

    def __call__(self, worker_id: int) -> None:
        global _worker_seeds
        _worker_seeds = None
        if self.user_fn is not None:
            self.user_fn(worker_id)
        try:
            info = torch.utils.data.get_worker_info()
            torch_seed = torch.initial_seed()  # may exceed int64: stored as its two's complement
            known = _worker_seeds or {}
            python_seed = known.get("python")
            if python_seed is None and random.getstate() == random.Random(torch_seed).getstate():
                python_seed = torch_seed  # torch's own seeding, untouched by the user's function
            record = {
                "loader": self.loader,
                "pass_idx": self.pass_idx,
                "worker_id": worker_id,
                "pid": os.getpid(),
                "torch_seed": torch_seed - 2**64 if torch_seed >= 2**63 else torch_seed,
                "numpy_seed": known.get("numpy"),
                "python_seed": None if python_seed is None else str(python_seed),
                "numpy_state": fingerprint_bytes(_numpy_state_bytes(np.random.get_state())),
                "python_state": fingerprint_bytes(_python_state_bytes(random.getstate())),
                "dataset_rng_state": _dataset_rngs(info.dataset) if info is not None else None,
                "time": time.time(),
            }
            path = os.path.join(
                self.inbox, f"{self.pass_idx:06d}-{worker_id:04d}-{uuid.uuid4().hex[:8]}.json"
            )
            write_text_atomic(path, json.dumps(record), durable=False)  # the parent reads it in this boot
        except Exception as exc:
            log.warning("lakelog: could not record DataLoader worker %s seeds: %s", worker_id, exc)


def describe_loader(loader: Any) -> dict[str, Any]:
    """A DataLoader's shuffling and seeding, as stored in run.json under ``loaders``."""
    sampler = getattr(loader, "sampler", None)
    generator = getattr(loader, "generator", None) or getattr(sampler, "generator", None)
    init_fn = getattr(loader, "worker_init_fn", None)
    init_fn = init_fn.user_fn if isinstance(init_fn, WorkerRecorder) else init_fn
    try:
        size = len(loader.dataset)
    except TypeError:
        size = None
    return {
        "dataset": type(loader.dataset).__qualname__,
        "len": size,
        "batch_size": loader.batch_size,
        "sampler": type(sampler).__qualname__,
        "shuffle": isinstance(sampler, torch.utils.data.RandomSampler),
        "generator_seed": None if generator is None else generator.initial_seed(),
        "num_workers": loader.num_workers,
        "persistent_workers": loader.persistent_workers,
        "worker_init_fn": None if init_fn is None else getattr(init_fn, "__qualname__", repr(init_fn)),
        "dataset_generators": dataset_generators(loader.dataset),
    }


class RecordedLoader:
    """A DataLoader iterated as usual; each pass's worker seeds become rows of the ``workers`` table."""

    def __init__(self, run: Any, loader: Any, name: str) -> None:
        # The run holds this object (on_finish); holding the run only weakly keeps them out of a reference
        # cycle: a persistent-workers DataLoader freed by the cycle collector stalls torch for seconds.
        self._run, self.loader, self.name = weakref.ref(run), loader, name
        self._inbox = tempfile.mkdtemp(prefix="lakelog-workers-")
        self._recorder = WorkerRecorder(self._inbox, name, loader.worker_init_fn)
        loader.worker_init_fn = self._recorder
        # Pass numbers continue across loaders wrapped under the same name in this run (a loader rebuilt
        # every epoch), so a worker that starts each epoch from the same seeds is still seen repeating.
        self._passes: dict[str, int] = run.loader_passes
        self._pass_steps: dict[int, int] = {}
        run.update_info(loaders={**(run.info.get("loaders") or {}), name: describe_loader(loader)})
        run.on_finish(self._close)

    def __iter__(self) -> Iterator[Any]:
        pass_idx = self._recorder.pass_idx = self._passes.get(
            self.name, 0
        )  # travels to the workers iter() starts
        self._passes[self.name] = pass_idx + 1
        try:
            for batch in self.loader:
                yield batch
                if pass_idx not in self._pass_steps and self.run is not None:
                    self._pass_steps[pass_idx] = self.run.step  # the step the first batch was logged at
        finally:
            self.collect()

    @property
    def run(self) -> Any:
        return self._run()

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, attr: str) -> Any:  # batch_size, dataset, sampler…: the DataLoader's
        if attr == "loader":
            raise AttributeError(attr)
        return getattr(self.loader, attr)

    def collect(self) -> int:
        """Turn the workers' files into rows (called after each pass and at finish); returns the row count."""
        records = []
        for path in sorted(glob.glob(os.path.join(self._inbox, "*.json"))):
            with open(path) as f:
                records.append(json.load(f))
            os.remove(path)
        run = self.run
        if not records or run is None or run.closed:
            return 0
        cols = {name: [r[name] for r in records] for name in records[0] if name != "time"}
        cols["step"] = [self._pass_steps.get(r["pass_idx"], run.step) for r in records]
        cols["time"] = [int(r["time"] * 1e6) for r in records]
        run.write_rows("workers", pa.table(cols, schema=schemas.WORKERS))
        return len(records)

    def _close(self) -> None:
        try:
            self.collect()
        finally:
            shutil.rmtree(self._inbox, ignore_errors=True)


def record_workers(run: Any, loader: Any, *, name: str = "train") -> RecordedLoader:
    """Wrap ``loader`` so each worker's torch, NumPy and Python seeds are recorded once per pass (epoch),
    and its shuffling and seeding go into run.json; iterate the returned object instead of ``loader``."""
    if run is None:
        run = active_run()
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"name: expected a non-empty loader name, got {name!r}")
    if not hasattr(loader, "worker_init_fn") or not hasattr(loader, "num_workers"):
        raise InvalidArgumentError(f"loader: expected a torch DataLoader, got {type(loader).__name__}")
    return RecordedLoader(run, loader, name)
