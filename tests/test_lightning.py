"""The Lightning integration with a real Trainer: a tiny LightningModule trained a few steps on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lakelog
from lakelog.integrations.lightning import LakelogCallback, LakelogLogger
from lakelog.read.doctor import doctor
from lakelog.write.fingerprint import fingerprint_hex

STEPS, BATCH, LR = 5, 4, 0.1


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(32, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long(), torch.arange(32))


class Tiny(pl.LightningModule):
    """The training_step contract: loss, logits, labels, keys and sample_ids in the returned dict."""

    def __init__(self, lr: float = LR, frozen_bias: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(6, 3)

    def training_step(self, batch, batch_idx):
        x, y, ids = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        return {
            "loss": loss,
            "logits": logits,
            "labels": y,
            "keys": {"sample": ids},
            "sample_ids": ids,
            "sample_loss": F.cross_entropy(logits, y, reduction="none"),
        }

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        if self.hparams.frozen_bias:  # the bug doctor should find: a parameter left out of the optimizer
            return torch.optim.SGD([self.net.weight], lr=self.hparams.lr)
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _fit(
    root: Path,
    name: str,
    *,
    lr: float = LR,
    logger: bool = True,
    watch_every: int | None = 1,
    frozen_bias: bool = False,
) -> None:
    pl.seed_everything(0, verbose=False)
    model = Tiny(lr, frozen_bias)  # built right after seeding, as the gradient check below rebuilds it
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=LakelogLogger(root, name=name) if logger else False,
        callbacks=[LakelogCallback(root, name=name, watch_every=watch_every)],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        val_check_interval=STEPS,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, DataLoader(_data(), batch_size=BATCH), DataLoader(_data(), batch_size=BATCH))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lightning")
    torch.set_num_threads(1)
    _fit(root, "a")
    _fit(root, "b")
    _fit(root, "lr10", lr=LR * 10)
    _fit(root, "callback_only", logger=False)
    _fit(root, "frozen", frozen_bias=True)
    return root


def test_importing_lakelog_does_not_import_lightning() -> None:
    code = (
        "import sys, lakelog, lakelog.integrations; "
        "assert not {'lightning', 'pytorch_lightning', 'transformers'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_callback_and_logger_write_one_run(lake: Path) -> None:
    con = lakelog.connect(lake)
    info = json.loads((lake / "a" / "run.json").read_text())
    assert info["status"] == "finished" and info["seed"] == 0 and info["config"]["lr"] == LR
    steps = list(range(STEPS))
    # self.log values arrive through the logger, at Lightning's steps; the callback adds lr per group.
    loss_steps = con.execute(
        "SELECT list(step ORDER BY step) FROM scalars WHERE run = 'a' AND name = 'train_loss'"
    ).fetchall()
    assert loss_steps == [(steps,)]
    assert con.execute("SELECT count(*) FROM scalars WHERE run = 'a' AND name = 'val_loss'").fetchall() == [
        (1,)
    ]
    assert con.execute(
        "SELECT DISTINCT value FROM scalars WHERE run = 'a' AND name = 'lr/group_0'"
    ).fetchall() == [(LR,)]
    # predictions and batches from the training_step dict, in DataLoader order.
    preds = con.execute(
        "SELECT step, list(sample ORDER BY sample_idx), count(loss), count(label) FROM predictions WHERE run = 'a' "
        "GROUP BY step ORDER BY step"
    ).fetchall()
    assert preds == [(s, list(range(s * BATCH, (s + 1) * BATCH)), BATCH, BATCH) for s in steps]
    batches = con.execute(
        "SELECT step, sample_ids, input_fingerprint IS NOT NULL FROM batches WHERE run = 'a' ORDER BY step"
    )
    assert batches.fetchall() == [
        (s, [str(i) for i in range(s * BATCH, (s + 1) * BATCH)], True) for s in steps
    ]
    # callback_metrics go to scalars only when no LakelogLogger takes them: no duplicates here.
    dup = con.execute(
        "SELECT count(*) FROM scalars WHERE run = 'a' AND name = 'train_loss' GROUP BY step HAVING count(*) > 1"
    )
    assert dup.fetchall() == []


def test_watch_captures_this_steps_gradients_and_updated_weights(lake: Path) -> None:
    """Lightning runs backward inside optimizer.step(closure): the capture must still see step s's gradients."""
    pl.seed_everything(0, verbose=False)
    model = Tiny()
    x, y, _ = _data()[:BATCH]
    F.cross_entropy(model.net(x), y).backward()
    grad = fingerprint_hex(model.net.weight.grad)
    model.configure_optimizers().step()
    con = lakelog.connect(lake / "a")
    row = con.execute(
        "SELECT grad_fingerprint, fingerprint FROM params WHERE step = 0 AND kind = 'param' AND name = 'net.weight'"
    ).fetchall()
    assert row == [(grad, fingerprint_hex(model.net.weight))]
    per_step = con.execute(
        "SELECT count(DISTINCT step) FROM params WHERE kind = 'param' AND grad_norm IS NOT NULL"
    )
    assert per_step.fetchall() == [(STEPS,)]


