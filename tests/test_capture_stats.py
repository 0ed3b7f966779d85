"""Capture statistics on their own: each path (small tensors reduced together, large ones in place, the
accelerator path) against float64 torch references, overflow-safe norms through a real training run,
and the update norm against the weights it measures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lakelog
from lakelog.write.telemetry import stats_cpu
from lakelog.write.telemetry.summaries import finish_stats, tensor_stats

SMALL = stats_cpu.SMALL


def reference(t: torch.Tensor) -> dict[str, float]:
    """What a weights row must say, from a float64 copy (min/max/absmax over the finite values)."""
    d = t.detach().double().reshape(-1)
    finite = d[torch.isfinite(d)]
    nans, infs = int(torch.isnan(d).sum()), int(torch.isinf(d).sum())
    return {
        "norm": float(d.norm()),
        "mean": float(d.mean()),
        "std": float(d.std()) if d.numel() > 1 else math.nan,
        "min": float(finite.min()) if finite.numel() else math.nan,
        "max": float(finite.max()) if finite.numel() else math.nan,
        "absmax": math.nan if nans else math.inf if infs else float(d.abs().max()),
        "nan_count": nans,
        "inf_count": infs,
    }


def columns(ts: list[torch.Tensor], **kw: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    raw, kinds = tensor_stats(ts, **kw)
    host = raw if isinstance(raw, np.ndarray) else raw.cpu().numpy()
    return finish_stats(host, kinds, [t.numel() for t in ts], **kw)


def tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    with_bad = torch.randn(SMALL + 10, generator=g)
    with_bad[[3, 77]] = torch.tensor([math.nan, math.inf])
    only_inf = torch.full((SMALL + 1,), -math.inf)
    small_bad = torch.tensor([1.0, math.nan, -math.inf, -2.0])
    near_one = 1 + 1e-4 * torch.randn(256, generator=g)  # a BatchNorm weight: cancellation territory
    return [
        torch.randn(7, generator=g),
        torch.randn(SMALL, generator=g),  # the largest small tensor
        torch.randn(300, 301, generator=g),  # large
        with_bad,
        only_inf,
        small_bad,
        near_one,
        torch.randn(SMALL + 5, generator=g).to(torch.bfloat16),
        torch.randn(40, generator=g).double(),
        torch.arange(12, dtype=torch.int64).reshape(3, 4),
        torch.tensor(2.5),
    ]


def check(cols: dict[str, np.ndarray], valid: dict[str, np.ndarray], ts: list[torch.Tensor]) -> None:
    for j, t in enumerate(ts):
        ref = reference(t)
        for col, expected in ref.items():
            got = cols[col][j]
            if col in ("min", "max") and math.isnan(expected):
                assert not valid[col][j], (j, col)
                continue
            if col == "std" and t.numel() > SMALL and t.dtype == torch.bfloat16:
                expected_rel = 1e-3
            else:
                expected_rel = 1e-6 if col != "std" or t.numel() <= SMALL else 1e-4
            assert got == pytest.approx(expected, rel=expected_rel, nan_ok=True), (j, col, got, expected)


def test_cpu_weights_match_float64_references() -> None:
    ts = tensors()
    cols, valid = columns(ts, full=True)
    check(cols, valid, ts)
    # Two-pass variance where cancellation bites: exact to float64 rounding.
    near_one = ts[6].double()
    assert cols["std"][6] == pytest.approx(float(near_one.std()), rel=1e-9)


def test_cpu_gradients_norm_and_absmax_propagate_nan() -> None:
    ts = tensors()
    cols, valid = columns(ts, full=False, minmax=True)
    for j, t in enumerate(ts):
        d = t.double()
        assert cols["norm"][j] == pytest.approx(float(d.norm()), rel=1e-6, nan_ok=True)
        assert cols["absmax"][j] == pytest.approx(float(d.abs().max()), rel=1e-6, nan_ok=True)
        assert valid["absmax"][j] and not valid["mean"][j] and not valid["nan_count"][j]


@pytest.mark.parametrize("numel", [100, SMALL + 100], ids=["small", "large"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_norms_of_finite_values_never_overflow(numel: int, dtype: torch.dtype) -> None:
    big = 1.8e26 if dtype != torch.float16 else 6e4  # float16's largest values square past its range too
    t = torch.full((numel,), big, dtype=dtype)
    expected = float(t.double().norm())
    assert math.isfinite(expected)
    for kw in ({"full": True}, {"full": False}, {"full": False, "minmax": False}):
        cols, _ = columns([t], **kw)
        assert cols["norm"][0] == pytest.approx(expected, rel=1e-6), kw
    cols, _ = columns([t], full=True)
    assert cols["mean"][0] == pytest.approx(float(t.double().mean()), rel=1e-6)


def test_huge_but_finite_training_gives_finite_norms_in_the_lake(tmp_path: Path) -> None:
    """The doctor's case: gradients with absmax 1.8e26 are finite, so their norm must be too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 300), nn.Linear(300, 2))  # one large tensor, the rest small
    opt = torch.optim.SGD(model.parameters(), lr=1e-27, momentum=0.9)
    x = torch.randn(8, 300)
    with lakelog.init(tmp_path, name="huge") as run:
        run.watch(model, opt, every=1)
        for step in range(2):
            run.log({"step_seen": step}, step=step)
            loss = model(x).sum() * 1e27
            opt.zero_grad()
            loss.backward()
            grads = {n: p.grad.double().clone() for n, p in model.named_parameters()}
            before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
            assert all(torch.isfinite(g).all() for g in grads.values())
            opt.step()
    con = lakelog.connect(tmp_path)
    rows = con.execute(
        "SELECT name, grad_norm, grad_absmax, norm, update_norm FROM params "
        "WHERE kind = 'param' AND step = 1 ORDER BY name"
    ).fetchall()
    assert len(rows) == 4
    for name, grad_norm, grad_absmax, norm, update_norm in rows:
        p = dict(model.named_parameters())[name]
        assert math.isfinite(grad_norm) and grad_norm == pytest.approx(float(grads[name].norm()), rel=1e-5)
        assert grad_absmax == pytest.approx(float(grads[name].abs().max()), rel=1e-6)
        assert math.isfinite(norm) and norm == pytest.approx(float(p.detach().double().norm()), rel=1e-5)
        delta = float((p.detach().double() - before[name]).norm())
        assert math.isfinite(update_norm) and update_norm == pytest.approx(delta, rel=1e-5)
    assert min(r[2] for r in rows) > 1.9e19  # every gradient's float32 sum of squares overflows
    assert max(r[2] for r in rows) > 1.8e26
    scalars = dict(con.execute("SELECT name, value FROM scalars WHERE step = 1").fetchall())
    total = math.sqrt(sum(float(g.norm()) ** 2 for g in grads.values()))
    assert math.isfinite(scalars["grad_norm"]) and scalars["grad_norm"] == pytest.approx(total, rel=1e-5)
    assert math.isfinite(scalars["update_norm"]) and math.isfinite(scalars["weight_norm"])


