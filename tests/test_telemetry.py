"""run.watch on real models and optimizers: what lands in the params/scalars/holdout tables, checked
against direct torch computations, and proof that watching does not change the training run."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lakelog
from lakelog.errors import InvalidArgumentError
from lakelog.write.fingerprint import fingerprint_hex

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


class SmallCNN(nn.Module):
    """Conv + BatchNorm + Dropout: the layers whose state a careless logger would disturb."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class EmbedMLP(nn.Module):
    def __init__(self, vocab: int = 40, classes: int = 3, sparse: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8, sparse=sparse)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(tokens).mean(1))


def images(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def query(root: Path, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    con = lakelog.connect(root)
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def train_cnn(
    root: Path | None,
    *,
    steps: int = 4,
    seed: int = 0,
    watch: dict | None = None,
    name: str = "r",
    before_step: Any = None,
) -> tuple[SmallCNN, torch.optim.Optimizer, Any]:
    """Seeded CNN training; ``watch`` options turn telemetry on. Steps are logged before optimizer.step()."""
    torch.manual_seed(seed)
    model = SmallCNN()
    model.features[5].eval()  # a submodule left in eval mode on purpose: its mode must survive captures
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = images()
    run = lakelog.init(root, name=name) if root is not None else None
    watcher = run.watch(model, opt, **watch) if run is not None and watch is not None else None
    for step in range(steps):
        batch = torch.arange(step, step + 8) % 16
        if run is not None:
            run.log_batch(step=step, sample_ids=batch.tolist())
        out = model(x[batch])
        loss = F.cross_entropy(out, y[batch])
        opt.zero_grad()
        loss.backward()
        if before_step is not None:
            before_step(step, model)
        opt.step()
        if run is not None:
            run.log({"loss": loss.detach()}, step=step)
    if run is not None:
        run.finish()
    return model, opt, watcher


def test_params_match_torch(tmp_path: Path) -> None:
    kept: dict[str, torch.Tensor] = {}

    def remember(step: int, model: nn.Module) -> None:
        if step == 1:  # weights after step 0, the previous capture (every=3: captures at steps 0 and 3)
            kept.update({n: p.detach().clone() for n, p in model.named_parameters()})

    model, opt, watcher = train_cnn(tmp_path, steps=4, watch={"every": 3}, before_step=remember)
    assert watcher.error is None
    rows = {(r["kind"], r["name"]): r for r in query(tmp_path, "SELECT * FROM params WHERE step = 3")}
    names = {n for n, _ in model.named_parameters()}
    assert {n for k, n in rows if k == "param"} == names
    for name, p in model.named_parameters():
        r = rows[("param", name)]
        t = p.detach().double()
        assert r["shape"] == str(list(p.shape)) and r["numel"] == p.numel() and r["dtype"] == "float32"
        assert r["group"] == "group_0"
        for col, expected in [
            ("norm", t.norm()),
            ("mean", t.mean()),
            ("std", t.std()),
            ("min", t.min()),
            ("max", t.max()),
            ("absmax", t.abs().max()),
            ("grad_norm", p.grad.double().norm()),
            ("grad_absmax", p.grad.double().abs().max()),
        ]:
            assert r[col] == pytest.approx(float(expected), rel=1e-5, abs=1e-9), (name, col)
        update = float((p.detach() - kept[name]).double().norm())
        assert r["update_norm"] == pytest.approx(update, rel=1e-5, abs=1e-12)
        assert r["update_ratio"] == pytest.approx(update / float(t.norm()), rel=1e-5, abs=1e-12)
        assert r["nan_count"] == 0 and r["inf_count"] == 0
        assert r["fingerprint"] == fingerprint_hex(p.detach())
        assert r["grad_fingerprint"] == fingerprint_hex(p.grad)
        for key, value in opt.state[p].items():
            o = rows[(f"optim:{key}", name)]
            assert o["fingerprint"] == fingerprint_hex(value)
            assert o["norm"] == pytest.approx(float(value.double().norm()), rel=1e-5)
            assert (
                o["mean"] is None and o["min"] is None and o["grad_norm"] is None
            )  # optimizer state: norm only
    for name, b in model.named_buffers():
        r = rows[("buffer", name)]
        assert r["fingerprint"] == fingerprint_hex(b) and r["dtype"] == str(b.dtype).removeprefix("torch.")
        assert r["norm"] == pytest.approx(float(b.double().norm()), rel=1e-6)
        assert r["grad_norm"] is None and r["update_norm"] is None
    first = query(
        tmp_path,
        "SELECT count(*) n, count(update_norm) u, count(grad_norm) g FROM params "
        "WHERE step = 0 AND kind = 'param'",
    )[0]
    assert first == {"n": len(names), "u": 0, "g": len(names)}  # no update at the first capture
    steps = query(
        tmp_path, "SELECT DISTINCT step, kind FROM params WHERE kind LIKE 'initial:%' ORDER BY kind"
    )
    assert steps == [{"step": 0, "kind": "initial:buffer"}, {"step": 0, "kind": "initial:param"}]
    scalars = {
        r["name"]: r["value"] for r in query(tmp_path, "SELECT name, value FROM scalars WHERE step = 3")
    }
    total = math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in model.parameters()))
    assert scalars["grad_norm"] == pytest.approx(total, rel=1e-6)
    assert scalars["grad_norm/group_0"] == pytest.approx(total, rel=1e-6)
    assert scalars["weight_norm"] == pytest.approx(
        math.sqrt(sum(float(p.detach().double().norm()) ** 2 for p in model.parameters()))
    )
    assert (
        scalars["lr/group_0"] == 1e-2
        and scalars["beta1/group_0"] == 0.9
        and scalars["beta2/group_0"] == 0.999
    )


