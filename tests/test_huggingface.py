"""The Hugging Face integration with a real Trainer: a tiny GPT-2 built from a config (no download), a few CPU steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers  # with accelerate, which its Trainer needs: both come with lakelog[huggingface]

import lakelog
from lakelog.integrations.huggingface import LakelogCallback
from lakelog.read.doctor import doctor
from lakelog.write.fingerprint import fingerprint_hex

STEPS = 4
LAYER = "transformer.h.0.attn.c_attn.weight"
pytestmark = pytest.mark.slow  # every test trains with the transformers Trainer


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def _data() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 100, (32, 8), generator=g)
    return [{"input_ids": t, "labels": t} for t in tokens]


def _train(root: Path, name: str, *, lr: float = 5e-4) -> None:
    args = transformers.TrainingArguments(
        output_dir=str(root / f"hf-{name}"),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        learning_rate=lr,
        logging_steps=1,
        max_grad_norm=100.0,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=_model(),
        args=args,
        train_dataset=_data(),
        callbacks=[LakelogCallback(root / "lake", name=name)],
    )
    trainer.train()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(root, "a")
        _train(root, "b")
        _train(root, "lr2", lr=1e-3)
    finally:
        torch.set_num_threads(threads)
    return root / "lake"


def test_run_records_args_logs_and_telemetry(lake: Path) -> None:
    info = json.loads((lake / "a" / "run.json").read_text())
    assert info["status"] == "finished" and info["seed"] == 0
    assert info["config"]["training_args"]["learning_rate"] == 5e-4
    assert info["config"]["model_config"]["n_embd"] == 32
    assert info["summary"]["global_step"] == STEPS and info["summary"]["train_runtime"] > 0
    con = lakelog.connect(lake / "a")
    steps = dict(con.execute("SELECT name, list(step ORDER BY step) FROM scalars GROUP BY name").fetchall())
    for name in ("loss", "lr", "grad_norm_unclipped", "grad_norm", "lr/group_0"):
        assert steps[name] == list(range(1, STEPS + 1)), name
    assert "train_runtime" not in steps and "learning_rate" not in steps
    kinds = dict(con.execute("SELECT kind, count(DISTINCT step) FROM params GROUP BY kind").fetchall())
    assert (
        kinds["param"] == STEPS and kinds["optim:exp_avg"] == STEPS
    )  # the optimizer behind accelerate's wrapper
    initial = con.execute("SELECT fingerprint FROM params WHERE kind = 'initial:param' AND name = ?", [LAYER])
    assert initial.fetchall() == [(fingerprint_hex(_model().transformer.h[0].attn.c_attn.weight),)]


def test_captures_share_the_step_hf_logs(lake: Path) -> None:
    """HF's grad norm at step k and telemetry's (clipping is off) are the same gradients: same step."""
    con = lakelog.connect(lake / "a")
    rows = con.execute(
        "SELECT a.step, a.value, b.value FROM scalars a JOIN scalars b USING (step) "
        "WHERE a.name = 'grad_norm_unclipped' AND b.name = 'grad_norm' ORDER BY step"
    ).fetchall()
    assert len(rows) == STEPS
    for _, hf, ours in rows:
        assert ours == pytest.approx(hf, rel=1e-4)
    assert len({round(hf, 4) for _, hf, _ in rows}) == STEPS  # distinct per step, so a shift would show


def test_identical_seeded_runs_do_not_diverge_and_a_changed_lr_does(lake: Path) -> None:
    same = lakelog.query("first_divergence", root=lake, run_a="a", run_b="b")
    by_layer = dict(zip(same["layer"].to_list(), same["status"].to_list(), strict=True))
    assert {by_layer[k] for k in ("loss", "gradients", "weights", "optimizer")} == {"same"}
    assert "differs" not in by_layer.values()
    lr = lakelog.query("first_divergence", root=lake, run_a="a", run_b="lr2")
    first = lr.filter(lr["is_first"]).row(0, named=True)
    assert (first["layer"], first["first_step"]) == ("weights", 1)  # same gradients, a bigger first update


def test_doctor_reads_the_callbacks_telemetry(lake: Path) -> None:
    checks = {c.name: c for c in doctor(lake, "a")}
    # HF's two param groups (with and without weight decay) are the groups, as in lr/<group>.
    assert checks["gradients"].status == "pass" and "group_0" in checks["gradients"].summary
    assert "group_1/group_0 = 1" in checks["lr_ratio"].summary
    assert checks["frozen_layers"].status == "pass" and checks["nan_inf"].status == "pass"
