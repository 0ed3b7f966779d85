"""lakelog.write.determinism: seeding, RNG fingerprints that draw nothing, worker seeds, stopping after K steps."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import lakelog
from lakelog.check_determinism import check_determinism, determinism_report
from lakelog.errors import InvalidArgumentError, RunNotFoundError
from lakelog.write.context import current_run, set_current
from lakelog.write.context import take_pending_seeding as pending_seeding
from lakelog.write.determinism import (
    dataloader_generator,
    init_overrides,
    log_initial_state,
    record_workers,
    restore_state,
    rng_fingerprints,
    save_state,
    seed_everything,
    seed_worker,
    should_stop,
)
from lakelog.write.determinism import rng as determinism
from lakelog.write.fingerprint import fingerprint_hex

pytestmark = pytest.mark.usefixtures("restore_global_state")  # see conftest.py


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


# -- seeding -----------------------------------------------------------------------------------
def test_seed_everything_seeds_every_rng_and_sets_the_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    settings = seed_everything(7)
    first = draws()
    assert (
        torch.are_deterministic_algorithms_enabled()
        and not torch.is_deterministic_algorithms_warn_only_enabled()
    )
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and os.environ["PYTHONHASHSEED"] == "7"
    assert settings["seed"] == settings["numpy"] == settings["python"] == settings["torch"] == 7
    assert (
        settings["deterministic_algorithms"] is True
        and settings["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    )
    seed_everything(7, deterministic=False)
    assert draws() == first
    seed_everything(8, deterministic=False)
    assert draws() != first


def test_seed_everything_keeps_a_users_cublas_setting_and_warn_only(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    settings = seed_everything(1, warn_only=True)
    assert (
        os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        and settings["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    )
    assert torch.is_deterministic_algorithms_warn_only_enabled() and settings["warn_only"] is True


_HASH_SCRIPT = """
import sys, lakelog
lakelog.seed_everything(0, deterministic=False)
with lakelog.init(sys.argv[1], name=sys.argv[2]) as run:
    run.log({"loss": 1.0}, step=0)
