"""The fixes check-determinism proposes, as text and code: each one, applied, makes its cause go away.

A fix is chosen for the cause found, not for the symptom: an unseeded generator held by a Dataset
is reseeded in ``worker_init_fn`` (a seeded loader generator alone leaves it unseeded), a script
that seeds nothing gets ``seed_everything`` (which also seeds a shuffle without a generator). Also
turns the DataLoader worker seeding problems found inside one run into messages. No torch.
"""

from __future__ import annotations

from typing import Any

FIX_SEED = "call lakelog.seed_everything(seed) first thing in the script, before building data and model"
FIX_SHUFFLE = "DataLoader(..., shuffle=True, generator=lakelog.dataloader_generator(seed))"
FIX_LISTING = (
    "sort what you list: files = sorted(glob.glob(pattern)) (never rely on os.listdir/glob/set order)"
)
FIX_WORKERS = (
    "DataLoader(..., generator=lakelog.dataloader_generator(seed), worker_init_fn=lakelog.seed_worker): "
    "the workers' seeds come from the loader's generator"
)
FIX_KERNELS = (
    "lakelog.seed_everything(seed, deterministic=True) (use_deterministic_algorithms, cudnn.deterministic, "
    "benchmark off, CUBLAS_WORKSPACE_CONFIG); an op without a deterministic version then raises, naming it"
)
FIX_NOTHING_SEEDED = (
    "nothing is seeded: call lakelog.seed_everything(seed) first thing in the script, before building the data "
    "and the model (it seeds Python, NumPy and torch, which also fixes a DataLoader shuffle without a generator)"
)

_RESEED = {
    "numpy.Generator": "np.random.default_rng({seed})",
    "numpy.RandomState": "np.random.RandomState({seed})",
    "random.Random": "random.Random({seed})",
    "torch.Generator": "torch.Generator().manual_seed({seed})",
}


def _reseed(kind: str, seed: str) -> str:
    return _RESEED.get(kind, _RESEED["numpy.Generator"]).format(seed=seed)


def nothing_seeded_fix(fix: str) -> str:
    """The fix when neither run seeded anything: seed_everything first, then what else the cause needs."""
    return FIX_NOTHING_SEEDED + (f"; and {fix}" if fix and fix != FIX_SEED else "")


def reseed_dataset_fix(generators: dict[str, str], workers: bool) -> str:
    """Code that reseeds a dataset's own generators: per worker from torch's worker seed (distinct per
    worker and epoch, repeatable once the loader's generator is seeded), or, without workers, from the seed."""
    attrs = generators or {"<attr>": "numpy.Generator"}
    if not workers:
        lines = "; ".join(f"self.{a} = {_reseed(k, 'seed')}" for a, k in attrs.items())
        return f"seed the dataset's own generator from the run's seed in its __init__: {lines}"
    body = "".join(f"        info.dataset.{a} = {_reseed(k, 'seed')}\n" for a, k in attrs.items())
    names = ", ".join(f"dataset.{a}" for a in attrs)
    return (
        f"reseed {names} in worker_init_fn (every worker starts from a copy of the unseeded generator):\n"
        "    def worker_init_fn(worker_id):\n"
        "        lakelog.seed_worker(worker_id)\n"
        "        info = torch.utils.data.get_worker_info()\n"
        "        seed = torch.initial_seed() % 2**32  # per worker and epoch; repeatable with a seeded loader\n"
        f"{body}"
        "    DataLoader(..., generator=lakelog.dataloader_generator(seed), worker_init_fn=worker_init_fn)"
    )


_FLAG_TEXT = {  # rng: (state, why workers share it, fix)
    "numpy": (
        "the same NumPy random state",
        "worker_init_fn seeds NumPy with a constant, or NumPy's global state "
        "is copied into each worker unseeded",
        "worker_init_fn=lakelog.seed_worker (seeds NumPy and random "
        "from torch.initial_seed(), which differs per worker and per epoch)",
    ),
    "python": (
        "the same Python random state",
        "worker_init_fn seeds random with a constant",
        "worker_init_fn=lakelog.seed_worker",
    ),
    "torch": (
        "the same torch seed",
        "worker_init_fn calls torch.manual_seed with a constant",
        "do not reseed torch in worker_init_fn (torch already gives each worker base_seed + worker_id)",
    ),
    "dataset": (
        "the same dataset-held generator state",
        "the dataset keeps its own generator (an attribute such as "
        "self.rng), copied unchanged into every worker each epoch",
        "reseed it in worker_init_fn: "
        "info = torch.utils.data.get_worker_info(); info.dataset.rng = "
        "np.random.default_rng(torch.initial_seed() % 2**32)",
    ),
}
_REPEAT_WHY = (
    "the workers' seeds repeat each epoch: the loader's generator is re-created or re-seeded every epoch, "
    "or worker_init_fn seeds from a constant or the worker id alone"
)
_REPEAT_FIX = (
    "create the seeded generator once, before the epoch loop (generator=lakelog.dataloader_generator(seed)), "
    "and seed workers from torch.initial_seed() (worker_init_fn=lakelog.seed_worker)"
)


def worker_flag(row: dict[str, Any]) -> dict[str, Any]:
    """A row of ``determinism_workers.sql`` as WorkerFlag fields (all but the run), with what to say and fix."""
    state, why, fix = _FLAG_TEXT[row["rng"]]
    if row["problem"] == "shared":
        message = (
            f"loader {row['loader']!r}: workers {row['workers']} start pass {row['passes'][0]} with {state} "
            f"(from step {row['step']}): they draw the same augmentations ({why})"
        )
    else:
        if row["rng"] != "dataset":
            why, fix = _REPEAT_WHY, _REPEAT_FIX
        message = (
            f"loader {row['loader']!r}: worker {row['workers'][0]} starts passes {row['passes']} with {state} "
            f"(from step {row['step']}): every epoch repeats the previous one's randomness ({why})"
        )
    return {
        "loader": row["loader"],
        "problem": row["problem"],
        "rng": row["rng"],
        "step": row["step"],
        "workers": list(row["workers"]),
        "passes": list(row["passes"]),
        "message": message,
        "fix": fix,
    }
