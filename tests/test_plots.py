"""Charts of real runs: each function returns a valid Vega-Lite spec carrying the data the runs hold.

The runs are tiny real trainings (torch model and optimizer, run.watch telemetry, Parquet, DuckDB):
``base`` and ``twin`` are identical, ``cand`` reverses the order of one batch at step DIVERGE, and
``frozen`` trains with the head's learning rate at 0. ``build_sweep`` trains a small grid of configs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
import pyarrow as pa
import pytest
import torch
from torch import nn

import lakelog
from lakelog.errors import InvalidArgumentError, RunNotFoundError
from lakelog.read import plots
from lakelog.read.plots import NoDataError

DIVERGE = 7
EPOCHS = 2
STEPS_PER_EPOCH = 8
BATCH = 8
GROUPS = {"backbone": "0.", "head": "2."}


def train(
    root: Path,
    name: str,
    *,
    lr: float = 0.1,
    hidden: int = 16,
    diverge_at: int | None = None,
    head_lr: float | None = None,
    seed: int = 0,
    epochs: int = EPOCHS,
) -> None:
    """A two-layer MLP on fixed synthetic data, logging what a user would: batches, predictions, loss, telemetry."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(STEPS_PER_EPOCH * BATCH, 6, generator=g)
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
        hx = torch.randn(24, 6, generator=g)
        hy = (hx[:, 0] + 0.5 * hx[:, 1] > 0).long()
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        head_lr = lr * 10 if head_lr is None else head_lr
        optimizer = torch.optim.SGD(
            [{"params": model[0].parameters(), "lr": lr}, {"params": model[2].parameters(), "lr": head_lr}]
        )
        with lakelog.init(root, name, config={"lr": lr, "hidden": hidden}, seed=seed) as run:
            run.watch(model, optimizer, every=1, groups=GROUPS, holdout=(hx, hy))
            for epoch in range(epochs):
                order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
                for b in range(STEPS_PER_EPOCH):
                    step = epoch * STEPS_PER_EPOCH + b
                    idx = order[b * BATCH : (b + 1) * BATCH]
                    if step == diverge_at:
                        idx = idx.flip(0)
                    run.log_batch(sample_ids=idx, inputs=x[idx], step=step, epoch=epoch, batch_idx=b)
                    logits = model(x[idx])
                    loss = nn.functional.cross_entropy(logits, y[idx])
                    run.log_predictions(logits.detach(), labels=y[idx], step=step, epoch=epoch, batch_idx=b)
                    run.log(
                        {
                            "loss": float(loss.detach()),
                            "acc": float((logits.argmax(1) == y[idx]).float().mean()),
                        },
                        step=step,
                        epoch=epoch,
                    )
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            with torch.no_grad():
                run.summary(final_acc=float((model(hx).argmax(1) == hy).float().mean()))
    finally:
        torch.set_num_threads(threads)


def build_pair(root: Path) -> Path:
    train(root, "base")
    train(root, "twin")
    train(root, "cand", diverge_at=DIVERGE)
    train(root, "frozen", head_lr=0.0)
    return root


def build_sweep(root: Path) -> Path:
    for lr in (0.01, 0.3):
        for hidden in (4, 16):
            train(root, f"lr{lr}-h{hidden}", lr=lr, hidden=hidden)
    return root


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    return lakelog.connect(build_pair(tmp_path_factory.mktemp("pair")))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    return lakelog.connect(build_sweep(tmp_path_factory.mktemp("sweep")))