"""


@pytest.mark.slow
def test_processes_started_with_different_hash_seeds_differ_in_env_diff(tmp_path):
    """seed_everything sets PYTHONHASHSEED for later processes only: run.json keeps the value the
    interpreter started with, so two runs whose str hashes (and set orders) differ are told apart."""
    for name, hash_seed in (("a", "1"), ("b", "2"), ("c", "1")):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT, str(tmp_path), name], env=env, check=True, timeout=120
        )
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["environment"]["env"]["PYTHONHASHSEED"] == "2"
    assert info["seeding"]["python_hash_seed"] == {
        "at_start": "2",
        "set_for_new_processes": "0",
        "changed": True,
    }
    diff = lakelog.query("env_diff", root=tmp_path, run_a="a", run_b="b")
    row = diff.filter(diff["key"] == "env.PYTHONHASHSEED").row(0, named=True)
    assert (row["value_a"], row["value_b"]) == ('"1"', '"2"')
    same = lakelog.query("env_diff", root=tmp_path, run_a="a", run_b="c")
    assert "env.PYTHONHASHSEED" not in same["key"].to_list()


def test_seed_everything_records_the_hash_seed_it_found_and_set():
    settings = seed_everything(5, deterministic=False)
    found = settings["python_hash_seed"]
    assert found["set_for_new_processes"] == "5" and os.environ["PYTHONHASHSEED"] == "5"
    assert found["changed"] == (found["at_start"] != "5")


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True, None])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(InvalidArgumentError, match="seed"):
        seed_everything(bad)


def test_what_seed_everything_set_lands_in_run_json(tmp_path):
    set_current(None)
    early = seed_everything(3, deterministic=False)
    assert pending_seeding() == early and pending_seeding() is None  # handed once to the next init
    with lakelog.init(tmp_path, name="r") as run:
        settings = seed_everything(4)
        assert run.info["seeding"] == settings
    stored = json.loads((tmp_path / "r" / "run.json").read_text())
    assert stored["seeding"]["seed"] == 4 and stored["seeding"]["deterministic_algorithms"] is True


def test_dataloader_generator_fixes_the_shuffle():
    data = list(range(20))
    first = [
        b.tolist() for b in DataLoader(data, batch_size=5, shuffle=True, generator=dataloader_generator(5))
    ]
    torch.manual_seed(123)  # the global RNG does not matter any more
    again = [
        b.tolist() for b in DataLoader(data, batch_size=5, shuffle=True, generator=dataloader_generator(5))
    ]
    assert first == again and first != [data[i : i + 5] for i in range(0, 20, 5)]
    with pytest.raises(InvalidArgumentError, match="seed"):
        dataloader_generator(-3)


# -- RNG fingerprints --------------------------------------------------------------------------
def test_rng_fingerprints_draw_nothing():
    seed_everything(11, deterministic=False)
    expected = draws()
    seed_everything(11, deterministic=False)
    before = (torch.get_rng_state().clone(), np.random.get_state(), random.getstate())
    prints = [rng_fingerprints() for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[2]
    np_state = np.random.get_state()
    assert np.array_equal(np_state[1], before[1][1]) and np_state[2:] == before[1][2:]
    assert prints[0] == prints[1] == prints[2]
    assert draws() == expected
    assert prints[0]["cuda"] is None  # no CUDA here, and capturing must never start it


@pytest.mark.parametrize("rng", ["torch", "numpy", "python"])
def test_each_fingerprint_follows_its_own_rng(rng):
    before = rng_fingerprints()
    {"torch": lambda: torch.rand(1), "numpy": lambda: np.random.rand(), "python": random.random}[rng]()
    after = rng_fingerprints()
    assert [k for k in ("torch", "numpy", "python") if before[k] != after[k]] == [rng]


def test_numpy_fingerprint_matches_the_portable_path():
    np.random.seed(5)
    np.random.rand(7)
    fast = determinism._numpy_global_bytes()
    assert fast == determinism._numpy_state_bytes(np.random.get_state())[: len(fast)]


def test_log_batch_rng_stores_the_state_at_batch_start(tmp_path):
    seed_everything(2, deterministic=False)
    expected = rng_fingerprints()
    with lakelog.init(tmp_path, name="r") as run:
        run.log_batch(sample_ids=["a", "b"], inputs=torch.ones(2, 3), step=0, rng=True)
        after = draws()
    seed_everything(2, deterministic=False)
    assert draws() == after  # logging drew nothing
    row = (
        lakelog.connect(tmp_path)
        .execute("SELECT rng_torch, rng_numpy, rng_python, rng_cuda FROM batches")
        .fetchone()
    )
    assert row == (expected["torch"], expected["numpy"], expected["python"], None)


# -- initial state -----------------------------------------------------------------------------
def test_log_initial_state_writes_every_parameter_and_buffer(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    with lakelog.init(tmp_path, name="r") as run:
        log_initial_state(run, model)
    rows = (
        lakelog.connect(tmp_path)
        .execute("SELECT name, kind, fingerprint, numel FROM params ORDER BY name")
        .fetchall()
    )
    assert {(n, k) for n, k, _, _ in rows} == {
        ("0.weight", "initial:param"),
        ("0.bias", "initial:param"),
        ("1.weight", "initial:param"),
        ("1.bias", "initial:param"),
        ("1.running_mean", "initial:buffer"),
        ("1.running_var", "initial:buffer"),
        ("1.num_batches_tracked", "initial:buffer"),
    }
    by_name = {n: fp for n, _, fp, _ in rows}
    assert by_name["0.weight"] == fingerprint_hex(model[0].weight)


# -- DataLoader workers ------------------------------------------------------------------------
class Noisy(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), float(np.random.rand())])


def _workers(root) -> list[dict]:
    con = lakelog.connect(root)
    return con.sql("SELECT * FROM workers ORDER BY pass_idx, worker_id").pl().to_dicts()


def test_record_workers_writes_each_workers_seeds_once_per_pass(tmp_path):
    with lakelog.init(tmp_path, name="r") as run:
        loader = record_workers(
            run,
            DataLoader(
                Noisy(),
                batch_size=2,
                num_workers=2,
                worker_init_fn=seed_worker,
                generator=dataloader_generator(0),
            ),
        )
        for epoch in range(2):
            for i, batch in enumerate(loader):
                run.log({"x": float(batch.sum())}, step=epoch * 4 + i, epoch=epoch)
        assert len(loader) == 4 and loader.batch_size == 2  # behaves like the DataLoader
        info = run.info["loaders"]["train"]
    rows = _workers(tmp_path)
    assert [(r["pass_idx"], r["worker_id"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["step"] for r in rows] == [0, 0, 4, 4]  # the step of each pass's first batch
    assert len({r["torch_seed"] for r in rows}) == 4 and len({r["numpy_state"] for r in rows}) == 4
    assert all(r["numpy_seed"] == r["torch_seed"] % 2**32 for r in rows)  # what seed_worker set
    assert info == {
        "dataset": "Noisy",
        "len": 8,
        "batch_size": 2,
        "sampler": "SequentialSampler",
        "shuffle": False,
        "generator_seed": 0,
        "num_workers": 2,
        "persistent_workers": False,
        "worker_init_fn": "seed_worker",
        "dataset_generators": {},  # Noisy draws from the global NumPy RNG, it holds none of its own
    }


def test_record_workers_with_torch_seeding_and_an_early_break(tmp_path):
    """No worker_init_fn: torch's own seeding is recognised; a loop left early is still recorded at finish."""
    with lakelog.init(tmp_path, name="r") as run:
        loader = record_workers(
            run, DataLoader(Noisy(), batch_size=2, num_workers=2, persistent_workers=True), name="val"
        )
        for _ in range(2):
            for batch in loader:
                run.log({"x": float(batch.sum())})
                break
    rows = _workers(tmp_path)
    assert {r["worker_id"] for r in rows} == {0, 1} and {r["pass_idx"] for r in rows} == {
        0
    }  # persistent: once
    assert all(r["loader"] == "val" and r["python_seed"] == str(r["torch_seed"]) for r in rows)
    assert all(r["numpy_seed"] is None for r in rows)


