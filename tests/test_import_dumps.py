"""import-dumps on the files users really have: every-N dumps, numpy scalars, bad files among good
ones, decompression bombs and impossible tensor sizes (real torch.save files, real zips)."""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_dumps import Exploit  # unpickling it would create a file

from lakelog.cli.dumps import import_dumps_command
from lakelog.errors import DumpError, InvalidArgumentError
from lakelog.lake.dump_layout import list_dumps
from lakelog.write.dumps.files import load_dump
from lakelog.write.dumps.importer import import_dumps
from lakelog.write.dumps.safeload import load_checkpoint, scan


def _save(path: Path, loss=0.5, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    model = torch.nn.Linear(3, 2)
    torch.save({"model_state_dict": model.state_dict(), "loss": loss, **extra}, path)


def _schedule(folder: Path, epochs: dict[int, list[int]]) -> None:
    for epoch, batches in epochs.items():
        for batch in batches:
            _save(folder / f"epoch_{epoch:03d}" / f"batch_{batch:04d}.pt")


def _steps(root: Path, run: str) -> list[int]:
    return list(list_dumps(root / run).steps)


def test_every_n_dumps_give_evenly_spaced_steps_with_a_warning(tmp_path, caplog):
    within = tmp_path / "within"  # batch_idx % 10 == 0 in every epoch of 47 batches
    _schedule(within, {0: [0, 10, 20, 30, 40], 1: [0, 10, 20, 30, 40], 2: [0, 10]})
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        import_dumps(within, "a", root=tmp_path / "runs")
    assert _steps(tmp_path / "runs", "a") == list(range(0, 120, 10))
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "inferred 50 from dumps every 10 batches" in warning
    assert "epoch 0 batch 40 -> step 40, epoch 1 batch 0 -> step 50" in warning
    assert "--steps-per-epoch" in warning

    globally = tmp_path / "global"  # step % 10 == 0 over epochs of 47 batches: the true steps
    _schedule(globally, {0: [0, 10, 20, 30, 40], 1: [3, 13, 23, 33, 43], 2: [6, 16]})
    import_dumps(globally, "b", root=tmp_path / "runs")
    assert _steps(tmp_path / "runs", "b") == list(range(0, 120, 10))


def test_steps_per_epoch_is_required_when_the_dumps_do_not_say(tmp_path):
    once = tmp_path / "once"
    _schedule(once, {0: [0], 1: [0], 2: [0]})
    with pytest.raises(InvalidArgumentError, match=r"one dump per epoch.*--steps-per-epoch"):
        import_dumps(once, "a", root=tmp_path / "runs")
    uneven = tmp_path / "uneven"
    _schedule(uneven, {0: [0, 10, 25], 1: [0, 10, 25]})
    result = CliRunner().invoke(
        import_dumps_command, [str(uneven), "--run", "b", "--root", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2 and "the gaps between dumps differ (10, 15 batches)" in result.output
    assert "Traceback" not in result.output
    given = CliRunner().invoke(
        import_dumps_command,
        [str(once), "--run", "c", "--root", str(tmp_path / "runs"), "--steps-per-epoch", "7"],
    )
    assert given.exit_code == 0, given.output
    assert _steps(tmp_path / "runs", "c") == [0, 7, 14]


def test_numpy_scalars_and_arrays_load_without_pickle(tmp_path):
    folder = tmp_path / "np"
    _save(
        folder / "epoch_000" / "batch_0000.pt",
        loss=np.float64(0.125),
        acc=np.float32(0.75),
        seen=np.int64(64),
        hist=np.arange(4),
    )
    obj = load_checkpoint(folder / "epoch_000" / "batch_0000.pt")
    assert obj["loss"] == 0.125 and isinstance(obj["hist"], np.ndarray)
    written = import_dumps(folder, "np", root=tmp_path / "runs")
    assert len(written) == 1 and written.skipped == []
    _, _, meta = load_dump(list_dumps(tmp_path / "runs" / "np").steps[0])
    assert (meta["loss"], meta["acc"]) == (0.125, 0.75)


def test_skip_bad_goes_on_and_counts(tmp_path):
    folder = tmp_path / "dumps"
    _schedule(folder, {0: [0, 10, 20, 30]})
    marker = tmp_path / "pwned"
    torch.save({"model_state_dict": {}, "x": Exploit(str(marker))}, folder / "epoch_000" / "batch_0010.pt")
    (folder / "epoch_000" / "batch_0020.pt").write_bytes(b"garbage")
    args = [str(folder), "--run", "r", "--root", str(tmp_path / "runs")]
    stopped = CliRunner().invoke(import_dumps_command, args)
    assert stopped.exit_code == 2 and "batch_0010.pt: refused" in stopped.output
    went_on = CliRunner().invoke(import_dumps_command, [*args[:2], "r2", *args[3:], "--skip-bad"])
    assert went_on.exit_code == 0, went_on.output
    assert "imported 2 dumps" in went_on.output and "skipped 2 file(s)" in went_on.output
    assert "batch_0010.pt: refused" in went_on.output and "batch_0020.pt: not a readable" in went_on.output
    assert _steps(tmp_path / "runs", "r2") == [0, 30] and not marker.exists()


def _deflate(path: Path) -> None:
    """Rewrite a torch.save zip with every entry deflated (torch itself stores them)."""
    with zipfile.ZipFile(path) as src:
        entries = [(info.filename, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name, data in entries:
            out.writestr(name, data)


def test_a_decompression_bomb_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb" / "step_0001.pt"
    path.parent.mkdir()
    torch.save({"model_state_dict": {"w": torch.zeros(16 * 2**20)}}, path)  # 64 MiB of zeros
    _deflate(path)
    assert path.stat().st_size < 2**20
    with pytest.raises(DumpError, match=r"expands from .* to 64\.0 MiB .* over the limit of 32x"):
        scan(path)
    result = CliRunner().invoke(
        import_dumps_command, [str(path.parent), "--run", "r", "--root", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2 and "decompression bomb" in result.output
    small = tmp_path / "small" / "step_0001.pt"
    small.parent.mkdir()
    torch.save({"model_state_dict": {"w": torch.ones(2**20)}}, small)  # 4 MiB, stored
    with pytest.raises(DumpError, match=r"expands to 4\.0 MiB, over the limit of 1\.0 MiB"):
        scan(small, max_bytes=2**20)
    capped = CliRunner().invoke(
        import_dumps_command,
        [str(small.parent), "--run", "s", "--root", str(tmp_path / "runs"), "--max-size", "1M"],
    )
    assert capped.exit_code == 2 and "--max-size" in capped.output
    assert (
        CliRunner()
        .invoke(import_dumps_command, [str(small.parent), "--run", "s", "--root", str(tmp_path / "runs")])
        .exit_code
        == 0
    )


class _Declared:
    """Pickles as a tensor whose storage declares ``numel`` elements (whatever the file holds)."""

    def __init__(self, numel: int, size: tuple[int, ...]) -> None:
        self.numel, self.size = numel, size

    def __reduce__(self):
        return (
            torch._utils._rebuild_tensor_v2,
            (self, 0, self.size, (1,) * len(self.size), False, OrderedDict()),
        )


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Declared) and getattr(self, "_inside", False):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        if isinstance(obj, _Declared):
            self._inside = True
        return None


def _crafted(path: Path, numel: int, size: tuple[int, ...]) -> None:
    """A real torch.save zip whose data.pkl is replaced by one declaring a storage of ``numel`` floats."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": {"w": torch.ones(4)}}, path)
    with zipfile.ZipFile(path) as src:
        entries = [(info.filename, src.read(info)) for info in src.infolist()]
    import io

    buffer = io.BytesIO()
    # the view's reduce references the same object as its storage; the pickler turns the inner one into a pid
    declared = _Declared(numel, size)
    pickler = _Pickler(buffer, protocol=2)
    pickler.dump({"model_state_dict": OrderedDict(w=declared)})
    with zipfile.ZipFile(path, "w") as out:
        for name, data in entries:
            out.writestr(name, buffer.getvalue() if name.endswith("data.pkl") else data)


def test_impossible_tensor_sizes_are_refused_with_a_clear_error(tmp_path):
    huge = tmp_path / "huge" / "step_0001.pt"
    _crafted(huge, 2**40, (2**40,))  # 4 TiB of floats declared, 16 bytes held
    with pytest.raises(DumpError, match=r"storage 0 declares 4\.0 TiB .* but the file holds 16 B"):
        load_checkpoint(huge)
    result = CliRunner().invoke(
        import_dumps_command, [str(huge.parent), "--run", "r", "--root", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2 and "declares 4.0 TiB" in result.output and "Traceback" not in result.output
    view = tmp_path / "view" / "step_0001.pt"
    _crafted(view, 4, (2**20,))  # a 4-element storage viewed as a million elements
    with pytest.raises(
        DumpError, match=r"shape \[1048576\] reaches element 1048575 of storage 0, which holds 4"
    ):
        load_checkpoint(view)


def test_legacy_torch_save_files_are_scanned_and_loaded(tmp_path):
    path = tmp_path / "legacy" / "step_0003.pt"
    path.parent.mkdir()
    state = {"w": torch.arange(6.0)}
    torch.save(
        {"model_state_dict": state, "loss": np.float64(0.5)}, path, _use_new_zipfile_serialization=False
    )
    assert scan(path) == 6 * 4  # the bytes its one storage declares
    assert torch.equal(load_checkpoint(path)["model_state_dict"]["w"], state["w"])
    path.write_bytes(path.read_bytes()[:-10])  # a truncated legacy file
    with pytest.raises(DumpError, match=r"not a readable torch\.save checkpoint|refused"):
        load_checkpoint(path)
