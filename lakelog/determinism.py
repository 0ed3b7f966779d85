"""Making a run reproducible, and recording the randomness it saw so two runs can be compared.

``seed_everything`` seeds Python, NumPy and torch and switches on deterministic kernels;
``rng_fingerprints`` hashes the global RNG states without drawing from them (``log_batch(rng=True)``);
``seed_worker`` / ``dataloader_generator`` seed DataLoader workers and shuffling; ``record_workers``
writes each worker's seeds to the ``workers`` table; ``should_stop`` lets a script run only the steps
``lakelog check-determinism`` asks for.
"""

from __future__ import annotations

import array
import ctypes
import glob
import json
import logging
import os
import random
import shutil
import struct
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from . import schemas
from .errors import InvalidArgumentError
from .fingerprint import combine_hex, fingerprint_bytes, fingerprint_many, to_hex

log = logging.getLogger("lakelog")

ENV_ROOT, ENV_RUN_NAME, ENV_MODE, ENV_MAX_STEPS = "LAKELOG_ROOT", "LAKELOG_RUN_NAME", "LAKELOG_MODE", "LAKELOG_MAX_STEPS"
DETERMINISM_ENV = ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
_pending_seeding: dict[str, Any] | None = None  # what seed_everything set before any run existed
_max_steps: int | None = None  # set by check_determinism(fn) for the duration of the call
_worker_seeds: dict[str, Any] | None = None  # in a worker process: what seed_worker set


# -- seeding ------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = True, warn_only: bool = False) -> dict[str, Any]:
    """Seed Python, NumPy and torch (CPU and every CUDA device); with ``deterministic`` also pick
    deterministic kernels. Returns what was set, which is also stored in run.json under ``seeding``.

    Call it first thing, before building the model and the DataLoader. CUBLAS_WORKSPACE_CONFIG only
    takes effect if set before CUDA starts; PYTHONHASHSEED only affects processes started later.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise InvalidArgumentError(f"seed: expected an int in [0, 2**32), got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily when CUDA is not started yet)
    os.environ["PYTHONHASHSEED"] = str(seed)
    settings: dict[str, Any] = {
        "seed": seed, "python": seed, "numpy": seed, "torch": seed,
        "cuda": seed if torch.cuda.is_available() else None, "deterministic": bool(deterministic),
    }
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        settings.update(cudnn_deterministic=True, cudnn_benchmark=False, deterministic_algorithms=True,
                        warn_only=bool(warn_only))
    settings["env"] = {name: os.environ.get(name) for name in DETERMINISM_ENV}
    _record_seeding(settings)
    return settings


def _record_seeding(settings: dict[str, Any]) -> None:
    global _pending_seeding
    from .run import current_run

    run = current_run()
    if run is not None and not run.closed:
        run.update_info(seeding=settings)
        _pending_seeding = None
    else:
        _pending_seeding = settings


def pending_seeding() -> dict[str, Any] | None:
    """What ``seed_everything`` set before a run existed (once): ``lakelog.init`` stores it in run.json."""
    global _pending_seeding
    settings, _pending_seeding = _pending_seeding, None
    return settings


def dataloader_generator(seed: int) -> torch.Generator:
    """A seeded generator for ``DataLoader(generator=...)``: fixes the shuffle and the workers' base seed."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidArgumentError(f"seed: expected a non-negative int, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


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


# -- fingerprints of RNG states ----------------------------------------------------------------
def _numpy_state_bytes(state: tuple) -> bytes:
    _, keys, pos, has_gauss, gauss = state
    return np.ascontiguousarray(keys, dtype=np.uint32).tobytes() + struct.pack("<qqd", pos, has_gauss, gauss)


def _numpy_global_bytes() -> bytes:
    """NumPy's global MT19937 key and position, read through its documented ctypes address (2 us instead of
    the 200+ us of ``np.random.get_state()``); the cached Gaussian of the legacy API is left out."""
    if _FAST_NUMPY:
        return ctypes.string_at(np.random.mtrand._rand._bit_generator.ctypes.state_address, _MT19937_BYTES)
    return _numpy_state_bytes(np.random.get_state())[:_MT19937_BYTES]


def _fast_numpy_works() -> bool:
    try:
        _, keys, pos, _, _ = np.random.get_state()
        raw = ctypes.string_at(np.random.mtrand._rand._bit_generator.ctypes.state_address, _MT19937_BYTES)
        return raw == np.ascontiguousarray(keys, dtype=np.uint32).tobytes() + struct.pack("<i", pos)
    except Exception:
        return False


_MT19937_BYTES = 624 * 4 + 4
_FAST_NUMPY = _fast_numpy_works()


def _python_state_bytes(state: tuple) -> bytes:
    version, internal, gauss = state
    return array.array("Q", internal).tobytes() + repr((version, gauss)).encode()


def rng_fingerprints() -> dict[str, str | None]:
    """Fingerprints of the global RNG states (torch CPU, CUDA devices combined, NumPy, ``random``).

    Reading a state draws nothing. CUDA is fingerprinted only once the program has started it, so
    calling this never initialises CUDA; ``cuda`` is None otherwise.
    """
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = combine_hex([fingerprint_bytes(memoryview(s.numpy())) for s in torch.cuda.get_rng_state_all()])
    return {
        "torch": fingerprint_bytes(memoryview(torch.get_rng_state().numpy())),
        "cuda": cuda,
        "numpy": fingerprint_bytes(_numpy_global_bytes()),
        "python": fingerprint_bytes(_python_state_bytes(random.getstate())),
    }


