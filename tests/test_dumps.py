"""Full-state dumps: written off the training thread, read back bit for bit, imported from torch.save safely."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import duckdb
import pytest
import torch
from click.testing import CliRunner

import lakelog
from lakelog.cli.dumps import import_dumps_command
from lakelog.errors import DumpError, InvalidArgumentError
from lakelog.lake.dump_layout import list_dumps
from lakelog.write.dumps.importer import import_dumps
from lakelog.write.dumps.writer import DumpWriter, load_dump, optimizer_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


class Net(torch.nn.Module):
    """Conv, BatchNorm (buffers, an int counter), a head tied to the embedding, a non-contiguous buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(12, 6)
        self.conv = torch.nn.Conv1d(6, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm1d(6)
        self.head = torch.nn.Linear(6, 12, bias=False)
        self.head.weight = self.emb.weight  # tied
        self.register_buffer("proj", torch.arange(12.0).reshape(3, 4).t())  # a transposed view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(self.emb(x).transpose(1, 2))).mean(2)
        return self.head(h)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, *, run=None, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x, y = torch.randint(0, 12, (8, 5), generator=g), torch.randint(0, 12, (8,), generator=g)
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if run is not None:
            run.dump(
                model,
                optimizer,
                step=step,
                epoch=step // 2,
                loss=loss,
                acc=(out.argmax(1) == y).float().mean(),
            )


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.AdamW(p, lr=1e-2),
    ],
    ids=["sgd-momentum", "adamw"],
)
def test_round_trip_is_bit_exact_and_resumes_identically(tmp_path, make_opt):
    torch.manual_seed(0)
    model, opt = Net(), None
    opt = make_opt(model.parameters())
    with lakelog.init(tmp_path, name="a") as run:
        train(model, opt, 3, run=run)
    state, flat, meta = load_dump(tmp_path / "a" / "dumps" / "step=2")
    reference = model.state_dict()
    assert list(state) == list(reference)
    for name, tensor in reference.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
    assert state["head.weight"] is state["emb.weight"]  # the tie comes back as one tensor
    assert meta["ties"] == {"head.weight": "emb.weight"}
    assert (
        (meta["step"], meta["epoch"]) == (2, 1) and isinstance(meta["loss"], float) and 0 <= meta["acc"] <= 1
    )
    assert any(k.endswith(("momentum_buffer", "exp_avg")) for k in flat) and "conv.weight" in {
        k.rsplit(".", 1)[0] for k in flat
    }

    # The restored model and optimizer take the next step exactly as the originals do.
    torch.manual_seed(0)
    clone = Net()
    clone.load_state_dict(state)
    clone_opt = make_opt(clone.parameters())
    clone_opt.load_state_dict(optimizer_state_dict(flat, meta))
    train(model, opt, 1, seed=7)
    train(clone, clone_opt, 1, seed=7)
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_dtypes_and_index_table(tmp_path, caplog):
    model = torch.nn.Linear(4, 3).to(torch.bfloat16)
    model.register_buffer("fp16", torch.randn(5).half())
    with caplog.at_level(logging.WARNING, logger="lakelog"), lakelog.init(tmp_path, name="a") as run:
        run.dump(model, step=0, loss=1.5)
        assert "each dump of run 'a' is about" in caplog.text  # said before the first file lands
        run.dump(model, step=10, loss=torch.tensor(0.5))
    state, flat, meta = load_dump(tmp_path / "a" / "dumps" / "step=10" / "model.safetensors")
    assert state["weight"].dtype == torch.bfloat16 and torch.equal(state["weight"], model.weight)
    assert state["fp16"].dtype == torch.float16 and torch.equal(state["fp16"], model.fp16)
    assert flat == {} and meta["loss"] == 0.5 and meta["acc"] is None
    rows = duckdb.sql(
        f"SELECT step, path, loss, acc, n_tensors FROM '{tmp_path}/a/dump_index/**/*.parquet' ORDER BY step"
    ).fetchall()
    assert rows == [
        (0, "dumps/step=0/model.safetensors", 1.5, None, 3),
        (10, "dumps/step=10/model.safetensors", 0.5, None, 3),
    ]
    assert not list((tmp_path / "a").rglob("*.tmp"))  # every file was renamed into place


def test_every_keep_first_keep_every(tmp_path):
    model = torch.nn.Linear(2, 2)
    with lakelog.init(tmp_path, name="a") as run:
        run.configure_dumps(every=5, keep_first=2, keep_every=3)
        for step in range(60):
            run.dump(model, step=step)
    # every=5 -> dumps numbered step // 5; the first two kept, then every third of the rest
    assert list(list_dumps(tmp_path / "a").steps) == [0, 5, 10, 25, 40, 55]
    writer = DumpWriter(run, keep_first=3)
    assert [writer.wanted(s) for s in range(5)] == [True, True, True, False, False]
    with pytest.raises(InvalidArgumentError, match="every: expected a positive int"):
        DumpWriter(run, every=0)


