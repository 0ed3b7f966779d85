"""Shared fixtures: tiny real training runs (real torch model, optimizer, writer, Parquet) with known causes.

A pair of runs shares everything except one cause introduced at a known step, so the query tests
can check that each question names the right step, layer and group. The runs are small (64 samples,
batch 8, 2 epochs = 16 steps) and built once per test session.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lakelog
from lakelog.lake import checker_env
from lakelog.write.context import current_run, set_current, take_pending_seeding
from lakelog.write.determinism import restore_state, save_state

N_SAMPLES = 64
BATCH = 8
STEPS_PER_EPOCH = N_SAMPLES // BATCH
GROUPS = {"backbone": "backbone.", "head": "head."}
CAUSE_STEP = 5


class Net(nn.Module):
    def __init__(self, features: int = 6, hidden: int = 16, classes: int = 2, dropout: float = 0.25) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def dataset(
    n: int = N_SAMPLES,
    *,
    features: int = 6,
    imbalance: float | None = None,
    random_labels: bool = False,
    seed: int = 1234,
):
    """A fixed synthetic dataset: the same for every run, drawn from its own generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    if random_labels:
        y = torch.randint(0, 2, (n,), generator=g)
    elif imbalance is not None:
        y = (torch.rand(n, generator=g) > imbalance).long()
    else:
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    names = [f"s{i:03d}" for i in range(n)]
    return x, y, names