def test_seeded_runs_are_identical_and_a_changed_lr_is_found(lake: Path) -> None:
    same = lakelog.query("first_divergence", root=lake, run_a="a", run_b="b", loss_name="train_loss")
    assert "differs" not in same["status"].to_list()
    assert set(
        same.filter(same["layer"].is_in(["batch_order", "predictions", "loss", "gradients", "weights"]))[
            "status"
        ].to_list()
    ) == {"same"}
    lr = lakelog.query("first_divergence", root=lake, run_a="a", run_b="lr10", loss_name="train_loss")
    first = lr.filter(lr["is_first"]).row(0, named=True)
    assert (first["layer"], first["first_step"]) == ("weights", 0)  # same batch, same gradient, bigger update


def test_callback_alone_logs_callback_metrics(lake: Path) -> None:
    con = lakelog.connect(lake / "callback_only")
    names = dict(con.execute("SELECT name, list(step ORDER BY step) FROM scalars GROUP BY name").fetchall())
    assert names["train_loss"] == list(range(STEPS))
    assert names["val_loss"] == [STEPS - 1]
    assert json.loads((lake / "callback_only" / "run.json").read_text())["summary"]["val_loss"] > 0


def test_logger_alone_opens_and_finishes_its_run(tmp_path: Path) -> None:
    pl.seed_everything(1, verbose=False)
    logger = LakelogLogger(tmp_path, name="logger_only")
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=logger,
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), DataLoader(_data(), batch_size=BATCH))
    assert logger.version == "logger_only" and logger.experiment.closed
    info = json.loads((tmp_path / "logger_only" / "run.json").read_text())
    assert (
        info["status"] == "finished"
        and info["config"] == {"lr": LR, "frozen_bias": False}
        and info["seed"] == 1
    )
    con = lakelog.connect(tmp_path)
    assert con.execute(
        "SELECT list(step ORDER BY step) FROM scalars WHERE name = 'train_loss'"
    ).fetchall() == [([0, 1],)]


def test_a_logger_joins_rank_zeros_run_on_another_rank_with_its_writer_options(tmp_path: Path) -> None:
    with lakelog.init(tmp_path, name="shared", world_size=2) as rank0:
        rank0.log({"loss": 1.0}, step=0)
    logger = LakelogLogger(tmp_path, flush_every_s=3.0, tags={"team": "a"})  # tags: rank 0's alone
    run = logger.join(str(tmp_path), "shared", rank=1, world_size=2)
    try:
        assert logger.experiment is run and (run.name, run.rank, run.world_size) == ("shared", 1, 2)
        run.log({"loss": 2.0}, step=0)
    finally:
        run.finish()
    rows = lakelog.connect(tmp_path).execute("SELECT rank, value FROM scalars ORDER BY rank").fetchall()
    assert rows == [(0, 1.0), (1, 2.0)]


def test_doctor_reads_the_callbacks_telemetry(lake: Path) -> None:
    healthy = {c.name: c for c in doctor(lake, "a")}
    assert healthy["gradients"].status == "pass" and "group_0" in healthy["gradients"].summary
    assert healthy["frozen_layers"].status == "pass" and healthy["nan_inf"].status == "pass"
    frozen = {c.name: c for c in doctor(lake, "frozen")}
    assert frozen["frozen_layers"].status == "warn"
    evidence = frozen["frozen_layers"].evidence
    assert evidence.filter(evidence["status"] != "ok")["name"].to_list() == ["net.bias"]