def test_background_failure_and_corruption_are_reported(tmp_path):
    model = torch.nn.Linear(3, 3)
    run = lakelog.init(tmp_path, name="a")
    (run.path / "dumps").write_text("a file where the dumps folder should be")
    run.dump(model, step=0)
    with pytest.raises(DumpError, match="writing a dump failed"):
        run.finish()

    with lakelog.init(tmp_path, name="b") as run:
        run.dump(model, step=0)
    path = tmp_path / "b" / "dumps" / "step=0" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits of the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(DumpError, match="does not match its checksum"):
        load_dump(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DumpError, match=r"model\.safetensors: not a readable safetensors dump"):
        load_dump(path)
    with pytest.raises(DumpError, match="no such dump file"):
        load_dump(tmp_path / "b" / "dumps" / "step=1")


def _seed_checkpoints(folder, model, opt, epochs=2, batches=(0, 10, 20)):
    """The seeds' layout: batch_dumps/epoch_XXX/batch_XXXX.pt with model/optimizer state, loss and acc."""
    saved = {}
    for epoch in range(epochs):
        for batch in batches:
            train(model, opt, 1, seed=epoch * 100 + batch)
            path = folder / f"epoch_{epoch:03d}" / f"batch_{batch:04d}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": opt.state_dict(),
                    "loss": torch.tensor(0.25),
                    "acc": 0.75,
                },
                path,
            )
            saved[(epoch, batch)] = {k: v.clone() for k, v in model.state_dict().items()}
    return saved


def test_import_seed_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(12, 6), torch.nn.Flatten(), torch.nn.Linear(30, 12))
    saved = _seed_checkpoints(
        tmp_path / "batch_dumps", model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    )
    result = CliRunner().invoke(
        import_dumps_command,
        [str(tmp_path / "batch_dumps"), "--run", "ref", "--root", str(tmp_path / "runs")],
    )
    assert result.exit_code == 0, result.output
    listing = list_dumps(tmp_path / "runs" / "ref")
    assert list(listing.steps) == [0, 10, 20, 30, 40, 50]  # dumps every 10 batches: 30 per epoch
    state, flat, meta = load_dump(listing.steps[40])
    assert all(torch.equal(state[k], v) for k, v in saved[(1, 10)].items())
    assert (meta["import_epoch"], meta["import_batch"], meta["source"]) == (
        "1",
        "10",
        "epoch_001/batch_0010.pt",
    )
    assert (meta["loss"], meta["acc"], meta["epoch"]) == (0.25, 0.75, 1)
    # Saved optimizer state knows parameters by position; the import names them as a live run would.
    assert set(flat) == {f"{name}.momentum_buffer" for name, _ in model.named_parameters()}

    with pytest.raises(DumpError, match="already has dumps at steps"):
        import_dumps(tmp_path / "batch_dumps", "ref", root=tmp_path / "runs")
    written = import_dumps(tmp_path / "batch_dumps", "ref2", root=tmp_path / "runs", steps_per_epoch=100)
    assert [p.name for p in written] == ["step=0", "step=10", "step=20", "step=100", "step=110", "step=120"]


class Exploit:
    """Unpickling this would create a file: proof that a refused file never ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_import_refuses_pickle_only_files(tmp_path):
    folder = tmp_path / "batch_dumps" / "epoch_000"
    folder.mkdir(parents=True)
    torch.save({"model_state_dict": {"w": torch.ones(2)}, "loss": 1.0}, folder / "batch_0000.pt")
    marker = tmp_path / "pwned"
    torch.save(
        {"model_state_dict": {"w": torch.ones(2)}, "extra": Exploit(str(marker))}, folder / "batch_0010.pt"
    )
    result = CliRunner().invoke(
        import_dumps_command, [str(tmp_path / "batch_dumps"), "--run", "r", "--root", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2
    assert (
        "batch_0010.pt: refused: loading it needs pickle" in result.output
        and "Unsupported global" in result.output
    )
    assert not marker.exists()  # never executed
    (folder / "batch_0010.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DumpError, match=r"batch_0010\.pt: not a readable torch\.save checkpoint"):
        import_dumps(tmp_path / "batch_dumps", "r2", root=tmp_path / "runs")


def test_compare_side_leaves_torch_unimported(tmp_path):
    with lakelog.init(tmp_path, name="a") as run:
        run.dump(torch.nn.Linear(2, 2).to(torch.bfloat16), step=0)
    script = textwrap.dedent(f"""
        import sys
        from lakelog.read.dumps.compare import compare_dumps
        import lakelog.cli.dumps
        r = compare_dumps({str(tmp_path / "a")!r}, {str(tmp_path / "a")!r}, progress=False)
        assert r.summary["identical"], r.summary
        assert "torch" not in sys.modules, "compare-dumps imported torch"
    """)
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dump_is_copied_without_blocking_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = Net().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with lakelog.init(tmp_path, name="gpu") as run:
        train(model, opt, 2, run=run)
        train(model, opt, 1, seed=9)  # changes the weights while the host copies may still be in flight
    state, flat, meta = load_dump(tmp_path / "gpu" / "dumps" / "step=1")
    assert state["head.weight"] is state["emb.weight"] and meta["step"] == 1 and flat
    assert all(t.device.type == "cpu" for t in state.values())