@dataclass
class Trained:
    name: str
    steps: int
    first_nan: tuple[int, str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def train(
    root: Path,
    name: str,
    *,
    seed: int = 0,
    epochs: int = 2,
    cause: str | None = None,
    cause_step: int = CAUSE_STEP,
    lrs: tuple[float, float] = (0.05, 0.5),
    capture_rng: bool = True,
    watch: bool = True,
    log_batches: bool = True,
    log_predictions: bool = True,
    data: tuple | None = None,
    batch: int = BATCH,
    model: nn.Module | None = None,
    optimizer_params: str = "both",
    start_epoch: int = 0,
    state: dict | None = None,
    replay_epoch: int | None = None,
    mode: str = "error",
    holdout: tuple | None = None,
    config: dict | None = None,
) -> Trained:
    """Train a tiny model and log everything lakelog captures; ``cause`` changes one thing at ``cause_step``.

    Causes: shuffle (the rest of the epoch's order is reshuffled), reorder (one batch reversed),
    dropout (the global RNG is reseeded), lr (the head's LR is multiplied by 10), transform (one
    sample's input is negated), nan_input (one input value is NaN). ``state`` resumes from a checkpoint dict (model, optimizer, RNG);
    ``replay_epoch`` makes a resumed run draw that epoch's order instead of its own (the bug).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster on a shared 2-core machine
    try:
        return _train(
            root,
            name,
            seed=seed,
            epochs=epochs,
            cause=cause,
            cause_step=cause_step,
            lrs=lrs,
            capture_rng=capture_rng,
            watch=watch,
            log_batches=log_batches,
            log_predictions=log_predictions,
            data=data,
            batch=batch,
            model=model,
            optimizer_params=optimizer_params,
            start_epoch=start_epoch,
            state=state,
            replay_epoch=replay_epoch,
            mode=mode,
            holdout=holdout,
            config=config,
        )
    finally:
        torch.set_num_threads(threads)


def _train(
    root,
    name,
    *,
    seed,
    epochs,
    cause,
    cause_step,
    lrs,
    capture_rng,
    watch,
    log_batches,
    log_predictions,
    data,
    batch,
    model,
    optimizer_params,
    start_epoch,
    state,
    replay_epoch,
    mode,
    holdout,
    config,
) -> Trained:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    x_all, y_all, names = data if data is not None else dataset()
    n = len(names)
    steps_per_epoch = n // batch
    model = model if model is not None else Net(features=x_all.shape[1])
    backbone = [p for n_, p in model.named_parameters() if n_.startswith("backbone.")]
    head = [p for n_, p in model.named_parameters() if n_.startswith("head.")]
    groups = [{"params": head, "lr": lrs[1]}]
    if optimizer_params == "both":
        groups.insert(0, {"params": backbone, "lr": lrs[0]})
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    group_names = ["backbone", "head"] if optimizer_params == "both" else ["head"]
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
    trained = Trained(name, 0)
    run = lakelog.init(
        root,
        name=name,
        seed=seed,
        mode=mode,
        config=config if config is not None else {"lr": list(lrs), "batch": batch, "cause": cause},
    )
    if watch:
        # A resumed segment has no step logged yet, so its initial capture would be stamped step 0.
        run.watch(
            model,
            optimizer,
            every=1,
            groups=GROUPS,
            initial=state is None,
            holdout=None if holdout is None else [holdout],
        )
    with run:
        for epoch in range(start_epoch, epochs):
            order_epoch = replay_epoch if replay_epoch is not None else epoch
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + order_epoch))
            for b in range(steps_per_epoch):
                step = epoch * steps_per_epoch + b
                if cause == "shuffle" and step == cause_step:
                    rest = order[b * batch :]
                    order[b * batch :] = rest[
                        torch.randperm(len(rest), generator=torch.Generator().manual_seed(99))
                    ]
                idx = order[b * batch : (b + 1) * batch].clone()
                if cause == "reorder" and step == cause_step:
                    idx = idx.flip(0)
                if cause == "dropout" and step == cause_step:
                    torch.manual_seed(12345)
                x, y = x_all[idx].clone(), y_all[idx]
                if cause == "transform" and step == cause_step:
                    x[2] = -x[2]
                if cause == "nan_input" and step == cause_step:
                    x[1, 0] = float("nan")
                batch_names = [names[i] for i in idx.tolist()]
                if log_batches:
                    run.log_batch(
                        sample_ids=batch_names, inputs=x, step=step, epoch=epoch, batch_idx=b, rng=capture_rng
                    )
                model.train()
                out = model(x)
                per_sample = F.cross_entropy(out, y, reduction="none")
                loss = per_sample.mean()
                if log_predictions:
                    run.log_predictions(
                        out.detach(),
                        step=step,
                        epoch=epoch,
                        labels=y,
                        keys={"sample": batch_names},
                        loss=per_sample.detach(),
                        batch_idx=b,
                    )
                optimizer.zero_grad()
                loss.backward()
                if cause == "lr" and step == cause_step:
                    optimizer.param_groups[-1]["lr"] *= 10
                optimizer.step()
                if trained.first_nan is None:
                    bad = [n_ for n_, p in model.named_parameters() if not torch.isfinite(p).all()]
                    if bad:
                        trained.first_nan = (step, bad[0])
                acc = (out.argmax(1) == y).float().mean()
                metrics: dict[str, Any] = {"loss": float(loss.detach()), "acc": float(acc)}
                for g, group in zip(group_names, optimizer.param_groups, strict=True):
                    metrics[f"lr/{g}"] = group["lr"]
                if holdout is not None and not watch:  # run.watch(holdout=...) logs holdout/acc itself
                    hx, hy = holdout
                    model.eval()
                    with torch.no_grad():
                        metrics["holdout/acc"] = float((model(hx).argmax(1) == hy).float().mean())
                run.log(metrics, step=step, epoch=epoch)
                trained.steps += 1
        trained.info["checkpoint"] = {
            "model": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
    return trained


RECIPES: dict[str, dict[str, Any]] = {
    "base": {},
    "same": {},
    "shuffle": {"cause": "shuffle"},
    "reorder": {"cause": "reorder"},
    "dropout": {"cause": "dropout"},
    "lr": {"cause": "lr"},
    "transform": {"cause": "transform"},
    "base_norng": {"capture_rng": False},
    "dropout_norng": {"cause": "dropout", "capture_rng": False},
    "short": {"epochs": 1},
    "no_batches": {"log_batches": False},
}
"""Pairs with the reference run ``base``: one known cause each, at step CAUSE_STEP."""

RESUMES = {"resumed_ok": None, "resumed_replay": 0}
"""Runs that train epoch 0, stop, and resume from their checkpoint (the second replays epoch 0's order)."""


class ScaledNet(Net):
    """The backbone's output is scaled down, so its gradients vanish while the head's do not."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x) * self.scale)


def _paired_holdout(features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every input twice, with both labels: any model scores exactly chance (0.5) on it."""
    x = torch.randn(16, features, generator=torch.Generator().manual_seed(7))
    return torch.cat([x, x]), torch.cat([torch.zeros(16, dtype=torch.long), torch.ones(16, dtype=torch.long)])


def _recipe(name: str) -> dict[str, Any]:
    """How to train each run of the lakes (causes for diffs, symptoms for doctor)."""
    if name in RECIPES:
        return dict(RECIPES[name])
    health: dict[str, Any] = {
        "three_classes": lambda: {"model": _seeded(Net, classes=3)},
        "healthy": lambda: {"holdout": dataset(n=32, seed=99)[:2], "epochs": 3},
        "overfit": lambda: {
            "data": dataset(features=32, random_labels=True),
            "lrs": (0.2, 0.2),
            "epochs": 8,
            "model": _seeded(Net, features=32, hidden=128, dropout=0.0),
            "holdout": _paired_holdout(32),
        },
        "nan": lambda: {"cause": "nan_input", "cause_step": 3},
        "explode": lambda: {"data": _scaled_data(100.0), "lrs": (5.0, 5.0), "epochs": 1},
        "vanish": lambda: {"model": _seeded(ScaledNet, scale=1e-12)},
        "frozen": lambda: {"optimizer_params": "head"},
        "lr_flat": lambda: {"lrs": (0.1, 0.1)},
        "imbalanced": lambda: {"data": dataset(imbalance=0.9)},
        # batch 2: the default LRs (0.05, 0.5) make the loss diverge, which doctor rightly reports
        "many_batches": lambda: {
            "data": dataset(n=200),
            "batch": 2,
            "epochs": 1,
            "watch": False,
            "lrs": (0.005, 0.05),
        },
    }
    return health[name]()


def _scaled_data(scale: float) -> tuple:
    x, y, names = dataset()
    return x * scale, y, names


def _seeded(cls: type, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    return cls(**kwargs)


class Lake:
    """A session's lake whose runs are trained on first use: ``lake("base", "lr")`` returns the root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Trained] = {}

    def __call__(self, *names: str) -> Path:
        for name in names:
            if name in self.built:
                continue
            if name in RESUMES:
                first = train(self.root, name, epochs=1)
                self.built[name] = train(
                    self.root,
                    name,
                    start_epoch=1,
                    state=first.info["checkpoint"],
                    mode="resume",
                    replay_epoch=RESUMES[name],
                )
            else:
                self.built[name] = train(self.root, name, **_recipe(name))
        return self.root


GLOBAL_ENV = (
    *checker_env.DETERMINISM_ENV,
    checker_env.ROOT,
    checker_env.RUN_NAME,
    checker_env.MODE,
    checker_env.MAX_STEPS,
)
"""Variables that seeding and the determinism checker set for the whole process."""


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine their threads wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def restore_global_state():
    """Seeding and the checker change process-wide state other tests rely on: RNG states, determinism
    flags, variables, stashed seeding and the current run are put back as they were."""
    saved = save_state()
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    env = {k: os.environ.get(k) for k in GLOBAL_ENV}
    run = current_run()
    yield
    restore_state(saved)
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    take_pending_seeding()
    set_current(run)


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Runs trained when first asked for: ``lake("base", "lr")`` (see RECIPES, RESUMES and _recipe)."""
    return Lake(tmp_path_factory.mktemp("lake"))
