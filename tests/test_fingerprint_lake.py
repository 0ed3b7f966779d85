"""Fingerprints in the lake carry their algorithm: runs fingerprinted by different algorithms are "not
comparable", never "different", and runs by the same algorithm still compare exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import lakelog
from lakelog.read.diff import diff_runs
from lakelog.read.querylib import query


def train(root: Path, name: str, *, lr: float = 0.05) -> None:
    """A small seeded run with everything that carries a fingerprint: initial weights, captures, batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 16, 6, generator=g), torch.randint(0, 3, (4, 16), generator=g)
    with lakelog.init(root, name=name) as run:
        run.watch(model, opt, every=1)
        for step in range(4):
            run.log_batch(step=step, sample_ids=list(range(step * 16, step * 16 + 16)), inputs=x[step])
            loss = nn.functional.cross_entropy(model(x[step]), y[step])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": loss.detach()}, step=step)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("algorithms")
    train(path, "x3_a")
    train(path, "x3_b")
    train(path, "x3_lr", lr=0.1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKELOG_FINGERPRINT", "v1")
        train(path, "v1_a")
        train(path, "v1_lr", lr=0.1)
    return path


def statuses(root: Path, a: str, b: str) -> dict[str, str]:
    layers = query("first_divergence", root=root, run_a=a, run_b=b)
    return dict(zip(layers["layer"].to_list(), layers["status"].to_list(), strict=True))


def test_each_run_records_its_algorithm(root: Path) -> None:
    con = lakelog.connect(root)
    rows = con.execute(
        "SELECT run, list(DISTINCT fp_algorithm(fingerprint)) FROM params GROUP BY run ORDER BY run"
    ).fetchall()
    assert dict(rows) == {"v1_a": ["v1"], "v1_lr": ["v1"], "x3_a": ["x3"], "x3_b": ["x3"], "x3_lr": ["x3"]}
    inputs = con.execute(
        "SELECT run, list(DISTINCT fp_algorithm(input_fingerprint)) FROM batches GROUP BY run ORDER BY run"
    ).fetchall()
    assert dict(inputs) == dict(rows)  # the batch's input digest carries its tensors' algorithm


def test_different_algorithms_are_not_comparable_rather_than_different(root: Path) -> None:
    s = statuses(root, "x3_a", "v1_a")
    for layer in ("inputs", "initial_weights", "gradients", "weights", "optimizer"):
        assert s[layer] == "not comparable", (layer, s)
    assert "differs" not in s.values()
    result = diff_runs(lakelog.connect(root), "x3_a", "v1_a")
    assert not result.identical and result.first_layer is None
    assert any("LAKELOG_FINGERPRINT=v1" in note for note in result.notes), result.notes
    diff = query("param_diff", root=root, run_a="x3_a", run_b="v1_a")
    assert diff.height > 0 and diff["equal"].null_count() == diff.height  # unknown, not False
    drift = query("group_drift", root=root, run_a="x3_a", run_b="v1_a")
    assert drift.height > 0 and drift["first_drift_step"].null_count() == drift.height  # no drift claimed
    assert query("group_drift", root=root, run_a="x3_a", run_b="x3_lr")["first_drift_step"].null_count() == 0


def test_same_algorithm_still_compares_exactly(root: Path) -> None:
    for a, b in (("x3_a", "x3_b"), ("v1_a", "v1_a")):
        s = statuses(root, a, b)
        assert s["inputs"] == s["weights"] == s["gradients"] == s["optimizer"] == "same", (a, b, s)
    s = statuses(root, "x3_a", "x3_lr")
    assert s["weights"] == "differs"
    s = statuses(root, "v1_a", "v1_lr")
    assert s["weights"] == "differs"


def test_sql_macros_read_the_algorithm(root: Path) -> None:
    con = lakelog.connect(root)
    x3, v1 = "x3:" + "0" * 32, "f" * 32
    assert con.execute("SELECT fp_algorithm(?), fp_algorithm(?)", [x3, v1]).fetchone() == ("x3", "v1")
    assert con.execute("SELECT fp_comparable(?, ?), fp_comparable(?, ?)", [x3, v1, x3, x3]).fetchone() == (
        False,
        True,
    )
    assert con.execute("SELECT fp_equal(?, ?), fp_equal(?, ?)", [x3, v1, v1, v1]).fetchone() == (None, True)


def test_determinism_report_does_not_call_other_algorithms_different(root: Path) -> None:
    from lakelog.read.determinism.report import determinism_report

    checks = {c.name: c for c in determinism_report(root, "x3_a", "v1_a").checks}
    for name in ("inputs", "initial_weights", "gradients", "update"):
        assert checks[name].status == "not compared", (name, checks[name])
        assert "LAKELOG_FINGERPRINT=v1" in checks[name].detail
    same = {c.name: c.status for c in determinism_report(root, "x3_a", "x3_b").checks}
    assert same["inputs"] == same["gradients"] == same["update"] == "same"
    assert {c.name: c.status for c in determinism_report(root, "x3_a", "x3_lr").checks}["update"] == "differs"


def test_rank_desync_leaves_out_ranks_fingerprinted_by_another_algorithm(tmp_path: Path) -> None:
    def ddp_rank(name: str, rank: int, lr: float = 0.05) -> None:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        x = torch.ones(8, 4)
        with lakelog.init(tmp_path, name=name, rank=rank, world_size=2) as run:
            run.watch(model, opt, every=1)
            for step in range(3):
                run.log({"loss": 0.0}, step=step)
                opt.zero_grad()
                model(x).sum().backward()
                opt.step()

    for rank in (0, 1):
        with pytest.MonkeyPatch.context() as mp:
            if rank == 1:
                mp.setenv("LAKELOG_FINGERPRINT", "v1")  # rank 1 as if on an accelerator
            ddp_rank("mixed", rank)
        ddp_rank("drifts", rank, lr=0.05 if rank == 0 else 0.1)
    desync = query("rank_desync", root=tmp_path)
    assert set(desync["run"].to_list()) == {"drifts"}, desync
