"""Logging must not change training: same weights, same RNG stream, same modes, with or without lakelog."""

from __future__ import annotations

import torch
from torch import nn

import lakelog


def _train(root=None, steps=12):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = torch.randn(96, 6)
    labels = torch.randint(0, 3, (96,))
    run = lakelog.init(root, name="with") if root is not None else None
    for step in range(steps):
        idx = torch.randperm(96)[:16]
        x, y = data[idx], labels[idx]
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if run is not None:
            run.log_predictions(logits, step=step, labels=y, keys={"sample": idx})
            run.log({"loss": loss, "lr": opt.param_groups[0]["lr"]}, step=step)
            run.log_batch(step=step, sample_ids=idx, inputs=x)
            assert model.training
    if run is not None:
        run.finish()
    return model, torch.get_rng_state()


def test_logging_leaves_training_bit_identical(tmp_path):
    plain, rng_plain = _train()
    logged, rng_logged = _train(tmp_path)
    plain_state, logged_state = plain.state_dict(), logged.state_dict()
    assert plain_state.keys() == logged_state.keys()
    for key in plain_state:
        assert torch.equal(plain_state[key], logged_state[key]), key
    assert torch.equal(rng_plain, rng_logged)
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM predictions").fetchone() == (12 * 16,)


def test_logged_tensors_are_copies(tmp_path):
    with lakelog.init(tmp_path, name="copy") as run:
        logits = torch.zeros(2, 2)
        run.log_predictions(logits, step=0)
        logits += 5  # a loop that reuses its buffer must not change what was logged
    rows = lakelog.connect(tmp_path).execute("SELECT logits FROM predictions").fetchall()
    assert [r[0] for r in rows] == [[0.0, 0.0], [0.0, 0.0]]