def test_a_loader_rebuilt_with_the_same_seed_every_epoch_is_seen_repeating(tmp_path):
    with lakelog.init(tmp_path, name="r") as run:
        for epoch in range(2):
            loader = DataLoader(Noisy(), batch_size=4, num_workers=2, generator=dataloader_generator(0))
            for batch in record_workers(run, loader):
                run.log({"x": float(batch.sum())}, epoch=epoch)
    flags = lakelog.query("internal.determinism_workers", root=tmp_path, run="r")
    assert set(flags["problem"]) == {"repeated"} and {"torch", "numpy", "python"} <= set(flags["rng"])
    assert flags.row(0, named=True)["passes"] == [0, 1]


def test_record_workers_checks_its_arguments(tmp_path):
    with lakelog.init(tmp_path, name="r") as run:
        with pytest.raises(InvalidArgumentError, match="loader"):
            record_workers(run, [1, 2, 3])
        with pytest.raises(InvalidArgumentError, match="name"):
            record_workers(run, DataLoader([1, 2]), name="")


# -- running under check-determinism -----------------------------------------------------------
def test_should_stop_and_init_overrides_follow_the_variables(monkeypatch):
    monkeypatch.delenv("LAKELOG_MAX_STEPS", raising=False)
    assert not should_stop(10**9)
    monkeypatch.setenv("LAKELOG_MAX_STEPS", "3")
    assert [should_stop(s) for s in range(5)] == [False, False, False, True, True]
    monkeypatch.setenv("LAKELOG_MAX_STEPS", "three")
    with pytest.raises(InvalidArgumentError, match="LAKELOG_MAX_STEPS"):
        should_stop(0)
    assert init_overrides("runs", "mine", "error") == ("runs", "mine", "error")
    monkeypatch.setenv("LAKELOG_ROOT", "/tmp/elsewhere")
    monkeypatch.setenv("LAKELOG_RUN_NAME", "determinism-a")
    monkeypatch.setenv("LAKELOG_MODE", "overwrite")
    assert init_overrides("runs", "mine", "error") == ("/tmp/elsewhere", "determinism-a", "overwrite")


def test_lakelog_init_honours_the_check_determinism_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKELOG_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("LAKELOG_RUN_NAME", "determinism-a")
    monkeypatch.setenv("LAKELOG_MODE", "overwrite")
    run = lakelog.init(tmp_path / "elsewhere", name="mine")
    run.finish()
    assert run.name == "determinism-a"
    assert (tmp_path / "lake" / "determinism-a" / "run.json").is_file()


def test_check_determinism_puts_state_back_and_limits_steps(tmp_path):
    seen = []

    def train(run):
        seed_everything(0)
        seen.append((run.name, [s for s in range(100) if not should_stop(s)][-1]))
        run.log({"loss": 1.0}, step=0)

    torch.use_deterministic_algorithms(False)
    state = save_state()
    report = check_determinism(train, steps=4, root=tmp_path)
    assert seen == [("determinism-a", 3), ("determinism-b", 3)]
    assert report.identical and report.check("loss").status == "same"
    assert not torch.are_deterministic_algorithms_enabled() and current_run() is None
    after = draws()
    restore_state(state)
    assert draws() == after  # the caller's RNGs are where they were
    assert json.loads((tmp_path / "determinism-b" / "run.json").read_text())["seeding"]["seed"] == 0


def test_check_determinism_reraises_and_marks_the_run_failed(tmp_path):
    def train(run):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        check_determinism(train, root=tmp_path)
    assert json.loads((tmp_path / "determinism-a" / "run.json").read_text())["status"] == "failed"
    with pytest.raises(InvalidArgumentError, match="fn"):
        check_determinism(42)
    with pytest.raises(InvalidArgumentError, match="steps"):
        check_determinism(train, steps=0)
    with pytest.raises(RunNotFoundError, match="nope"):
        determinism_report(tmp_path, "determinism-a", "nope")


def test_environment_differences_come_first(tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        with lakelog.init(tmp_path, name=name) as run:
            seed_everything(seed, deterministic=seed == 0)
            run.log({"loss": 1.0}, step=0)
    report = determinism_report(tmp_path, "a", "b")
    assert report.first.name == "environment" and "seeded differently" in report.first.cause
    assert "seeding.seed: 0 vs 1" in report.first.detail


def test_the_report_side_does_not_import_torch():
    code = (
        "import sys, lakelog.read.determinism.report, lakelog.cli.determinism; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
