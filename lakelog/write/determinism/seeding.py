"""Making a run reproducible, and recording the randomness it saw so two runs can be compared.

``seed_everything`` seeds Python, NumPy and torch and switches on deterministic kernels;
``rng_fingerprints`` hashes the global RNG states without drawing from them (``log_batch(rng=True)``);
``seed_worker`` / ``dataloader_generator`` seed DataLoader workers and shuffling; ``record_workers``
writes each worker's seeds to the ``workers`` table; ``should_stop`` lets a script run only the steps
``lakelog check-determinism`` asks for; ``log_initial_state`` fingerprints a model before training.

This module seeds and steers the run; reading RNG states lives in ``rng`` and DataLoader workers in
``workers`` (the package ``lakelog.write.determinism`` gathers all three).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lakelog.errors import InvalidArgumentError
from lakelog.lake import checker_env, schemas
from lakelog.lake.checker_env import DETERMINISM_ENV
from lakelog.lake.checks import non_negative_int
from lakelog.write.context import current_run, stash_seeding, step_limit, take_pending_seeding
from lakelog.write.env import hash_seed_at_start
from lakelog.write.fingerprint import algorithm_for, fingerprint_many, to_hex


# -- seeding ------------------------------------------------------------------------------------
def seed_everything(seed: int, deterministic: bool = True, warn_only: bool = False) -> dict[str, Any]:
    """Seed Python, NumPy and torch (CPU and every CUDA device); with ``deterministic`` also pick
    deterministic kernels. Returns what was set, which is also stored in run.json under ``seeding``.

    Call it first thing, before building the model and the DataLoader. CUBLAS_WORKSPACE_CONFIG only
    takes effect if set before CUDA starts; PYTHONHASHSEED only affects processes started later, so
    ``python_hash_seed`` records the value this interpreter started with, the one set, and whether it
    changed (run.json's environment keeps the value at start, so runs started differently show in env_diff).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise InvalidArgumentError(f"seed: expected an int in [0, 2**32), got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily when CUDA is not started yet)
    hash_seed = {"at_start": hash_seed_at_start(), "set_for_new_processes": str(seed)}
    hash_seed["changed"] = hash_seed["at_start"] != hash_seed["set_for_new_processes"]
    os.environ["PYTHONHASHSEED"] = str(seed)  # this interpreter's hashes stay as they started
    settings: dict[str, Any] = {
        "seed": seed,
        "python": seed,
        "numpy": seed,
        "torch": seed,
        "cuda": seed if torch.cuda.is_available() else None,
        "deterministic": bool(deterministic),
    }
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        settings.update(
            cudnn_deterministic=True,
            cudnn_benchmark=False,
            deterministic_algorithms=True,
            warn_only=bool(warn_only),
        )
    settings["env"] = {name: os.environ.get(name) for name in DETERMINISM_ENV}
    settings["python_hash_seed"] = hash_seed
    _record_seeding(settings)
    return settings


def _record_seeding(settings: dict[str, Any]) -> None:
    run = current_run()
    if run is not None and not run.closed:
        run.update_info(seeding=settings)
        take_pending_seeding()
    else:
        stash_seeding(settings)


def dataloader_generator(seed: int) -> torch.Generator:
    """A seeded generator for ``DataLoader(generator=...)``: fixes the shuffle and the workers' base seed."""
    return torch.Generator().manual_seed(non_negative_int(seed, "seed"))


# -- running under check-determinism ------------------------------------------------------------
def init_overrides(root: Any, name: str | None, mode: str) -> tuple[Any, str | None, str]:
    """Where ``lakelog.init`` writes when ``lakelog check-determinism`` runs the script: its variables win."""
    return (
        os.environ.get(checker_env.ROOT) or root,
        os.environ.get(checker_env.RUN_NAME) or name,
        os.environ.get(checker_env.MODE) or mode,
    )


def max_steps() -> int | None:
    """The number of steps check-determinism asked for (None when not running under it)."""
    limit = step_limit()
    if limit is not None:
        return limit
    text = os.environ.get(checker_env.MAX_STEPS)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArgumentError(
            f"{checker_env.MAX_STEPS}: expected an integer number of steps, got {text!r}"
        ) from None


def should_stop(step: int) -> bool:
    """True when ``step`` (the number of steps already done) reached the limit check-determinism set.

    ``for step, batch in enumerate(loader): if lakelog.should_stop(step): break``; always False otherwise.
    """
    limit = max_steps()
    return limit is not None and step >= limit


# -- initial state ------------------------------------------------------------------------------
def log_initial_state(run: Any, model: torch.nn.Module) -> None:
    """Fingerprints of every parameter and buffer before the first step (kinds ``initial:param`` and
    ``initial:buffer`` in ``params``), for runs that do not use ``run.watch`` (which writes the same rows).
    A process that resumes the run writes nothing: the run's true start was captured by the first one."""
    if run.info.get("resumes"):
        return
    named = [("initial:param", n, t) for n, t in model.named_parameters()]
    named += [("initial:buffer", n, t) for n, t in model.named_buffers()]
    if not named:
        return
    fps = fingerprint_many([t.detach() for _, _, t in named])
    algorithms = [algorithm_for(t) for _, _, t in named]  # per tensor: a model may span devices
    shapes = [str(list(t.shape)) for _, _, t in named]
    dtypes = [str(t.dtype).removeprefix("torch.") for _, _, t in named]
    step = run.step

    def build() -> dict[str, pa.Table]:
        n = len(named)
        columns = {f.name: pa.nulls(n, f.type) for f in schemas.PARAMS}
        columns.update(
            step=pa.array([step] * n, pa.int64()),
            name=pa.array([x[1] for x in named]),
            kind=pa.array([x[0] for x in named]),
            shape=pa.array(shapes),
            dtype=pa.array(dtypes),
            numel=pa.array([t.numel() for _, _, t in named], pa.int64()),
            fingerprint=pa.array(to_hex(fps.reshape(-1, 2), algorithms), pa.string()),
        )
        return {"params": pa.table(columns, schema=schemas.PARAMS)}

    run.submit(build)
