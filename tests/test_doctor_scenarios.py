"""doctor on real training runs of several shapes: healthy ones pass (exit 0, no warning), and each
planted problem is reported by the right check, naming the right tensor, group or step."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import lakelog
from lakelog.cli import cli
from lakelog.read.doctor import doctor, exit_code

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def classes_data(n: int, features: int, classes: int, *, seed: int = 0, noise: float = 0.3):
    """Separable synthetic classes: a random linear teacher (the same for every ``n`` of a seed), plus noise."""
    teacher = torch.randn(features, classes, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + n)
    x = torch.randn(n, features, generator=g)
    y = (x @ teacher + noise * torch.randn(n, classes, generator=g)).argmax(1)
    return x, y


def fit(
    root: Path,
    name: str,
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    batch: int,
    epochs: int,
    param_groups: list[dict] | None = None,
    lr: float = 0.05,
    optimizer: str = "sgd",
    lr_at: Callable[[int], float] | None = None,
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
    names: dict[str, str] | None = None,
    every: int = 1,
    log_predictions: bool = True,
    train_acc: bool = True,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> str:
    """Train ``model`` and log what a user logs: the loss and accuracy each step, the holdout accuracy
    each epoch, predictions with labels, watch() telemetry. ``lr_at(step)`` scales every group's LR."""
    torch.manual_seed(0)
    names = {"loss": "loss", "acc": "acc", "holdout": "val_acc"} | (names or {})
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    make = torch.optim.AdamW if optimizer == "adam" else torch.optim.SGD
    opt = make(groups, lr=lr) if optimizer == "adam" else make(groups, lr=lr, momentum=0.9)
    base = [g["lr"] for g in opt.param_groups]
    x_all, y_all = data
    steps_per_epoch = math.ceil(len(x_all) / batch)
    step = 0
    with lakelog.init(root, name=name, seed=0) as run:
        run.watch(model, opt, every=every)
        for epoch in range(epochs):
            order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(epoch))
            for b in range(steps_per_epoch):
                idx = order[b * batch : (b + 1) * batch]
                x, y = x_all[idx], y_all[idx]
                if lr_at is not None:
                    for g, lr0 in zip(opt.param_groups, base, strict=True):
                        g["lr"] = lr0 * lr_at(step)
                model.train()
                out = model(x)
                loss = loss_of(out, y)
                if log_predictions:
                    run.log_predictions(out.detach(), step=step, epoch=epoch, labels=y, batch_idx=b)
                opt.zero_grad()
                loss.backward()
                opt.step()
                metrics = {names["loss"]: float(loss.detach())}
                if train_acc:
                    metrics[names["acc"]] = float((out.argmax(1) == y).float().mean())
                run.log(metrics, step=step, epoch=epoch)
                step += 1
            if holdout is not None:
                model.eval()
                with torch.no_grad():
                    acc = float((model(holdout[0]).argmax(1) == holdout[1]).float().mean())
                run.log({names["holdout"]: acc}, step=step - 1, epoch=epoch)
    return name


def statuses(root: Path, name: str, **expect: Any) -> dict[str, Any]:
    return {c.name: c for c in doctor(root, name, **expect)}


def assert_healthy(root: Path, name: str, **expect: Any) -> dict[str, Any]:
    checks = doctor(root, name, **expect)
    bad = [(c.name, c.status, c.summary) for c in checks if c.status in ("warn", "error")]
    assert not bad, bad
    assert exit_code(checks) == 0
    return {c.name: c for c in checks}