# -- reading specs -------------------------------------------------------------------------------
def spec_of(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """The validated Vega-Lite spec (to_dict validates against the schema and raises when invalid)."""
    spec = chart.to_dict(validate=True)
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v")
    return spec


def nodes(spec: Any) -> list[dict[str, Any]]:
    """Every dict in the spec (views, layers, encodings…)."""
    found = []
    if isinstance(spec, dict):
        found.append(spec)
        for value in spec.values():
            found += nodes(value)
    elif isinstance(spec, list):
        for value in spec:
            found += nodes(value)
    return found


def main_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the chart's main (largest) dataset."""
    return max(spec["datasets"].values(), key=len)


def rows_of_mark(spec: dict[str, Any], mark: str, **props: Any) -> list[list[dict[str, Any]]]:
    """Datasets of the views drawing ``mark`` with the given mark properties (e.g. the red rule)."""
    out = []
    for node in nodes(spec):
        m = node.get("mark")
        if isinstance(m, dict) and m.get("type") == mark and all(m.get(k) == v for k, v in props.items()):
            name = node.get("data", {}).get("name")
            if name:
                out.append(spec["datasets"][name])
    return out


def scalar_rows(con: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> list[tuple]:
    return con.execute(sql, list(params)).fetchall()


# -- curves --------------------------------------------------------------------------------------
def test_metric_curves_overlay_one_series_per_run_and_metric(pair: duckdb.DuckDBPyConnection) -> None:
    spec = spec_of(plots.metric_curves(pair, ["loss", "acc"], ["base", "cand"]))
    rows = main_rows(spec)
    assert {(r["run"], r["name"]) for r in rows} == {
        (r, m) for r in ("base", "cand") for m in ("loss", "acc")
    }
    assert len(rows) == 2 * 2 * EPOCHS * STEPS_PER_EPOCH  # short runs are not bucketed
    logged = dict(scalar_rows(pair, "SELECT step, value FROM scalars WHERE run = 'cand' AND name = 'loss'"))
    drawn = {r["step"]: r["value"] for r in rows if r["run"] == "cand" and r["name"] == "loss"}
    assert drawn == pytest.approx(logged)
    assert spec["facet"]["row"]["field"] == "name"


def test_one_metric_is_a_single_view_with_a_run_legend(pair: duckdb.DuckDBPyConnection) -> None:
    spec = spec_of(plots.loss_curves(pair, ["base", "twin", "cand"]))
    assert spec["encoding"]["color"]["field"] == "run"
    assert spec["encoding"]["y"]["title"] == "loss"
    assert {r["run"] for r in main_rows(spec)} == {"base", "twin", "cand"}


def test_long_runs_are_bucketed_in_sql_to_max_points(tmp_path: Path) -> None:
    steps = 50_000
    with lakelog.init(tmp_path, "long") as run:
        run.write_rows(
            "scalars",
            pa.table(
                {
                    "step": pa.array(range(steps), pa.int64()),
                    "name": ["loss"] * steps,
                    "value": [1.0 / (1 + s) for s in range(steps)],
                }
            ),
        )
    spec = spec_of(plots.metric_curves(tmp_path, "loss", max_points=500))
    rows = main_rows(spec)
    assert 400 < len(rows) <= 500
    assert sum(r["n"] for r in rows) == steps  # every step counted once
    assert rows[0]["value"] == pytest.approx(sum(1.0 / (1 + s) for s in range(rows[0]["n"])) / rows[0]["n"])


def test_epoch_history_is_the_mean_of_each_epoch(pair: duckdb.DuckDBPyConnection) -> None:
    spec = spec_of(plots.epoch_history(pair, "loss", ["base"]))
    rows = main_rows(spec)
    assert [r["epoch"] for r in rows] == list(range(EPOCHS))
    means = dict(
        scalar_rows(
            pair, "SELECT epoch, avg(value) FROM scalars WHERE run = 'base' AND name = 'loss' GROUP BY epoch"
        )
    )
    assert {r["epoch"]: r["value"] for r in rows} == pytest.approx(means)


def test_per_epoch_charts_warn_when_scalars_carry_no_epoch(
    tmp_path: Path, pair: duckdb.DuckDBPyConnection
) -> None:
    for name in ("a", "b"):  # the quick start's mistake: log() without epoch=, no log_batch
        with lakelog.init(tmp_path, name) as run:
            for step in range(12):
                run.log({"loss": 1.0 / (1 + step)}, step=step)
    with pytest.warns(UserWarning, match=r"every 'loss' value of 2 run\(s\) carries epoch 0 .*epoch=epoch"):
        plots.sweep_curves(tmp_path, "loss", per="epoch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # runs that log their epochs: no warning
        plots.epoch_history(pair, "loss", ["base"])


# -- where two runs part ---------------------------------------------------------------------------
def test_divergence_marks_the_first_divergent_step_with_a_rule(pair: duckdb.DuckDBPyConnection) -> None:
    spec = spec_of(plots.divergence(pair, "base", "cand"))
    rules = rows_of_mark(spec, "rule", color=plots.compare.RULE_COLOR)
    assert rules and all(r == [rules[0][0]] for r in rules)
    assert rules[0][0]["step"] == DIVERGE
    assert "first divergence: step 7 (batch order)" in rules[0][0]["label"]
    rows = main_rows(spec)
    layers = {r["layer"] for r in rows}
    assert {"batch_order", "inputs", "predictions", "loss", "gradients", "weights"} <= layers
    for layer in ("batch_order", "predictions", "loss", "weights"):
        before = [r for r in rows if r["layer"] == layer and r["step"] < DIVERGE]
        assert before and not any(r["differs"] for r in before), layer
    for layer in ("batch_order", "predictions"):  # a reversed batch has the same mean loss, maybe bit for bit
        assert [r["differs"] for r in rows if r["layer"] == layer and r["step"] == DIVERGE] == [True], layer
    assert len(spec["vconcat"]) == len(layers)


def test_first_divergence_agrees_with_the_query_library(pair: duckdb.DuckDBPyConnection) -> None:
    found = plots.first_divergence(pair, "base", "cand")
    assert (found.step, found.layer) == (DIVERGE, "batch_order")
    assert found.layers["batch_order"] == DIVERGE and found.layers["weights"] == DIVERGE
    library = lakelog.query("first_divergence", con=pair, run_a="base", run_b="cand")
    assert library.filter(library["is_first"])["first_step"].to_list() == [DIVERGE]


def test_identical_runs_have_no_rule(pair: duckdb.DuckDBPyConnection) -> None:
    assert plots.first_divergence(pair, "base", "twin").identical
    spec = spec_of(plots.divergence(pair, "base", "twin"))
    assert rows_of_mark(spec, "rule", color=plots.compare.RULE_COLOR) == []
    assert not any(r["differs"] for r in main_rows(spec))
    assert "identical" in json.dumps(spec["title"])


# -- health -----------------------------------------------------------------------------------------
def test_group_norms_per_group_on_log_scales(pair: duckdb.DuckDBPyConnection) -> None:
    spec = spec_of(plots.group_norms(pair, "base"))
    rows = main_rows(spec)
    assert {r["metric"] for r in rows} == {"grad_norm", "weight_norm", "update_ratio"}
    assert {"backbone", "head"} <= {r["group"] for r in rows}
    assert {
        n["scale"]["type"] for n in nodes(spec) if isinstance(n.get("scale"), dict) and "type" in n["scale"]
    } == {"log"}
    ratio = [r for r in rows if r["metric"] == "update_ratio" and r["group"] == "head"]
    assert ratio and all(0 < r["value"] < 10 for r in ratio)


def test_a_frozen_group_sits_on_the_floor_instead_of_vanishing(pair: duckdb.DuckDBPyConnection) -> None:
    spec = spec_of(plots.group_norms(pair, "frozen"))
    rows = [r for r in main_rows(spec) if r["metric"] == "update_ratio"]
    head = [r for r in rows if r["group"] == "head"]
    backbone = [r for r in rows if r["group"] == "backbone"]
    assert head and all(r["value"] == 0 and r["at_floor"] for r in head)
    assert all(0 < r["plot_value"] < min(b["value"] for b in backbone) for r in head)
    assert rows_of_mark(spec, "point", shape="triangle-down") == []  # the floor marks share the main data
    assert any(
        n.get("mark", {}).get("shape") == "triangle-down"
        for n in nodes(spec)
        if isinstance(n.get("mark"), dict)
    )


def test_learning_rates_are_the_ones_the_optimizer_applied(pair: duckdb.DuckDBPyConnection) -> None:
    rows = main_rows(spec_of(plots.learning_rates(pair, "base")))
    assert {r["group"] for r in rows} == {"backbone", "head"}
    assert {r["group"]: r["value"] for r in rows} == pytest.approx({"backbone": 0.1, "head": 1.0})


def test_holdout_accuracy_and_heatmap(pair: duckdb.DuckDBPyConnection) -> None:
    acc = main_rows(spec_of(plots.holdout_accuracy(pair, ["base", "cand"])))
    assert {r["run"] for r in acc} == {"base", "cand"}
    expected = dict(
        scalar_rows(pair, "SELECT step, avg(correct::INT) FROM holdout WHERE run = 'cand' GROUP BY step")
    )
    assert {r["step"]: r["value"] for r in acc if r["run"] == "cand"} == pytest.approx(expected)
    spec = spec_of(plots.holdout_heatmap(pair, "cand", max_samples=10, max_steps=5))
    cells = main_rows(spec)
    samples = list(dict.fromkeys(r["sample_idx"] for r in cells))
    assert len(samples) == 10
    flips = [next(r["flips"] for r in cells if r["sample_idx"] == s) for s in samples]
    assert flips == sorted(flips, reverse=True)
    assert all(r["step_end"] > r["step"] for r in cells)
    assert max(len([r for r in cells if r["sample_idx"] == s]) for s in samples) <= 5


def test_label_balance_adds_up_to_a_whole_batch(pair: duckdb.DuckDBPyConnection) -> None:
    rows = main_rows(spec_of(plots.label_balance(pair, "base")))
    per_step: dict[float, float] = {}
    for r in rows:
        per_step[r["step"]] = per_step.get(r["step"], 0.0) + r["pct"]
    assert len(per_step) == EPOCHS * STEPS_PER_EPOCH
    assert all(total == pytest.approx(100.0) for total in per_step.values())


# -- sweeps -----------------------------------------------------------------------------------------
def test_sweep_charts(sweep: duckdb.DuckDBPyConnection) -> None:
    curves = main_rows(spec_of(plots.sweep_curves(sweep, "loss")))
    assert {r["label"] for r in curves} == {f"hidden={h} lr={lr}" for lr in (0.01, 0.3) for h in (4, 16)}
    board = spec_of(plots.leaderboard(sweep, "final_acc"))
    rows = main_rows(board)
    values = [r["value"] for r in sorted(rows, key=lambda r: r["rank"])]
    assert len(rows) == 4 and values == sorted(values, reverse=True)
    finals = dict(scalar_rows(sweep, "SELECT run, summary::JSON->>'final_acc' FROM runs"))
    assert {r["run"]: r["value"] for r in rows} == pytest.approx({k: float(v) for k, v in finals.items()})
    lowest = main_rows(spec_of(plots.leaderboard(sweep, "loss")))
    assert min(lowest, key=lambda r: r["rank"])["value"] == min(r["value"] for r in lowest)


def test_parallel_coordinates_and_training_time(sweep: duckdb.DuckDBPyConnection) -> None:
    spec = spec_of(plots.parallel_coordinates(sweep, "final_acc"))
    rows = main_rows(spec)
    assert {r["key"] for r in rows} == {"lr", "hidden", "final_acc"}
    assert all(0.0 <= r["norm"] <= 1.0 for r in rows)
    lr = {r["raw"]: r["norm"] for r in rows if r["key"] == "lr"}
    assert lr == {"0.01": 0.0, "0.3": 1.0} and {r["scale"] for r in rows if r["key"] == "lr"} == {"log"}
    assert len({r["run"] for r in rows}) == 4
    times = main_rows(spec_of(plots.training_time(sweep)))
    assert len(times) == 4 and all(r["duration_s"] > 0 for r in times)


# -- mistakes ---------------------------------------------------------------------------------------
def test_errors_name_what_is_wrong(pair: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="nope"):
        plots.metric_curves(pair, "loss", ["nope"])
    with pytest.raises(NoDataError, match="no scalar named 'val_loss'"):
        plots.metric_curves(pair, "val_loss")
    with pytest.raises(InvalidArgumentError, match="max_points"):
        plots.metric_curves(pair, "loss", max_points=1)
    with pytest.raises(InvalidArgumentError, match="run_b"):
        plots.divergence(pair, "base", "base")
    with pytest.raises(InvalidArgumentError, match="name one"):
        plots.group_norms(pair)
    with lakelog.init(tmp_path, "bare") as run:
        run.log({"loss": 1.0}, step=0)
    with pytest.raises(NoDataError, match=r"run\.watch"):
        plots.group_norms(tmp_path)
    with pytest.raises(NoDataError, match="holdout"):
        plots.holdout_heatmap(tmp_path)


def test_plots_do_not_import_torch(pair: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    root = Path(pair.execute("SELECT any_value(root) FROM runs").fetchone()[0])
    code = (
        "import sys, lakelog, lakelog.read.plots, lakelog.read.report\n"
        f"lakelog.read.plots.divergence({str(root)!r}, 'base', 'cand').to_dict()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