def test_update_norm_of_a_huge_finite_change_is_finite() -> None:
    from lakelog.write.telemetry.previous_weights import Previous

    for where in ("cpu", "device"):
        prev = Previous(where)
        small, large = torch.zeros(10), torch.zeros(SMALL + 10)
        assert prev.update(["s", "l"], [small, large]) is None  # the first capture keeps copies
        small.fill_(1e25)
        large.fill_(-1e25)
        norms = prev.update(["s", "l"], [small, large])
        assert norms is not None
        expected = [1e25 * math.sqrt(10), 1e25 * math.sqrt(SMALL + 10)]
        assert norms.tolist() == pytest.approx(expected, rel=1e-6), where
        assert prev.update(["s", "l"], [small, large]).tolist() == [0.0, 0.0]  # unchanged: exactly 0


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_statistics_equal_the_cpu_path_without_a_sync() -> None:
    ts = tensors()
    on_gpu = [t.cuda() for t in ts]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = {
            key: tensor_stats(on_gpu, **kw)
            for key, kw in (
                ("w", {"full": True}),
                ("g", {"full": False}),
                ("o", {"full": False, "minmax": False}),
            )
        }
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for key, kw in (("w", {"full": True}), ("g", {"full": False}), ("o", {"full": False, "minmax": False})):
        raw, kinds = results[key]
        cols, valid = finish_stats(raw.cpu().numpy(), kinds, [t.numel() for t in ts], **kw)
        cpu_cols, cpu_valid = columns(ts, **kw)
        for col in cols:
            assert (valid[col] == cpu_valid[col]).all(), (key, col)
            np.testing.assert_allclose(cols[col][valid[col]], cpu_cols[col][valid[col]], rtol=1e-4)
    big = torch.full((SMALL + 100,), 1.8e26, device="cuda")
    assert math.isfinite(float(tensor_stats([big], full=False)[0][0, 0]))


def test_accelerator_path_computes_the_same_columns_on_cpu_tensors() -> None:
    """The queued, sync-free path accelerators take is plain torch ops: run on CPU tensors, it must give
    the CPU path's columns (so its math is checked on machines without a GPU too)."""
    from lakelog.write.telemetry.summaries import _dense_block

    ts = [t for t in tensors() if t.dtype != torch.int64 and t.dim() > 0]
    for kw in ({"full": True}, {"full": False}, {"full": False, "minmax": False}):
        full, minmax = kw["full"], kw.get("minmax", True)
        raw = _dense_block(ts, full, minmax).numpy()
        cols, valid = finish_stats(raw, ["real"] * len(ts), [t.numel() for t in ts], **kw)
        cpu_cols, cpu_valid = columns(ts, **kw)
        for col in cols:
            assert (valid[col] == cpu_valid[col]).all(), (kw, col)
            np.testing.assert_allclose(
                cols[col][valid[col]], cpu_cols[col][valid[col]], rtol=1e-5, err_msg=col
            )
        if full:  # the near-one tensor's two-pass std agrees to float64 rounding on both paths
            assert cols["std"][6] == pytest.approx(cpu_cols["std"][6], rel=1e-9)
    big = torch.full((SMALL + 100,), 1.8e26)
    assert math.isfinite(float(_dense_block([big], False, True)[0, 0]))