def mlp(features: int, hidden: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class DigitsCNN(nn.Module):
    """A CNN the size of one for sklearn's digits (8x8 images, 10 classes); its first conv keeps a bias
    right before BatchNorm, whose gradient is zero but for rounding (harmless: a note at most)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)).flatten(1))


class TinyTransformer(nn.Module):
    """Token sequences -> class: embedding, two encoder layers, mean pool, linear head."""

    def __init__(self, vocab: int = 50, dim: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def token_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    tokens = torch.randint(3, 50, (n, 12), generator=g)
    tokens[:, :4] = y[:, None]  # the class shows in the first tokens
    return tokens, y


# -- healthy runs of several shapes ---------------------------------------------------------------


@pytest.mark.slow
def test_the_demo_baseline_is_healthy(tmp_path):
    from lakelog.cli.demo import train

    train(tmp_path, "baseline", epochs=3)
    found = assert_healthy(tmp_path, "baseline", lr_ratio="head/backbone=10")
    assert found["updates_per_epoch"].status == "note"  # 24 batches of 64: few, but 1536 samples is small
    assert "24 batches of 64 samples per epoch" in found["updates_per_epoch"].summary
    assert found["lr_ratio"].status == "pass"


@pytest.mark.slow
def test_a_digits_sized_cnn_is_healthy(tmp_path):
    x, y = classes_data(1797, 64, 10, seed=1)
    hx, hy = classes_data(300, 64, 10, seed=1)  # same teacher (seed), other samples
    fit(tmp_path, "digits", DigitsCNN(), (x, y), batch=64, epochs=3, lr=0.05, holdout=(hx, hy), every=5)
    found = assert_healthy(tmp_path, "digits")
    assert found["overfitting"].status == "pass" and "val_acc" in found["overfitting"].summary
    assert found["not_learning"].status == "pass"


@pytest.mark.slow
def test_a_small_transformer_with_warmup_is_healthy(tmp_path):
    tokens, y = token_data(1024)
    fit(
        tmp_path,
        "transformer",
        TinyTransformer(),
        (tokens, y),
        batch=32,
        epochs=2,
        lr=3e-3,
        optimizer="adam",
        lr_at=lambda step: min(1.0, step / 20),
        holdout=token_data(128, seed=5),
        names={"holdout": "eval/accuracy", "acc": "train/accuracy", "loss": "train/loss"},
        every=4,
    )
    found = assert_healthy(tmp_path, "transformer")
    assert "eval/accuracy" in found["overfitting"].summary and "train/loss" in found["not_learning"].summary


def test_a_linear_warmup_from_zero_keeps_the_expected_ratio(tmp_path):
    x, y = classes_data(256, 8, 2)
    model = mlp(8, 16, 2)
    groups = [
        {"params": model[0].parameters(), "lr": 0.01, "name": "backbone"},
        {"params": model[2].parameters(), "lr": 0.1, "name": "head"},
    ]
    # linear warmup from LR 0, then a cooldown to 0 on the last step
    fit(
        tmp_path,
        "warmup",
        model,
        (x, y),
        batch=16,
        epochs=2,
        param_groups=groups,
        lr_at=lambda s: min(1, s / 8) * (s < 31),
    )
    found = assert_healthy(tmp_path, "warmup", lr_ratio="head/backbone=10")
    assert found["lr_ratio"].summary.startswith("head/backbone = 10 as expected")
    assert "2 with an LR of 0 left out" in found["lr_ratio"].summary
    typo = statuses(tmp_path, "warmup", lr_ratio="head/backbon=10")["lr_ratio"]
    assert (
        typo.status == "warn" and "no group 'backbon'; the groups logged are backbone, head" in typo.summary
    )


def test_a_tiny_dataset_is_not_short_of_updates(tmp_path):
    x, y = classes_data(20, 4, 2)
    fit(tmp_path, "tiny", mlp(4, 8, 2), (x, y), batch=4, epochs=12, lr=0.1, every=4)
    found = assert_healthy(tmp_path, "tiny")
    assert (
        found["updates_per_epoch"].status == "note"
        and "5 batches of 4 samples" in found["updates_per_epoch"].summary
    )


# -- planted problems ----------------------------------------------------------------------------


def test_a_large_dataset_with_a_huge_batch_gets_too_few_updates(tmp_path):
    """The seeds' case: 47,000 samples with batch 2048 -> 23 updates per epoch; ~256 suggested."""
    x, y = classes_data(47_000, 4, 2)
    fit(tmp_path, "big_batch", nn.Linear(4, 2), (x, y), batch=2048, epochs=2, every=10)
    check = statuses(tmp_path, "big_batch")["updates_per_epoch"]
    assert check.status == "warn", check.summary
    assert "only 23 batches of 2048 samples per epoch" in check.summary  # not 2.05e+03
    assert "batch size ~256" in check.summary


def nan_loss_run(root: Path, name: str) -> None:
    x, y = classes_data(64, 4, 2)
    target = y.float()
    target[37] = float("nan")  # one bad target: the loss of the batch holding it is NaN
    model = nn.Linear(4, 1)
    with lakelog.init(root, name=name) as run:
        for step in range(8):
            idx = torch.arange(step * 8, step * 8 + 8)
            loss = F.mse_loss(model(x[idx]).squeeze(1), target[idx])
            run.log({"loss": float(loss.detach())}, step=step)


def test_a_nan_loss_is_the_first_non_finite_value(tmp_path):
    nan_loss_run(tmp_path, "nan_loss")
    check = statuses(tmp_path, "nan_loss")["nan_inf"]
    assert check.status == "error" and "first NaN/Inf at step 4 in scalars: loss" in check.summary


def test_not_learning_is_found_on_train_or_holdout_accuracy(tmp_path):
    x, y = classes_data(512, 8, 4)
    fit(tmp_path, "stuck", mlp(8, 16, 4), (x, y), batch=32, epochs=2, lr=1e-7, every=4)
    check = statuses(tmp_path, "stuck")["not_learning"]
    assert check.status == "warn" and "at chance" in check.summary and "acc" in check.summary
    # only a holdout accuracy logged (no train accuracy, no predictions)
    fit(
        tmp_path, "stuck_val", mlp(8, 16, 4), (x, y), batch=32, epochs=5, lr=1e-7, holdout=classes_data(128, 8, 4),
        log_predictions=False, train_acc=False, names={"holdout": "val/acc"},
    )  # fmt: skip
    check = statuses(tmp_path, "stuck_val")["not_learning"]
    assert check.status == "warn" and "val/acc" in check.summary


def test_early_layers_vanishing_in_the_single_default_group(tmp_path):
    x, y = classes_data(256, 8, 2)
    layers: list[nn.Module] = [nn.Linear(8, 16), nn.Sigmoid()]
    for _ in range(18):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(16, 2))  # 20 Linear layers, one optimizer group
    fit(tmp_path, "sigmoid20", model, (x, y), batch=32, epochs=1, lr=0.01)
    found = statuses(tmp_path, "sigmoid20")
    grads = found["gradients"]
    assert (
        grads.status == "warn"
        and "group_0: early layers vanish: its first weights (from 0.weight" in grads.summary
    )
    assert "(to 38.weight" in grads.summary  # the last of the 20 Linear layers
    frozen = found["frozen_layers"]
    assert "no optimizer param group" not in frozen.summary and "in the optimizer" not in frozen.summary


