"""One unwrap (lakelog.write.unwrap): dumps and telemetry see the user's module through DDP/DataParallel and
torch.compile wrappers, and the torch optimizer through a trainer's wrapper."""

from __future__ import annotations

import torch

import lakelog
from lakelog.write.dumps.writer import load_dump
from lakelog.write.unwrap import unwrap_model, unwrap_optimizer


class _TrainerOptimizer:
    """What Lightning's LightningOptimizer and accelerate's AcceleratedOptimizer look like: ``.optimizer``."""

    def __init__(self, optimizer):
        self.optimizer = optimizer


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_nested_wrappers_are_peeled_and_other_values_pass_through():
    model = _model()
    wrapped = torch.nn.DataParallel(torch.compile(model))  # compiles only when called: cheap here
    assert unwrap_model(wrapped) is model
    state = model.state_dict()
    assert unwrap_model(state) is state and unwrap_model(None) is None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert unwrap_optimizer(_TrainerOptimizer(_TrainerOptimizer(opt))) is opt
    assert unwrap_optimizer(None) is None and unwrap_optimizer("sgd") == "sgd"


def test_a_wrapped_model_dumps_and_watches_under_its_own_names(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = model(torch.ones(2, 4)).sum()
    loss.backward()
    opt.step()
    with lakelog.init(tmp_path, name="wrapped") as run:
        run.dump(torch.nn.DataParallel(torch.compile(model)), _TrainerOptimizer(opt), step=0)
    state, flat, _ = load_dump(tmp_path / "wrapped" / "dumps" / "step=0")
    assert list(state) == list(model.state_dict())
    assert all(torch.equal(state[n], t) for n, t in model.state_dict().items())
    assert {n.rsplit(".", 1)[0] for n in flat} >= {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert not any(n.startswith(("module.", "_orig_mod.")) for n in [*state, *flat])