def save_state() -> dict[str, Any]:
    """The global RNG states, determinism flags and variables, for ``restore_state`` (tests, check_determinism)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"rng": (torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()), "flags": save_flags()}


def restore_state(saved: dict[str, Any]) -> None:
    torch_state, cuda, numpy_state, python_state = saved["rng"]
    torch.set_rng_state(torch_state)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    restore_flags(saved["flags"])


def save_flags() -> dict[str, Any]:
    cudnn = torch.backends.cudnn
    return {"cudnn": (cudnn.deterministic, cudnn.benchmark),
            "algorithms": (torch.are_deterministic_algorithms_enabled(),
                           torch.is_deterministic_algorithms_warn_only_enabled()),
            "env": {name: os.environ.get(name) for name in DETERMINISM_ENV}}


def restore_flags(saved: dict[str, Any]) -> None:
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved["cudnn"]
    enabled, warn_only = saved["algorithms"]
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    for name, value in saved["env"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# -- running under check-determinism ------------------------------------------------------------
def init_overrides(root: Any, name: str | None, mode: str) -> tuple[Any, str | None, str]:
    """Where ``lakelog.init`` writes when ``lakelog check-determinism`` runs the script: its variables win."""
    return (os.environ.get(ENV_ROOT) or root, os.environ.get(ENV_RUN_NAME) or name,
            os.environ.get(ENV_MODE) or mode)


def max_steps() -> int | None:
    """The number of steps check-determinism asked for (None when not running under it)."""
    if _max_steps is not None:
        return _max_steps
    text = os.environ.get(ENV_MAX_STEPS)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArgumentError(f"{ENV_MAX_STEPS}: expected an integer number of steps, got {text!r}") from None


def should_stop(step: int) -> bool:
    """True when ``step`` (the number of steps already done) reached the limit check-determinism set.

    ``for step, batch in enumerate(loader): if lakelog.should_stop(step): break``; always False otherwise.
    """
    limit = max_steps()
    return limit is not None and step >= limit


# -- initial state ------------------------------------------------------------------------------
def log_initial_state(run: Any, model: torch.nn.Module) -> None:
    """Fingerprints of every parameter and buffer before the first step (kinds ``initial:param`` and
    ``initial:buffer`` in ``params``), for runs that do not use ``run.watch`` (which writes the same rows)."""
    named = [("initial:param", n, t) for n, t in model.named_parameters()]
    named += [("initial:buffer", n, t) for n, t in model.named_buffers()]
    if not named:
        return
    fps = fingerprint_many([t.detach() for _, _, t in named])
    shapes = [str(list(t.shape)) for _, _, t in named]
    dtypes = [str(t.dtype).removeprefix("torch.") for _, _, t in named]
    step = run.step

    def build() -> dict[str, pa.Table]:
        n = len(named)
        columns = {f.name: pa.nulls(n, f.type) for f in schemas.PARAMS}
        columns.update(step=pa.array([step] * n, pa.int64()), name=pa.array([x[1] for x in named]),
                       kind=pa.array([x[0] for x in named]), shape=pa.array(shapes), dtype=pa.array(dtypes),
                       numel=pa.array([t.numel() for _, _, t in named], pa.int64()),
                       fingerprint=pa.array(to_hex(fps.reshape(-1, 2)), pa.string()))
        return {"params": pa.table(columns, schema=schemas.PARAMS)}

    run.submit(build)


# -- DataLoader workers -------------------------------------------------------------------------
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
                "loader": self.loader, "pass_idx": self.pass_idx, "worker_id": worker_id, "pid": os.getpid(),
                "torch_seed": torch_seed - 2**64 if torch_seed >= 2**63 else torch_seed, "numpy_seed": known.get("numpy"),
                "python_seed": None if python_seed is None else str(python_seed),
                "numpy_state": fingerprint_bytes(_numpy_state_bytes(np.random.get_state())),
                "python_state": fingerprint_bytes(_python_state_bytes(random.getstate())),
                "dataset_rng_state": _dataset_rngs(info.dataset) if info is not None else None,
                "time": time.time(),
            }
            path = os.path.join(self.inbox, f"{self.pass_idx:06d}-{worker_id:04d}-{uuid.uuid4().hex[:8]}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(path + ".tmp", path)
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
        "dataset": type(loader.dataset).__qualname__, "len": size, "batch_size": loader.batch_size,
        "sampler": type(sampler).__qualname__, "shuffle": isinstance(sampler, torch.utils.data.RandomSampler),
        "generator_seed": None if generator is None else generator.initial_seed(),
        "num_workers": loader.num_workers, "persistent_workers": loader.persistent_workers,
        "worker_init_fn": None if init_fn is None else getattr(init_fn, "__qualname__", repr(init_fn)),
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
        self._passes: dict[str, int] = run.__dict__.setdefault("_lakelog_loader_passes", {})
        self._pass_steps: dict[int, int] = {}
        run.update_info(loaders={**(run.info.get("loaders") or {}), name: describe_loader(loader)})
        run.on_finish(self._close)

    def __iter__(self) -> Iterator[Any]:
        pass_idx = self._recorder.pass_idx = self._passes.get(self.name, 0)  # travels to the workers iter() starts
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
        from .api import run as current

        run = current()
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"name: expected a non-empty loader name, got {name!r}")
    if not hasattr(loader, "worker_init_fn") or not hasattr(loader, "num_workers"):
        raise InvalidArgumentError(f"loader: expected a torch DataLoader, got {type(loader).__name__}")
    return RecordedLoader(run, loader, name)