def test_requires_grad_false_is_listed_and_warned_when_still_in_the_optimizer(tmp_path):
    x, y = classes_data(128, 8, 2)
    kept_out = mlp(8, 16, 2)
    kept_out[0].requires_grad_(False)  # frozen on purpose: left out of the optimizer
    fit(tmp_path, "frozen_ok", kept_out, (x, y), batch=16, epochs=2)
    check = statuses(tmp_path, "frozen_ok")["frozen_layers"]
    assert (
        check.status == "note"
        and "0.weight, 0.bias" in check.summary
        and "requires_grad=False" in check.summary
    )
    left_on = mlp(8, 16, 2)
    left_on[0].requires_grad_(False)  # the bug: the backbone stays frozen although the optimizer has it
    fit(
        tmp_path,
        "frozen_bug",
        left_on,
        (x, y),
        batch=16,
        epochs=2,
        param_groups=[{"params": left_on.parameters()}],
    )
    check = statuses(tmp_path, "frozen_bug")["frozen_layers"]
    assert (
        check.status == "warn"
        and "requires_grad=False but sit in optimizer group(s) group_0" in check.summary
    )
    assert "0.weight, 0.bias" in check.summary


class DeadInput(nn.Module):
    """A ReLU layer whose bias is so negative that it is dead: the next layer's input is all zero."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(8, 16)
        self.out = nn.Linear(16, 2)
        with torch.no_grad():
            self.hidden.bias.fill_(-100.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(x)))


def test_a_dead_layer_is_named_although_its_bias_gets_gradients(tmp_path):
    x, y = classes_data(128, 8, 2)
    fit(tmp_path, "dead", DeadInput(), (x, y), batch=16, epochs=2)
    check = statuses(tmp_path, "dead")["dead_layers"]
    assert check.status == "warn" and "out.weight" in check.summary
    assert "out.bias" not in check.summary  # it still learns
    assert set(check.evidence["name"]) >= {"out.weight"}


def test_a_holdout_metric_by_another_name_or_by_option(tmp_path):
    x, y = classes_data(128, 8, 2)
    fit(
        tmp_path,
        "named",
        mlp(8, 16, 2),
        (x, y),
        batch=16,
        epochs=3,
        holdout=classes_data(64, 8, 2),
        names={"holdout": "score_val"},
    )
    skipped = statuses(tmp_path, "named")["overfitting"]
    assert skipped.status == "skip" and "--metric NAME" in skipped.summary and "val_acc" in skipped.summary
    given = statuses(tmp_path, "named", holdout_name="score_val")["overfitting"]
    assert given.status == "pass" and "holdout (score_val)" in given.summary


def test_cli_formats_and_fail_on(tmp_path):
    nan_loss_run(tmp_path, "broken")  # nan_inf: error
    x, y = classes_data(128, 8, 2)
    fit(tmp_path, "typo", mlp(8, 16, 2), (x, y), batch=16, epochs=2)

    def doctor_cli(*args: str):
        return CliRunner().invoke(cli, ["doctor", *args, "--root", str(tmp_path)])

    as_json = doctor_cli("broken", "--format", "json")
    assert as_json.exit_code == 1, as_json.output
    rows = {r["check"]: r for r in json.loads(as_json.output)}
    assert rows["nan_inf"]["status"] == "error" and "step 4" in rows["nan_inf"]["summary"]
    csv = doctor_cli("broken", "--format", "csv")
    assert csv.output.splitlines()[0] == "check,status,summary,query"
    assert doctor_cli("broken", "--fail-on", "error").exit_code == 1
    assert doctor_cli("broken", "--fail-on", "never").exit_code == 0
    healthy = doctor_cli("typo")
    assert healthy.exit_code == 0, healthy.output
    typo = doctor_cli("typo", "--lr-ratio", "group_0/group_9=2", "--no-evidence")  # a warning only
    assert typo.exit_code == 1 and "group_9" in typo.output
    assert doctor_cli("typo", "--lr-ratio", "group_0/group_9=2", "--fail-on", "error").exit_code == 0
    bad = doctor_cli("typo", "--fail-on", "sometimes")
    assert bad.exit_code == 2 and "sometimes" in bad.output
    named = doctor_cli("typo", "--metric", "nope", "--format", "json")
    skipped = {r["check"]: r for r in json.loads(named.output)}["overfitting"]
    assert skipped["status"] == "skip" and "--metric" in skipped["summary"]


def test_an_overflowing_norm_is_not_taken_for_the_origin(tmp_path):
    """A norm logged as inf one step before anything computed is non-finite: the logits are named."""
    with lakelog.init(tmp_path, name="overflow") as run:
        for step in range(6):
            logits = torch.full((4, 3), 1e30 if step >= 3 else 1.0)
            if step >= 4:
                logits[0, 0] = float("inf")
            run.log_predictions(logits, step=step, labels=torch.zeros(4, dtype=torch.long))
            run.log({"grad_norm": math.inf if step >= 3 else 1.0, "loss": 1.0}, step=step)
    check = statuses(tmp_path, "overflow")["nan_inf"]
    assert check.status == "error" and "first NaN/Inf at step 4 in predictions: logits" in check.summary
    derived = check.evidence.filter(check.evidence["source"] == "derived norms")
    assert derived["step"].to_list() == [3] and not derived["is_first"].any()


def test_large_but_steady_gradients_and_late_unfreezing_are_not_problems(tmp_path):
    """Regression on unscaled targets (gradient norms ~1e4 on every step, not growing) is not an
    explosion; a backbone frozen with requires_grad=False and unfrozen half way is not 'never trains'."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    target = x @ torch.randn(8, 1, generator=g) * 3000.0
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    model[0].requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=1e-9)
    with lakelog.init(tmp_path, name="steady") as run:
        run.watch(model, opt, every=1)
        for step in range(40):
            if step == 20:
                model[0].requires_grad_(True)  # gradual unfreezing
            idx = torch.arange(step % 8 * 32, step % 8 * 32 + 32)
            loss = F.mse_loss(model(x[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": float(loss.detach())}, step=step, epoch=step // 8)
    found = statuses(tmp_path, "steady")
    grads = found["gradients"]
    assert grads.evidence["max_norm"].min() > 1000  # large, on every step
    assert grads.status == "pass", grads.summary
    assert found["frozen_layers"].status in ("pass", "note"), found["frozen_layers"].summary


def test_adam_state_overflowing_before_any_weight_is_the_origin(tmp_path):
    """Gradients of ~1e21 are finite, their squares are not: Adam's exp_avg_sq is the first Inf."""
    model = nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.ones(8, 4)
    with lakelog.init(tmp_path, name="adam_inf") as run:
        run.watch(model, opt, every=1)
        for step in range(3):
            loss = (model(x) * 1e21).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log({"loss": float(loss.detach())}, step=step)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the update of inf state is 0
    check = statuses(tmp_path, "adam_inf")["nan_inf"]
    assert check.status == "error", check.summary
    assert "first NaN/Inf at step 0 in optimizer: bias (optim:exp_avg_sq) (norm = inf)" in check.summary
    first = check.evidence.filter(check.evidence["step"] == 0)
    assert set(first["name"]) == {"bias (optim:exp_avg_sq)", "weight (optim:exp_avg_sq)"}  # nothing else yet


def test_a_bias_before_batchnorm_that_does_not_move_is_only_a_note(tmp_path):
    """BatchNorm cancels the bias before it: its gradient is zero but for rounding, so it never moves."""
    x, y = classes_data(512, 8, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    fit(tmp_path, "bn_bias", model, (x, y), batch=64, epochs=2, lr=0.05)
    check = assert_healthy(tmp_path, "bn_bias")["frozen_layers"]
    assert (
        check.status == "note" and "rounds away on some steps" in check.summary and "0.bias" in check.summary
    )


def test_a_long_lr_warmup_is_not_mistaken_for_not_learning(tmp_path):
    """Checked half way through a 400-step warmup, the loss has not moved yet: too early to judge."""
    x, y = classes_data(512, 8, 2)
    fit(
        tmp_path,
        "warming",
        mlp(8, 16, 2),
        (x, y),
        batch=32,
        epochs=4,
        lr=0.05,
        lr_at=lambda s: 1e-4 * s / 400,
        every=8,
    )
    check = assert_healthy(tmp_path, "warming")["not_learning"]
    assert "too short to judge" in check.summary
