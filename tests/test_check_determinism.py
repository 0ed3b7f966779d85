"""check_determinism: each classic cause of "same seed, different result" built on purpose, named at its step.

Every case trains a tiny real model twice through ``check_determinism(fn)`` (real DataLoader, real
optimizer, real Parquet and DuckDB) and checks the report's first difference, its step and its cause.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lakelog
from lakelog.check_determinism import check_determinism, determinism_report
from lakelog.cli import cli
from lakelog.lake import schemas
from lakelog.write.determinism import (
    dataloader_generator,
    log_initial_state,
    record_workers,
    seed_everything,
    seed_worker,
    should_stop,
)
from lakelog.write.fingerprint import fingerprint_hex

N_FILES = 12
BATCH = 3
_listing_calls = itertools.count()


pytestmark = pytest.mark.usefixtures("restore_global_state", "one_torch_thread")  # see conftest.py


class Files(Dataset):
    """A folder of 'files' whose content depends only on the name; ``augment`` adds random noise."""

    def __init__(self, names: list[str], augment: str | None = None) -> None:
        self.names, self.augment = names, augment
        self.rng = np.random.default_rng(0) if augment == "dataset_rng" else None
        if augment == "dataset_rng_unseeded":
            self.rng = np.random.default_rng()  # the bug: a fresh, unseeded generator in every run

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        name = self.names[i]
        value = int(name[1:])
        x = torch.arange(4, dtype=torch.float32) * 0.1 + value * 0.05
        if self.augment == "python":
            x = x + random.random()
        elif self.augment in ("numpy", "numpy_in_worker"):
            x = x + float(np.random.rand())
        elif self.augment in ("dataset_rng", "dataset_rng_unseeded"):
            x = x + float(self.rng.random())
        elif self.augment == "torch":
            x = x + torch.rand(())
        return x, value % 2, name


def reseed_dataset_rng(worker_id: int) -> None:
    """The report's headline fix for a dataset-held generator, as a user pastes it."""
    seed_worker(worker_id)
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32
    info.dataset.rng = np.random.default_rng(seed)


def constant_numpy_seed(worker_id: int) -> None:
    """The classic worker_init_fn bug: every worker (and every epoch) gets the same NumPy seed."""
    np.random.seed(1234)


@dataclass
class Setup:
    seed: str | None = "all"  # "all": seed_everything first; "torch": torch.manual_seed only; None
    seed_model_first: bool = True  # False: seed_everything only after the model is built
    generator: bool = True  # DataLoader(generator=dataloader_generator(0))
    shuffle: bool = True
    workers: int = 0
    worker_init: Any = seed_worker
    augment: str | None = None
    dropout: bool = False
    reseed_after_model: bool = False  # torch.seed() after building the model: dropout draws differ
    unsorted_listing: bool = False
    lr_drift: bool = False  # the learning rate differs between the two calls
    stray_draw: bool = False  # something draws from Python's unseeded random that training never uses
    epochs: int = 1
    steps: int = 3


_lr_calls = itertools.count()


def make_model(dropout: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(4, 8), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers, nn.Linear(8, 2))


def capture_params(run: Any, model: nn.Module, step: int) -> None:
    """Weights and gradients of one step as rows of ``params`` (what run.watch writes)."""
    named = list(model.named_parameters())
    n = len(named)
    columns = {f.name: pa.nulls(n, f.type) for f in schemas.PARAMS}
    columns.update(
        step=pa.array([step] * n, pa.int64()),
        name=pa.array([k for k, _ in named]),
        kind=pa.array(["param"] * n),
        fingerprint=pa.array([fingerprint_hex(p.detach()) for _, p in named]),
        grad_fingerprint=pa.array(
            [None if p.grad is None else fingerprint_hex(p.grad) for _, p in named], pa.string()
        ),
    )
    run.write_rows("params", pa.table(columns, schema=schemas.PARAMS))