def test_fingerprints_equal_for_identical_bits_and_differ_by_one_ulp(tmp_path: Path) -> None:
    torch.manual_seed(3)
    a = EmbedMLP()
    b = EmbedMLP()
    b.load_state_dict(a.state_dict())
    c = EmbedMLP()
    c.load_state_dict(a.state_dict())
    with torch.no_grad():
        w = c.mlp[0].weight
        w[1, 2] = torch.nextafter(w[1, 2], torch.tensor(math.inf))
    assert not torch.equal(w, a.mlp[0].weight) and torch.allclose(w, a.mlp[0].weight, rtol=0, atol=1e-6)
    for name, model in (("a", a), ("b", b), ("c", c)):
        with lakelog.init(tmp_path, name=name) as run:
            run.watch(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fps = {
        (r["run"], r["name"]): r["fingerprint"]
        for r in query(tmp_path, "SELECT run, name, fingerprint FROM params WHERE kind = 'initial:param'")
    }
    names = [n for n, _ in a.named_parameters()]
    assert all(fps[("a", n)] == fps[("b", n)] for n in names)
    assert [n for n in names if fps[("a", n)] != fps[("c", n)]] == ["mlp.0.weight"]


class FrozenBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.classifier = nn.Linear(16, 2)


def test_frozen_backbone_and_user_groups(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FrozenBackbone()
    for p in model.features.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(model.classifier.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 2, (32,), generator=g)
    with lakelog.init(tmp_path, name="frozen") as run:
        run.watch(model, opt, every=2, groups={"backbone": "features.", "head": "classifier."})
        for step in range(5):
            run.log({"step": step}, step=step)
            loss = F.cross_entropy(model.classifier(model.features(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    rows = query(tmp_path, "SELECT * FROM params WHERE kind = 'param' AND step = 4")
    for r in rows:
        if r["name"].startswith("features."):
            assert r["group"] == "backbone" and r["update_norm"] == 0.0 and r["grad_norm"] is None
            assert r["update_ratio"] == (0.0 if r["norm"] > 0 else None)  # BatchNorm bias starts at 0
        else:
            assert r["group"] == "head" and r["update_norm"] > 0 and r["grad_norm"] > 0
    buffers = query(tmp_path, "SELECT DISTINCT \"group\" FROM params WHERE kind = 'buffer'")
    assert buffers == [{"group": "backbone"}]
    scalars = {
        r["name"]: r["value"] for r in query(tmp_path, "SELECT name, value FROM scalars WHERE step = 4")
    }
    assert scalars["update_norm/backbone"] == 0.0 and scalars["update_norm/head"] > 0
    assert "grad_norm/backbone" not in scalars and scalars["grad_norm/head"] > 0
    assert (
        scalars["lr/head"] == 0.1 and scalars["momentum/head"] == 0.9 and scalars["weight_decay/head"] == 0.0
    )


def test_progressive_unfreezing_adds_a_group(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FrozenBackbone()
    model.features.requires_grad_(False)
    opt = torch.optim.SGD(model.classifier.parameters(), lr=0.1)
    x, y = torch.randn(16, 10), torch.randint(0, 2, (16,))
    with lakelog.init(tmp_path, name="unfreeze") as run:
        watcher = run.watch(model, opt, every=1)
        for step in range(4):
            if step == 2:
                model.features.requires_grad_(True)
                opt.add_param_group({"params": model.features.parameters(), "lr": 0.01})
            run.log({"x": 0.0}, step=step)
            loss = F.cross_entropy(model.classifier(model.features(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert watcher.error is None
    rows = query(
        tmp_path,
        "SELECT step, \"group\", max(update_norm) u FROM params WHERE kind = 'param' "
        "AND name LIKE 'features.%' AND step > 0 GROUP BY ALL ORDER BY step",
    )
    assert rows == [
        {"step": 1, "group": "not_optimized", "u": 0.0},
        {"step": 2, "group": "group_1", "u": rows[1]["u"]},
        {"step": 3, "group": "group_1", "u": rows[2]["u"]},
    ]
    assert rows[1]["u"] > 0 and rows[2]["u"] > 0
    lrs = query(tmp_path, "SELECT step, value FROM scalars WHERE name = 'lr/group_1' ORDER BY step")
    assert lrs == [{"step": 2, "value": 0.01}, {"step": 3, "value": 0.01}]


def test_group_learning_rates_follow_the_scheduler(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FrozenBackbone()
    opt = torch.optim.SGD(
        [
            {"params": model.features.parameters(), "lr": 0.01},
            {"params": model.classifier.parameters(), "lr": 0.1, "name": "head"},
        ],
        momentum=0.5,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [lambda s: 0.5**s, lambda s: 1.0 / (1 + s)])
    x, y = torch.randn(16, 10), torch.randint(0, 2, (16,))
    used: dict[int, list[float]] = {}
    with lakelog.init(tmp_path, name="lr") as run:
        run.watch(model, opt, every=1)
        for step in range(4):
            run.log({"x": 1.0}, step=step)
            loss = F.cross_entropy(model.classifier(model.features(x)), y)
            opt.zero_grad()
            loss.backward()
            used[step] = [g["lr"] for g in opt.param_groups]
            opt.step()
            sched.step()
    got = query(tmp_path, "SELECT step, name, value FROM scalars WHERE name LIKE 'lr/%' ORDER BY step, name")
    assert {r["name"] for r in got} == {"lr/group_0", "lr/head"}
    for r in got:
        expected = used[r["step"]][0 if r["name"] == "lr/group_0" else 1]
        assert r["value"] == expected
    assert used[3] == [0.01 * 0.125, 0.1 / 4]


def _states() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_watch_and_holdout_leave_training_bit_identical(tmp_path: Path) -> None:
    hx, hy = images(8, seed=5)
    draws = []

    def forward(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        draws.append(torch.rand(1))  # a forward that draws RNG: the watcher must restore it
        np.random.rand()
        random.random()
        return model(batch[0]), batch[1]

    np.random.seed(0)
    random.seed(0)
    ref, ref_opt, _ = train_cnn(None, steps=5)
    ref_states = _states()
    for keep in ("cpu", "disk"):
        np.random.seed(0)
        random.seed(0)
        model, opt, watcher = train_cnn(
            tmp_path,
            steps=5,
            name=f"w-{keep}",
            watch={"every": 1, "holdout": ([(hx, hy)], forward), "keep_previous": keep},
        )
        assert watcher.error is None and len(draws) >= 5
        for (n, a), (_, b) in zip(ref.state_dict().items(), model.state_dict().items(), strict=True):
            assert torch.equal(a, b), n
        for a, b in zip(
            ref_opt.state_dict()["state"].values(), opt.state_dict()["state"].values(), strict=True
        ):
            assert all(torch.equal(a[k], b[k]) for k in a)
        assert [m.training for m in ref.modules()] == [m.training for m in model.modules()]
        assert not model.features[5].training and model.features[1].training
        states = _states()
        assert torch.equal(ref_states[0], states[0]) and np.array_equal(ref_states[1], states[1])
        assert ref_states[2] == states[2]
    assert query(tmp_path, "SELECT count(DISTINCT step) n FROM holdout WHERE run = 'w-cpu'") == [{"n": 5}]


def test_holdout_rows_match_an_eval_forward(tmp_path: Path) -> None:
    hx, hy = images(8, seed=5)
    model, _, _ = train_cnn(tmp_path, steps=3, watch={"every": 2, "holdout": (hx, hy)})
    model.eval()
    with torch.no_grad():
        logits = model(hx)
    rows = query(tmp_path, "SELECT * FROM holdout WHERE step = 2 ORDER BY sample_idx")
    assert [r["label"] for r in rows] == hy.tolist()
    assert np.array_equal(np.array([r["logits"] for r in rows], dtype=np.float32), logits.numpy())
    assert [r["prediction"] for r in rows] == logits.argmax(1).tolist()
    scalars = {
        r["name"]: r["value"] for r in query(tmp_path, "SELECT name, value FROM scalars WHERE step = 2")
    }
    assert scalars["holdout/acc"] == pytest.approx(float((logits.argmax(1) == hy).float().mean()))
    assert scalars["holdout/loss"] == pytest.approx(float(F.cross_entropy(logits, hy)), rel=1e-5)
    assert query(tmp_path, "SELECT DISTINCT step FROM holdout ORDER BY step") == [{"step": 0}, {"step": 2}]


def test_steps_follow_the_users_numbering(tmp_path: Path) -> None:
    def run_with(name: str, log_from: int | None, **opts: Any) -> list[int]:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with lakelog.init(tmp_path, name=name) as run:
            run.watch(model, opt, every=3, **opts)
            for i in range(7):
                if log_from is not None:
                    run.log_batch(step=log_from + i, sample_ids=[i])
                model(torch.ones(1, 4)).sum().backward()
                opt.step()
        rows = query(
            tmp_path,
            "SELECT DISTINCT step FROM params WHERE run = ? AND kind = 'param' ORDER BY step",
            [name],
        )
        return [r["step"] for r in rows]

    assert run_with("zero", 0) == [0, 3, 6]
    assert run_with("from100", 100) == [102, 105]
    assert run_with("nolog", None) == [0, 3, 6]
    assert run_with("optimizer", 100, step="optimizer") == [0, 3, 6]
    counter = iter(range(10, 100))
    assert run_with("callable", None, step=lambda: next(counter)) == [12, 15]


def test_label_balance_from_observed_labels(tmp_path: Path) -> None:
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with lakelog.init(tmp_path, name="labels") as run:
        watcher = run.watch(model, opt, every=1)
        watcher.observe(torch.tensor([0, 0, 2, 2, 2, -100, 1, 0]), num_classes=4)
        opt.step()
        watcher.observe(F.one_hot(torch.tensor([1, 1, 1, 0]), 3).float())
        opt.step()
        with pytest.raises(InvalidArgumentError, match="labels"):
            lakelog.write.telemetry.watch.observe_labels(run, torch.randn(5))
    got = {
        (r["step"], r["name"]): r["value"]
        for r in query(
            tmp_path,
            "SELECT step, name, value FROM scalars WHERE name LIKE 'label_pct/%' OR name = 'batch_size'",
        )
    }
    assert got[(0, "label_pct/0")] == pytest.approx(300 / 7) and got[(0, "label_pct/2")] == pytest.approx(
        300 / 7
    )
    assert got[(0, "label_pct/1")] == pytest.approx(100 / 7) and got[(0, "label_pct/3")] == 0.0
    assert got[(0, "batch_size")] == 7
    assert (
        got[(1, "label_pct/1")] == 75.0 and got[(1, "label_pct/0")] == 25.0 and got[(1, "label_pct/2")] == 0.0
    )


@pytest.mark.parametrize("keep", ["device", "cpu", "disk", None])
def test_keep_previous_modes_agree(tmp_path: Path, keep: str | None) -> None:
    seen: list[bool] = []

    def check_file(step: int, model: nn.Module) -> None:
        seen.append(any((tmp_path / "k" / ".telemetry").glob("*.safetensors")))

    train_cnn(tmp_path, steps=5, name="k", watch={"every": 2, "keep_previous": keep}, before_step=check_file)
    got = query(tmp_path, "SELECT step, name, update_norm FROM params WHERE kind = 'param' AND step = 4")
    torch.manual_seed(0)
    if keep is None:
        assert all(r["update_norm"] is None for r in got)
    else:
        model_2, _, _ = train_cnn(None, steps=3)
        model_4, _, _ = train_cnn(None, steps=5)
        before = dict(model_2.named_parameters())
        for r in got:
            p = dict(model_4.named_parameters())[r["name"]]
            assert r["update_norm"] == pytest.approx(
                float((p - before[r["name"]]).detach().double().norm()), rel=1e-5
            )
    assert any(seen) == (keep == "disk")
    assert not list((tmp_path / "k").glob(".telemetry/*.safetensors"))  # removed at finish


def test_dtypes_sparse_complex_and_nonfinite_values(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EmbedMLP(sparse=True)
    model.mlp[0].to(torch.bfloat16)
    model.register_parameter("scale", nn.Parameter(torch.randn(3, dtype=torch.complex64)))
    model.register_parameter("fp16", nn.Parameter(torch.randn(5).half(), requires_grad=False))
    model.register_buffer("counter", torch.arange(6, dtype=torch.int32))
    model.register_buffer("empty", torch.empty(0))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with lakelog.init(tmp_path, name="mixed") as run:
        watcher = run.watch(model, opt, every=1, keep_previous="disk")
        tokens = torch.randint(0, 40, (6, 5))
        h = model.embed(tokens).mean(1)
        out = model.mlp[3](model.mlp[2](model.mlp[1](model.mlp[0](h.bfloat16()).float())))
        (out.sum() + model.scale.abs().sum()).backward()
        grad = model.embed.weight.grad.coalesce()
        with torch.no_grad():  # NaN and Inf in weights and in a gradient: counted, not crashing
            model.mlp[3].weight[0, 0] = math.nan
            model.mlp[3].weight[1, 1] = math.inf
            model.mlp[3].weight[2, 2] = -math.inf
            model.mlp[3].bias.grad[1] = math.nan
        opt.step()
    assert watcher.error is None
    rows = {(r["kind"], r["name"]): r for r in query(tmp_path, "SELECT * FROM params WHERE step = 0")}
    emb = rows[("param", "embed.weight")]
    assert emb["grad_norm"] == pytest.approx(float(grad.values().double().norm()), rel=1e-6)
    assert emb["grad_fingerprint"] == fingerprint_hex(model.embed.weight.grad)
    bf = rows[("param", "mlp.0.weight")]
    w = model.mlp[0].weight.detach().double()
    assert bf["dtype"] == "bfloat16" and bf["norm"] == pytest.approx(float(w.norm()), rel=1e-5)
    assert bf["std"] == pytest.approx(float(w.std()), rel=1e-4) and bf["max"] == float(w.max())
    c = rows[("param", "scale")]
    assert c["dtype"] == "complex64" and c["norm"] == pytest.approx(
        float(model.scale.detach().abs().norm()), rel=1e-6
    )
    assert (
        c["min"] is None
        and c["mean"] is None
        and c["absmax"] == pytest.approx(float(model.scale.detach().abs().max()))
    )
    hf = rows[("param", "fp16")]
    assert hf["dtype"] == "float16" and hf["grad_norm"] is None and hf["update_norm"] is None
    assert hf["mean"] == pytest.approx(float(model.fp16.double().mean()), rel=1e-3)
    cnt = rows[("buffer", "counter")]
    assert (
        cnt["dtype"] == "int32"
        and cnt["mean"] == 2.5
        and cnt["max"] == 5
        and cnt["norm"] == pytest.approx(math.sqrt(55))
    )
    assert rows[("buffer", "empty")]["norm"] == 0 and rows[("buffer", "empty")]["min"] is None
    bad = rows[("param", "mlp.3.weight")]
    finite = model.mlp[3].weight.detach()[torch.isfinite(model.mlp[3].weight.detach())]
    assert (
        bad["nan_count"] == 1
        and bad["inf_count"] == 2
        and math.isnan(bad["norm"])
        and math.isnan(bad["absmax"])
    )
    assert bad["min"] == float(finite.min()) and bad["max"] == float(finite.max())
    nan_grad = rows[("param", "mlp.3.bias")]
    assert (
        math.isnan(nan_grad["grad_norm"])
        and math.isnan(nan_grad["grad_absmax"])
        and nan_grad["nan_count"] == 1
    )


def test_optimizer_parameters_outside_the_model(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    temperature = nn.Parameter(torch.ones(()))
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": [temperature], "lr": 0.01}], lr=0.1)
    with lakelog.init(tmp_path, name="extra") as run:
        run.watch(model, opt, every=1)
        (model(torch.ones(1, 3)).sum() * temperature).backward()
        opt.step()
        with pytest.raises(InvalidArgumentError, match="optimizer: none of its"):
            run.watch(nn.Linear(3, 2), torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1))
    names = {
        r["name"]: r["group"]
        for r in query(tmp_path, "SELECT name, \"group\" FROM params WHERE kind = 'param'")
    }
    assert names == {"weight": "group_0", "bias": "group_0", "optimizer.group_1.0": "group_1"}


def test_bad_arguments_name_the_argument(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = lakelog.init(tmp_path, name="bad")
    cases = [
        (dict(model="not a model"), "model:"),
        (dict(optimizer="sgd"), "optimizer:"),
        (dict(every=0), "every:"),
        (dict(holdout_every=3, every=2), "holdout_every:"),
        (dict(keep_previous="gpu"), "keep_previous:"),
        (dict(groups={"head": 3}), r"groups\['head'\]"),
        (dict(groups=["features."]), "groups:"),
        (dict(fingerprints=["weights"]), "fingerprints:"),
        (dict(step="run"), "step:"),
        (dict(colour="red"), "unknown option"),
        (dict(holdout=[torch.ones(2, 3)]), "holdout: batch 0"),
        (
            dict(holdout=([(torch.ones(2, 4), torch.zeros(2))], lambda m, b: (m(b[0]), b[1]))),
            "holdout: forward_fn raised",
        ),
        (dict(holdout=([(torch.ones(2, 3), torch.zeros(2))], lambda m, b: m(b[0]))), "must return"),
        (dict(holdout=(torch.ones(2, 3), torch.zeros(2))), "labels must be"),
        (dict(model=nn.LazyLinear(2)), "lazy"),
    ]
    for kwargs, message in cases:
        args = {"model": model, "optimizer": opt, **kwargs}
        with pytest.raises(InvalidArgumentError, match=message):
            run.watch(args.pop("model"), args.pop("optimizer"), **args)
    run.watch(model, opt)
    with pytest.raises(InvalidArgumentError, match="already watches"):
        run.watch(model, opt)
    run.finish()


def test_holdout_failure_later_keeps_training_and_telemetry_going(tmp_path: Path) -> None:
    calls = []

    def forward(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("holdout disk went away")
        return model(batch[0]), batch[1]

    hx, hy = images(4, seed=2)
    _, _, watcher = train_cnn(tmp_path, steps=5, watch={"every": 1, "holdout": ([(hx, hy)], forward)})
    assert isinstance(watcher.error, RuntimeError) and len(calls) == 3
    assert query(tmp_path, "SELECT DISTINCT step FROM holdout ORDER BY step") == [{"step": 0}]
    assert query(tmp_path, "SELECT count(DISTINCT step) n FROM params WHERE kind = 'param'") == [{"n": 5}]
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert "holdout disk went away" in info["telemetry_error"] and info["watch"]["every"] == 1


def test_a_failing_step_callable_turns_telemetry_off_not_training(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with lakelog.init(tmp_path, name="badstep") as run:
        watcher = run.watch(model, opt, step=lambda: 1 // 0)
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        opt.step()
        watcher.observe(torch.tensor([1, 2]))  # detached: ignored
    assert isinstance(watcher.error, ZeroDivisionError) and not watcher._labels
    assert not opt._optimizer_step_pre_hooks
    assert (
        "ZeroDivisionError" in json.loads((tmp_path / "badstep" / "run.json").read_text())["telemetry_error"]
    )


def test_detach_at_finish_and_module_level_watch(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lakelog.init(tmp_path, name="api")
    watcher = lakelog.watch(model, opt, every=1)
    assert len(opt._optimizer_step_pre_hooks) == 1 and len(opt._optimizer_step_post_hooks) == 1
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    lakelog.finish()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    opt.step()  # training may go on after the run is finished
    assert watcher.steps == 1
    rows = query(tmp_path, "SELECT count(*) n FROM params WHERE kind = 'param' AND step = 0")
    assert rows == [{"n": 2}]


def test_gradients_of_a_closure_step_are_read_after_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for name, opt in (
        ("lbfgs", torch.optim.LBFGS(model.parameters(), max_iter=3)),
        ("sgd", torch.optim.SGD(model.parameters(), lr=0.1)),
    ):

        def closure(opt: torch.optim.Optimizer = opt) -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        model.zero_grad(set_to_none=True)  # before the first step(closure) there is no gradient at all
        with lakelog.init(tmp_path, name=name) as run:
            run.watch(model, opt, every=1)
            opt.step(closure) if name == "lbfgs" else opt.step(closure=closure)
        rows = query(
            tmp_path,
            "SELECT name, grad_fingerprint, grad_norm FROM params WHERE run = ? AND kind = 'param'",
            [name],
        )
        for r in rows:
            grad = dict(model.named_parameters())[r["name"]].grad
            assert r["grad_fingerprint"] == fingerprint_hex(grad)
            assert r["grad_norm"] == pytest.approx(float(grad.double().norm()), rel=1e-6)


def test_manual_capture_without_optimizer(tmp_path: Path) -> None:
    model = EmbedMLP()
    with lakelog.init(tmp_path, name="manual") as run:
        watcher = run.watch(model, fingerprints=False)
        model(torch.randint(0, 40, (2, 3))).sum().backward()
        watcher.capture(step=7)
    rows = query(
        tmp_path,
        "SELECT kind, count(*) n, count(grad_norm) g, count(fingerprint) f FROM params "
        "GROUP BY kind ORDER BY kind",
    )
    assert rows == [
        {"kind": "initial:param", "n": 5, "g": 0, "f": 0},
        {"kind": "param", "n": 5, "g": 5, "f": 0},
    ]
    assert query(tmp_path, "SELECT DISTINCT step FROM params WHERE kind = 'param'") == [{"step": 7}]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captures_do_not_sync_the_device(tmp_path: Path) -> None:
    model = SmallCNN().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = (t.cuda() for t in images())
    with lakelog.init(tmp_path, name="cuda") as run:
        watcher = run.watch(model, opt, every=1, holdout=(x[:4], y[:4]), keep_previous="cpu")
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()  # first capture allocates the pinned copies
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                watcher.observe(y, num_classes=3)
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert watcher.error is None
    assert query(tmp_path, "SELECT count(DISTINCT step) n FROM params WHERE kind = 'param'") == [{"n": 4}]
