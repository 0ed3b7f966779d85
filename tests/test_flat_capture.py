"""The flat-copy path of a capture (small CPU tensors copied in one call per dtype, read on the writer
thread): fingerprints bit for bit those of ``fingerprint``, statistics those of the per-tensor path,
update norms against float64 references across layout changes, and what a real run writes when the
optimizer's state is replaced or grows keys."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import lakelog
from lakelog.write.fingerprint import fingerprint_hex
from lakelog.write.telemetry.flat_cpu import FlatCopy, Plans
from lakelog.write.telemetry.previous_weights import Previous
from lakelog.write.telemetry.summaries import tensor_stats

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def mixed() -> list[torch.Tensor | None]:
    """Every dtype the flat path takes, odd shapes and views, NaN payloads, and rows it leaves to the
    per-tensor path (bfloat16, complex, large, empty, missing)."""
    g = torch.Generator().manual_seed(0)
    payload = torch.tensor([1.0, math.nan, -0.0, math.inf]).view(torch.int32)
    payload[1] |= 5  # a NaN with a payload: the bits, not the value, are fingerprinted
    base = torch.randn(4, 5, generator=g)
    return [
        torch.randn(3, 4, generator=g),
        torch.tensor(2.5),  # 0-dim
        base.t(),  # not contiguous
        torch._neg_view(torch.randn(6, generator=g)),  # a negative view: its logical values count
        payload.view(torch.float32),
        torch.randn(7, generator=g).double(),
        torch.randn(9, generator=g).half(),
        None,
        torch.arange(12, dtype=torch.int64).reshape(3, 4),
        torch.tensor([3, -1, 7], dtype=torch.int32),
        torch.tensor([1, 2], dtype=torch.int16),
        torch.tensor([-3, 4], dtype=torch.int8),
        torch.tensor([250, 3], dtype=torch.uint8),
        torch.tensor([True, False, True]),
        torch.randn(5, generator=g).bfloat16(),
        torch.randn(3, generator=g, dtype=torch.complex64),
        torch.randn(70_000, generator=g),  # large: reduced in place
        torch.empty(0),
    ]


def test_flat_fingerprints_are_those_of_fingerprint_bit_for_bit() -> None:
    ts = mixed()
    plan = Plans().get("w", ts, True)
    assert len(plan.order) == 13 and sorted(plan.rest) == [14, 15, 16, 17]  # bf16, complex, large, empty
    copy = FlatCopy(plan, ts)
    by_row = dict(zip(plan.order, copy.fingerprints(), strict=True))
    for i in plan.order:
        assert by_row[i] == fingerprint_hex(ts[i]), (i, ts[i].dtype)  # type: ignore[arg-type]


def test_flat_statistics_are_those_of_the_per_tensor_path() -> None:
    ts = mixed()
    ts[0][1, 2] = math.inf  # type: ignore[index]
    ts[5][3] = math.nan  # type: ignore[index]
    plan = Plans().get("w", ts, True)
    copy = FlatCopy(plan, ts)
    for kw in (
        {"full": True, "minmax": True},
        {"full": False, "minmax": True},
        {"full": False, "minmax": False},
    ):
        flat = copy.raw(**kw)
        for j, i in enumerate(plan.order):
            t = ts[i]
            alone, _ = tensor_stats([t.clone() if t.is_neg() else t], **kw)  # type: ignore[union-attr,list-item]
            np.testing.assert_allclose(
                flat[j], np.asarray(alone)[0], rtol=1e-12, equal_nan=True, err_msg=f"{i} {kw}"
            )


def test_a_flat_copy_is_a_snapshot_and_its_buffers_are_reused() -> None:
    ts = [torch.ones(4), torch.zeros(3)]
    plan = Plans().get("g", ts, True)
    first = FlatCopy(plan, ts)
    expected = [fingerprint_hex(t) for t in ts]
    ts[0].add_(1)  # the training step goes on
    assert first.fingerprints() == expected
    buffers = first.parts[0].data_ptr()
    del first  # nothing holds it any more: its buffers go back to the plan
    second = FlatCopy(plan, ts)
    assert second.parts[0].data_ptr() == buffers
    assert second.fingerprints() == [fingerprint_hex(t) for t in ts]
    assert second.raw(full=True, minmax=True)[0, 0] == pytest.approx(4.0)  # ||[2, 2, 2, 2]||


def _update(prev: Previous, plans: Plans, names: list[str], ts: list[torch.Tensor]) -> tuple[Any, Any]:
    copy = FlatCopy(plans.get("w", ts, True), ts)
    update = prev.update_capture(names, ts, copy)
    assert update is not None
    return update.columns(None if update.norms is None else update.norms.numpy(), len(ts)), copy


def test_update_norms_against_float64_references_across_changes() -> None:
    g = torch.Generator().manual_seed(0)
    names = ["a", "b", "c"]
    ts = [torch.randn(5, generator=g), torch.randn(2, 3, generator=g), torch.randn(70_000, generator=g)]
    prev, plans = Previous("cpu"), Plans()
    assert _update(prev, plans, names, ts)[0] is None  # the first capture has nothing to compare with
    before = [t.clone() for t in ts]
    for t in ts:
        t.add_(torch.randn(t.shape, generator=g) * 1e-3)
    (norms, known), _ = _update(prev, plans, names, ts)
    expected = [float((t.double() - b.double()).norm()) for t, b in zip(ts, before, strict=True)]
    assert known.tolist() == [True, True, True]
    assert norms[:2].tolist() == pytest.approx(expected[:2], rel=1e-12)  # flat: float64 differences
    assert norms[2] == pytest.approx(expected[2], rel=1e-6)  # large, in place: float32 differences
    # A tensor changes shape (a new plan): it has no previous value; the others are matched by name.
    before = [t.clone() for t in ts]
    ts[1] = torch.randn(4, generator=g)
    ts[0].add_(1.0)
    (norms, known), _ = _update(prev, plans, names, ts)
    assert known.tolist() == [True, False, True]
    assert norms[0] == pytest.approx(float((ts[0].double() - before[0].double()).norm()), rel=1e-12)
    assert norms[2] == 0.0
    # Renamed rows (a new layout): matched by name, not by position.
    (norms, known), _ = _update(prev, plans, ["x", "b", "c"], ts)
    assert known.tolist() == [False, True, True]


def _optim_fps(root: Path) -> dict[tuple[int, str], str]:
    con = lakelog.connect(root)
    rows = con.execute(
        "SELECT step, name, fingerprint FROM params WHERE kind = 'optim:momentum_buffer'"
    ).fetchall()
    return {(s, n): fp for s, n, fp in rows}


def test_replaced_and_growing_optimizer_state_is_read_at_each_capture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run = lakelog.init(tmp_path, name="state")
    run.watch(model, opt, every=1)
    x = torch.randn(8, 4)
    expected: dict[tuple[int, str], str] = {}
    for step in range(4):
        run.log({"loss": 0.0}, step=step)
        opt.zero_grad()
        model(x).square().mean().backward()
        if step == 2:  # a checkpoint restored mid-run: new state tensors, other values
            state = opt.state_dict()
            for entry in state["state"].values():
                entry["momentum_buffer"] = torch.full_like(entry["momentum_buffer"], 0.5)
            opt.load_state_dict(state)
        opt.step()
        for name, p in model.named_parameters():
            expected[(step, name)] = fingerprint_hex(opt.state[p]["momentum_buffer"])
    run.finish()
    assert _optim_fps(tmp_path) == expected  # step 0 already has the momentum buffer the step created


def test_captures_queued_together_are_built_in_one_batch_with_every_row(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    run = lakelog.init(tmp_path, name="batched")
    watcher = run.watch(model, opt, every=1)
    x = torch.randn(8, 4)
    for step in range(12):
        run.log({"loss": 0.0}, step=step)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    run.finish()
    con = lakelog.connect(tmp_path)
    per_step = con.execute(
        "SELECT step, count(*), count(DISTINCT name || kind) FROM params GROUP BY step ORDER BY step"
    ).fetchall()
    n = len(list(model.parameters())) * 4 + len(list(model.buffers()))  # + Adam's step, exp_avg, exp_avg_sq
    assert [s for s, _, _ in per_step] == list(range(12))
    assert all(rows == distinct for _, rows, distinct in per_step)  # no row written twice
    assert [rows for _, rows, _ in per_step] == [n + 9] + [n] * 11  # step 0 also has the initial weights
    digests = con.execute(
        "SELECT step, n_tensors FROM param_digests WHERE capture = 'step' ORDER BY step"
    ).fetchall()
    assert [s for s, _ in digests] == list(range(12)) and watcher.error is None


def test_flat_copies_read_together_give_the_rows_read_one_capture_at_a_time(tmp_path, monkeypatch) -> None:
    """The flat copies of the captures a batch builds are reduced together, in runs of at most
    FLAT_VALUES values: every row is what reading each capture alone gives, bit for bit."""
    from lakelog.write.telemetry import rows as rows_mod

    def train(name: str) -> None:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        run = lakelog.init(tmp_path, name=name)
        run.watch(model, opt, every=1)
        x = torch.randn(8, 4)
        for _ in range(10):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        run.finish()

    train("together")
    monkeypatch.setattr(rows_mod, "FLAT_VALUES", 1)  # every capture's copies read in a run of its own
    train("alone")
    con = lakelog.connect(tmp_path)
    columns = "step, name, kind, norm, mean, std, min, max, absmax, grad_norm, grad_absmax, fingerprint"
    together, alone = (
        con.execute(f"SELECT {columns} FROM params WHERE run = ? ORDER BY step, name, kind", [run]).fetchall()
        for run in ("together", "alone")
    )
    assert len(together) > 100 and together == alone


def test_a_builder_the_writer_skipped_is_built_with_the_next() -> None:
    from lakelog.write.telemetry.batch import Batch
    from lakelog.write.telemetry.rows import Capture

    class Layout:  # only identity matters to the queue
        pass

    batch, layout = Batch(), Layout()
    captures = [Capture(step=s, pack=None) for s in range(3)]  # type: ignore[arg-type]
    builders = [batch.builder(layout, c, None, epoch=0) for c in captures]  # type: ignore[arg-type]
    taken = batch.take(captures[1])  # the first builder never ran: its capture comes along
    assert [c.step for _, c, _ in taken] == [0, 1, 2]
    assert batch.take(captures[2]) == [] and builders[2]() == {}