def trainer(setup: Setup):
    """fn(run) for check_determinism: a tiny training loop with the setup's one defect."""

    def train(run: Any) -> None:
        if setup.seed == "all" and setup.seed_model_first:
            seed_everything(0, deterministic=True, warn_only=True)
        elif setup.seed == "torch":
            torch.manual_seed(0)
        if setup.seed is None:
            with torch.random.fork_rng():  # the weights are fixed, the global RNG is left unseeded
                torch.manual_seed(0)
                model = make_model(setup.dropout)
        else:
            model = make_model(setup.dropout)
        if setup.seed == "all" and not setup.seed_model_first:
            seed_everything(0, deterministic=True, warn_only=True)
        if setup.reseed_after_model:
            torch.seed()
        if setup.stray_draw:
            random.random()  # e.g. a library picking a temporary file name
        names = [f"f{i:02d}" for i in range(N_FILES)]
        if setup.unsorted_listing and next(_listing_calls) % 2:
            names = names[::-1]  # os.listdir order is whatever the filesystem gives
        loader = DataLoader(
            Files(names, setup.augment),
            batch_size=BATCH,
            shuffle=setup.shuffle,
            num_workers=setup.workers,
            worker_init_fn=setup.worker_init if setup.workers else None,
            generator=dataloader_generator(0) if setup.generator else None,
        )
        loader = record_workers(run, loader)
        lr = 0.1 * (1 + next(_lr_calls) % 2) if setup.lr_drift else 0.1
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        log_initial_state(run, model)
        step = 0
        for epoch in range(setup.epochs):
            for x, y, ids in loader:
                if should_stop(step):
                    break
                run.log_batch(sample_ids=list(ids), inputs=x, step=step, epoch=epoch, rng=True)
                model.train()
                out = model(x)
                loss = nn.functional.cross_entropy(out, y)
                run.log_predictions(out.detach(), step=step, epoch=epoch, labels=y)
                run.log({"loss": loss.detach()}, step=step, epoch=epoch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                capture_params(run, model, step)
                step += 1

    return train


def check(setup: Setup, tmp_path) -> Any:
    report = check_determinism(trainer(setup), steps=setup.steps, root=tmp_path)
    print(report.to_text())
    return report


def test_fully_deterministic_setup_is_identical(tmp_path):
    report = check(Setup(workers=2, augment="numpy", dropout=True, epochs=2), tmp_path)
    assert report.identical and report.first is None
    assert not report.worker_flags
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == dict.fromkeys(statuses, "same"), statuses
    assert "IDENTICAL" in report.to_text()
    workers = lakelog.connect(tmp_path).execute("SELECT count(*) FROM workers").fetchone()[0]
    assert workers == 2 * 2 * 2  # two runs, two passes, two workers


def test_an_unseeded_rng_that_training_never_uses_is_only_a_note(tmp_path):
    report = check(Setup(seed="torch", stray_draw=True), tmp_path)  # random is unseeded, training ignores it
    assert report.identical and report.first is None
    rng = report.check("rng")
    assert rng.status == "latent" and rng.step == 0 and "the python RNG state differs" in rng.detail
    assert "note: step 0: the python RNG state differs" in report.to_text()


def test_unseeded_shuffle_is_named_at_the_first_batch(tmp_path):
    report = check(Setup(seed=None, generator=False), tmp_path)
    first = report.first
    assert (first.name, first.step) == ("sample_ids", 0)
    assert "shuffle is not seeded" in first.cause and "global torch RNG" in first.cause
    assert "dataloader_generator" in first.fix
    assert report.check("initial_weights").status == "same"  # the model itself was seeded


def test_unsorted_listing_is_told_apart_from_shuffling(tmp_path):
    report = check(Setup(unsorted_listing=True), tmp_path)
    first = report.first
    assert (first.name, first.step) == ("sample_ids", 0)
    assert "shuffled identically" in first.cause and "unsorted directory listing" in first.cause
    assert "sorted(" in first.fix
    assert report.check("rng").status == "same"


def test_random_augmentation_from_an_unseeded_rng(tmp_path):
    report = check(Setup(seed="torch", augment="python"), tmp_path)
    first = report.first
    assert (first.name, first.step) == ("inputs", 0)
    assert report.check("sample_ids").status == "same"
    assert "random transform" in first.cause and "python RNG" in first.cause
    assert "seed_everything" in first.fix and "deterministic transforms" in first.fix


def test_workers_without_a_seeded_generator(tmp_path):
    """NumPy random in __getitem__, two workers, no seeded generator: worker seeds differ between runs."""
    report = check(
        Setup(
            seed=None, generator=False, shuffle=False, workers=2, worker_init=None, augment="numpy_in_worker"
        ),
        tmp_path,
    )
    first = report.first
    assert (first.name, first.step) == ("inputs", 0)
    assert "DataLoader workers started from different random states" in first.cause
    assert "dataloader_generator" in first.fix and "seed_worker" in first.fix
    assert not report.worker_flags  # torch seeds NumPy per worker: within a run nothing is shared


def test_a_dataset_held_unseeded_generator_gets_the_fix_that_works(tmp_path):
    """np.random.default_rng() held by the Dataset, two workers, a seeded loader and seed_worker: the headline
    fix is to reseed dataset.rng in worker_init_fn, and the same script with that fix is identical."""
    setup = Setup(workers=2, augment="dataset_rng_unseeded")
    report = check(setup, tmp_path / "bug")
    first = report.first
    assert (first.name, first.step) == ("inputs", 0)
    assert "its own generator dataset.rng (numpy.Generator)" in first.cause
    assert first.fix.startswith("reseed dataset.rng in worker_init_fn")
    assert "info.dataset.rng = np.random.default_rng(seed)" in first.fix
    assert "seed = torch.initial_seed() % 2**32" in first.fix
    fixed = check(
        Setup(workers=2, augment="dataset_rng_unseeded", worker_init=reseed_dataset_rng), tmp_path / "fix"
    )
    assert fixed.identical and fixed.first is None, fixed.to_text()
    assert not fixed.worker_flags  # each worker now draws its own numbers


def test_a_dataset_held_unseeded_generator_without_workers(tmp_path):
    report = check(Setup(augment="dataset_rng_unseeded"), tmp_path)
    first = report.first
    assert first.name == "inputs" and "its own generator dataset.rng" in first.cause
    assert "self.rng = np.random.default_rng(seed)" in first.fix and "worker_init_fn" not in first.fix


def test_nothing_seeded_gets_seed_everything_which_fixes_it(tmp_path):
    report = check(Setup(seed=None, generator=False, dropout=True), tmp_path / "bug")
    first = report.first
    assert first.fix.startswith("nothing is seeded: call lakelog.seed_everything(seed)")
    assert first.cause.startswith("nothing is seeded")
    fixed = check(Setup(seed="all", generator=False, dropout=True), tmp_path / "fix")
    assert fixed.identical, fixed.to_text()


def test_dropout_with_a_different_rng(tmp_path):
    report = check(Setup(dropout=True, reseed_after_model=True), tmp_path)
    first = report.first
    assert (first.name, first.step) == ("rng", 0)
    assert "torch" in first.detail and "dropout" in first.cause
    for name in ("sample_ids", "inputs", "initial_weights"):
        assert report.check(name).status == "same", name
    assert report.check("outputs").status == "differs" and report.check("outputs").step == 0


def test_model_initialized_without_a_seed(tmp_path):
    report = check(Setup(seed_model_first=False), tmp_path)
    first = report.first
    assert first.name == "initial_weights" and first.step is None
    assert (
        "initialized from a different RNG state" in first.cause and "before building the model" in first.fix
    )
    assert "0.weight" in first.detail
    assert report.check("rng").status == "same" and report.check("sample_ids").status == "same"
    assert "before training" in report.to_text()


def test_a_different_update_is_found_past_identical_gradients(tmp_path):
    report = check(Setup(lr_drift=True), tmp_path)
    first = report.first
    assert (first.name, first.step) == ("update", 0)
    for name in ("outputs", "loss", "gradients"):
        check_ = report.check(name)
        assert (check_.status, check_.step) in (("same", None), ("differs", 1)), (name, check_)
    assert report.check("gradients").step == 1 and "optimizer update" in first.cause


@pytest.mark.parametrize("bug", ["constant_seed", "dataset_rng"])
def test_worker_seeding_bugs_are_flagged_though_reproducible(tmp_path, bug):
    setup = Setup(
        workers=2,
        epochs=2,
        steps=8,
        worker_init=constant_numpy_seed if bug == "constant_seed" else None,
        augment="numpy" if bug == "constant_seed" else "dataset_rng",
    )
    report = check(setup, tmp_path)
    assert report.identical  # the bug is deterministic: only the flags catch it
    rng = "numpy" if bug == "constant_seed" else "dataset"
    problems = {(f.run, f.problem, f.rng) for f in report.worker_flags}
    for run in ("determinism-a", "determinism-b"):
        assert (run, "shared", rng) in problems and (run, "repeated", rng) in problems
    shared = next(f for f in report.worker_flags if f.problem == "shared")
    assert shared.workers == [0, 1] and shared.passes == [0]
    assert "same augmentations" in report.to_text()


def _resume_case(root, *, replay_from_start: bool) -> None:
    """An uninterrupted run of 6 steps and a run stopped after 3 steps and resumed from its checkpoint."""

    def loader() -> DataLoader:
        return DataLoader(
            Files([f"f{i:02d}" for i in range(N_FILES)]),
            batch_size=2,
            shuffle=True,
            generator=dataloader_generator(0),
        )

    def steps(run, model, optimizer, batches, first_step):
        for step, (x, y, ids) in enumerate(batches, first_step):
            run.log_batch(sample_ids=list(ids), inputs=x, step=step)
            loss = nn.functional.cross_entropy(model(x), y)
            run.log({"loss": loss.detach()}, step=step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            capture_params(run, model, step)

    torch.manual_seed(0)
    model = make_model(False)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with lakelog.init(root, name="full") as run:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        steps(run, model, optimizer, loader(), 0)
    model.load_state_dict(initial)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with lakelog.init(root, name="resumed") as run:
        steps(run, model, optimizer, itertools.islice(loader(), 3), 0)
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    model = make_model(False)
    model.load_state_dict(checkpoint["model"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.load_state_dict(checkpoint["optimizer"])
    with lakelog.init(root, name="resumed", mode="resume") as run:
        batches = iter(loader())  # the same seeded shuffle for the epoch...
        if not replay_from_start:
            batches = itertools.islice(batches, 3, None)  # ...continued where the checkpoint was taken
        steps(run, model, optimizer, itertools.islice(batches, 3), 3)


@pytest.mark.parametrize("replay_from_start", [True, False])
def test_resume_that_replays_the_wrong_batch_order(tmp_path, replay_from_start):
    from lakelog.read.diff import diff_runs  # the query library's step-by-step diff lines the runs up too

    _resume_case(tmp_path, replay_from_start=replay_from_start)
    report = determinism_report(tmp_path, "full", "resumed")
    diff = diff_runs(tmp_path, "full", "resumed")
    print(report.to_text())
    if not replay_from_start:
        assert report.identical, report.to_text()
        assert diff.first_layer is None
        return
    assert (diff.first_layer, diff.first_step) == ("batch_order", 3)
    first = report.first
    assert (first.name, first.step) == ("sample_ids", 3)
    assert (
        "'resumed' was resumed from a checkpoint" in first.cause
        and "replays a different batch order" in first.cause
    )
    assert report.check("loss").step == 3 and report.check("update").step == 3


SCRIPT = """
import os, random, sys
import torch
import lakelog
from lakelog.write.determinism import seed_everything, should_stop

# Until lakelog.init reads LAKELOG_ROOT / LAKELOG_RUN_NAME itself, pass them on explicitly.
run = lakelog.init(os.environ["LAKELOG_ROOT"], name=os.environ["LAKELOG_RUN_NAME"], mode="overwrite")
{seeding}
model = torch.nn.Linear(3, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(1000):
    if should_stop(step):
        break
    x = torch.arange(6.0).reshape(2, 3) + step + random.random()  # augmentation with Python's random
    run.log_batch(sample_ids=[f"s{{step}}a", f"s{{step}}b"], inputs=x, step=step, rng=True)
    loss = model(x).pow(2).mean()
    run.log({{"loss": loss.detach()}}, step=step)
    opt.zero_grad(); loss.backward(); opt.step()
print("trained", step, "steps")
run.finish()
"""


@pytest.mark.slow  # two training processes
def test_cli_runs_the_script_twice_and_reports(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT.format(seeding="torch.manual_seed(0)")))
    root = tmp_path / "lake"
    result = CliRunner().invoke(
        cli, ["check-determinism", "--steps", "3", "--root", str(root), "--", sys.executable, str(script)]
    )
    print(result.output)
    steps = lakelog.connect(root).execute(
        "SELECT count(DISTINCT step) FROM batches WHERE run = 'determinism-a'"
    )
    assert steps.fetchone()[0] == 3  # LAKELOG_MAX_STEPS reached the script
    assert result.exit_code == 1
    assert "FIRST DIFFERENCE: input tensors (transforms) at step 0" in result.output
    assert "python RNG" in result.output


TORCHLESS_SCRIPT = """
import json, os, sys
folder = os.path.join(os.environ["LAKELOG_ROOT"], os.environ["LAKELOG_RUN_NAME"])
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "run.json"), "w") as f:
    json.dump({"name": os.environ["LAKELOG_RUN_NAME"], "seed": 0, "config": {"steps": os.environ["LAKELOG_MAX_STEPS"]},
               "environment": {"python": sys.version, "pid": os.getpid()}}, f)
"""


def test_cli_identical_runs_exit_zero_and_json(tmp_path):
    """The CLI's own path, with a script that writes a run folder by hand (no torch to start: fast)."""
    script = tmp_path / "write_run.py"
    script.write_text(TORCHLESS_SCRIPT)
    args = [
        "check-determinism",
        "-k",
        "4",
        "--root",
        str(tmp_path / "lake"),
        "--",
        sys.executable,
        str(script),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "IDENTICAL" in result.output and "not logged" in result.output
    result = CliRunner().invoke(cli, [*args[:1], "--json", *args[1:]])
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["identical"] is True and data["first"] is None
    assert {c["name"]: c["status"] for c in data["checks"]}["environment"] == "same"  # pids are not compared


def test_cli_json_and_failures(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("raise SystemExit('no data found')\n")
    result = CliRunner().invoke(
        cli, ["check-determinism", "--root", str(tmp_path / "lake"), "--", sys.executable, str(script)]
    )
    assert (
        result.exit_code == 2 and "exited with code 1" in result.output and "no data found" in result.output
    )
    silent = tmp_path / "silent.py"
    silent.write_text("print('no lakelog here')\n")
    result = CliRunner().invoke(
        cli, ["check-determinism", "--root", str(tmp_path / "lake"), "--", sys.executable, str(silent)]
    )
    assert result.exit_code == 2 and "must call lakelog.init()" in result.output
    report = determinism_report  # the JSON form is the report's to_dict
    _resume_case(tmp_path / "json", replay_from_start=True)
    data = json.loads(json.dumps(report(tmp_path / "json", "full", "resumed").to_dict(), default=str))
    assert data["identical"] is False and data["first"]["name"] == "sample_ids"
