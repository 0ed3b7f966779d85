"""The holdout evaluator: it must leave modes, RNG and BatchNorm state exactly as they were, accept
the documented batch shapes, and turn logits into the holdout rows and scalars correctly."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lakelog.errors import InvalidArgumentError
from lakelog.write.telemetry import holdout


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8, momentum=None), nn.ReLU(), nn.Dropout(0.5)
        )
        self.frozen_bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.frozen_bn(self.body(x)))


def _rng() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_untouched_restores_every_mode_and_rng_even_after_an_error() -> None:
    torch.manual_seed(0)
    model = BNNet()
    model.train()
    model.frozen_bn.eval()
    modes = [m.training for m in model.modules()]
    before = _rng()
    with pytest.raises(RuntimeError, match="boom"), holdout.untouched(model):
        assert not any(m.training for m in model.modules()) and not torch.is_grad_enabled()
        torch.rand(3)
        np.random.rand(3)
        random.random()
        raise RuntimeError("boom")
    after = _rng()
    assert [m.training for m in model.modules()] == modes and torch.is_grad_enabled()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_evaluate_leaves_batchnorm_statistics_alone() -> None:
    torch.manual_seed(0)
    model = BNNet()
    model(torch.randn(16, 4))  # one training forward so the statistics are not at their initial values
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    logits, labels = holdout.evaluate(model, [(x, y), (x[:2], y[:2])], holdout.default_forward)
    assert logits.shape == (8, 3) and labels.tolist() == y.tolist() + y[:2].tolist()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.body[1].num_batches_tracked.item() == 1
    model.eval()
    with torch.no_grad():
        assert torch.equal(logits[:6], model(x))


def test_parse_reads_a_shuffling_dataloader_once_without_moving_the_rng() -> None:
    data = torch.utils.data.TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    model = BNNet()
    torch.manual_seed(1)
    before = torch.get_rng_state()
    batches, forward = holdout.parse(loader, model)
    assert torch.equal(before, torch.get_rng_state())
    assert len(batches) == 3 and forward is holdout.default_forward
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(data.tensors[1].tolist())


def test_parse_accepts_the_documented_shapes() -> None:
    model = BNNet()
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])

    def fn(m: nn.Module, b: Any) -> tuple[torch.Tensor, None]:
        return m(b), None

    assert holdout.parse(None, model) is None
    assert holdout.parse((x, y), model)[0][0] == (x, y)  # one (inputs, labels) batch
    assert holdout.parse([(x, y), [x, y]], model)[1] is holdout.default_forward
    batches, forward = holdout.parse(([x, x], fn), model)
    assert forward is fn and len(batches) == 2
    batches, forward = holdout.parse(([(x, y), (x, y)], None), model)  # the README's (batches, None)
    assert forward is holdout.default_forward and len(batches) == 2
    batches, _ = holdout.parse((x, None), model)  # one batch without labels
    assert batches[0][1] is None and holdout.evaluate(model, batches, forward)[1] is None
    for bad, message in [
        (42, "expected"),
        ([], "no batches"),
        ("text", "expected"),
        ([x], "batch 0"),
        ({"x": x}, "expected"),
    ]:
        with pytest.raises(InvalidArgumentError, match=f"holdout: .*{message}"):
            holdout.parse(bad, model)


def test_default_forward_handles_tuple_dict_and_wrapped_outputs() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.lin(a + b), a

    class Out:
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits = logits

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, input_ids: torch.Tensor) -> Out:
            return Out(self.lin(input_ids))

    a, b, y = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 1])
    two, named = Two(), Named()
    logits, labels = holdout.default_forward(two, ((a, b), y))
    assert torch.equal(logits, two.lin(a + b)) and labels is y
    logits, _ = holdout.default_forward(named, ({"input_ids": a}, y))
    assert torch.equal(logits, named.lin(a))


def test_evaluate_checks_what_forward_returns() -> None:
    model = BNNet()
    x = torch.randn(4, 4)
    cases = [
        (lambda m, b: (m(b), torch.zeros(3, dtype=torch.long)), "3 labels for 4 rows"),
        (lambda m, b: (m(b).long(), None), "float tensor"),
        (lambda m, b: (m(b), torch.zeros(4)), "1-D integer"),
        (lambda m, b: ("logits", None), "float tensor"),
    ]
    for fn, message in cases:
        with pytest.raises(InvalidArgumentError, match=message):
            holdout.evaluate(model, [x], fn)

    def shrinking(m: nn.Module, b: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = m(b)
        return (out if len(b) == 4 else out[:, :2]), None

    with pytest.raises(InvalidArgumentError, match=r"batches\[1\] gives 2 classes, batches\[0\] gave 3"):
        holdout.evaluate(model, [x, x[:2]], shrinking)


def test_rows_accuracy_loss_and_missing_labels() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 3.0, 0.0], [0.0, 0.0, 5.0]], dtype=np.float32)
    labels = np.array([0, 1, -100, 2])
    table, scalars = holdout.rows(9, logits, labels)
    assert table.column("prediction").to_pylist() == [0, 2, 1, 2]
    assert table.column("label").to_pylist() == [0, 1, None, 2]
    assert table.column("correct").to_pylist() == [True, False, None, True]
    assert table.column("step").to_pylist() == [9] * 4 and table.column("sample_idx").to_pylist() == [
        0,
        1,
        2,
        3,
    ]
    assert scalars["holdout/acc"] == pytest.approx(2 / 3)
    valid = torch.tensor([0, 1, 3])
    expected = F.cross_entropy(torch.from_numpy(logits)[valid].double(), torch.tensor([0, 1, 2]))
    assert scalars["holdout/loss"] == pytest.approx(float(expected), rel=1e-9)
    table, scalars = holdout.rows(0, logits, None)
    assert table.column("label").null_count == 4 and scalars == {}
    _, scalars = holdout.rows(0, logits, np.array([0, 1, 7, 2]))  # a label outside the classes: no loss
    assert "holdout/loss" not in scalars and scalars["holdout/acc"] == 0.5


def test_rows_single_logit_binary() -> None:
    logits = np.array([[1.5], [-0.5], [0.2]], dtype=np.float32)
    labels = np.array([1, 1, 0])
    table, scalars = holdout.rows(1, logits, labels)
    assert table.column("prediction").to_pylist() == [1, 0, 1]
    expected = F.binary_cross_entropy_with_logits(
        torch.tensor([1.5, -0.5, 0.2]).double(), torch.tensor([1.0, 1.0, 0.0]).double()
    )
    assert scalars["holdout/loss"] == pytest.approx(float(expected), rel=1e-9)
    assert scalars["holdout/acc"] == pytest.approx(1 / 3)


def test_label_scalars_and_checks() -> None:
    got = dict(holdout.label_scalars(np.array([0, 0, 1, -1]), "ids", 3))
    assert got == {
        "batch_size": 3.0,
        "label_pct/0": pytest.approx(200 / 3),
        "label_pct/1": pytest.approx(100 / 3),
        "label_pct/2": 0.0,
    }
    many = dict(holdout.label_scalars(np.array([5, 500, 500]), "ids", 0))
    assert set(many) == {"batch_size", "label_pct/5", "label_pct/500"}  # many classes: only those present
    assert holdout.check_labels([1, 2, 3]).dtype == torch.int64
    for bad in (torch.randn(4), torch.randn(2, 3, 4), torch.ones(3, dtype=torch.complex64), object()):
        with pytest.raises(InvalidArgumentError, match="labels"):
            holdout.check_labels(bad)
