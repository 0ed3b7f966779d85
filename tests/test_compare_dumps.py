"""compare-dumps: finds where two runs' weights part, says what it could not compare, writes its outputs."""

from __future__ import annotations

import json
import math
import shutil

import duckdb
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lakelog
from lakelog.cli.dumps import compare_dumps_command
from lakelog.errors import DumpError, InvalidArgumentError, RunNotFoundError
from lakelog.read.dumps.compare import compare_dumps
from lakelog.read.dumps.comparison import cosine as _cosine
from lakelog.read.dumps.comparison import pair_stats as _pair_stats

PERTURB_STEP = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


class Net(torch.nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden)
        )
        self.classifier = torch.nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.features(x)))


def make_run(
    root, name, *, perturb: bool = False, hidden: int = 16, steps: int = 10, skip=(), optimizer="adamw"
):
    torch.manual_seed(0)
    model = Net(hidden)
    opt = (
        torch.optim.AdamW(model.parameters(), lr=1e-2)
        if optimizer == "adamw"
        else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    )
    g = torch.Generator().manual_seed(1)
    with lakelog.init(root, name=name) as run:
        for step in range(steps):
            x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if perturb and step == PERTURB_STEP:
                with torch.no_grad():
                    model.features[2].weight[1, 2] += 0.5
            if step not in skip:
                run.dump(
                    model, opt, step=step, epoch=step // 5, loss=loss, acc=(out.argmax(1) == y).float().mean()
                )
    return root / name


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    make_run(root, "a")
    make_run(root, "b", perturb=True)
    return root


def test_perturbation_found_at_its_step_and_parameter(lake, tmp_path):
    result = compare_dumps(lake / "a", lake / "b", out=tmp_path / "out", progress=False, optimizer=True)
    s = result.summary
    assert s["first_difference"]["step"] == PERTURB_STEP
    assert s["first_difference"]["tensors"] == ["features.2.weight"] and not s["identical"]
    row = result.diffs.filter(
        (result.diffs["step"] == PERTURB_STEP) & (result.diffs["name"] == "features.2.weight")
    ).row(0, named=True)
    assert row["l2"] == pytest.approx(0.5, rel=1e-6) and row["max_abs_diff"] == pytest.approx(0.5, rel=1e-6)
    assert (
        not row["equal"]
        and row["cosine"] < 1.0
        and row["rel_diff"] == pytest.approx(0.5 / max(row["norm_a"], row["norm_b"]))
    )
    before = result.diffs.filter(result.diffs["step"] < PERTURB_STEP)
    assert before["equal"].all() and (before["l2"] == 0).all() and (before["cosine"] == 1.0).all()
    steps = result.steps
    assert steps["n_differing"].to_list()[: PERTURB_STEP + 1] == [0] * PERTURB_STEP + [1]
    assert steps.filter(steps["step"] > PERTURB_STEP)["loss_diff"].abs().min() > 0  # the loss parts after
    assert set(result.diffs["source"]) == {"model", "optimizer"}
    assert s["l2_max"] >= 0.5 and s["steps_compared"] == 10 and s["mismatches"] == [] and s["errors"] == []

    # Outputs: a Parquet table, a strict-JSON report, the chart.
    files = result.files
    n = duckdb.sql(
        f"SELECT count(*) FROM '{files['dump_diffs']}' WHERE step = {PERTURB_STEP} AND NOT equal"
    ).fetchall()
    assert n == [(1,)]
    report = json.loads(files["report"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    step6 = next(st for st in report["steps"] if st["step"] == PERTURB_STEP)
    assert {t["name"] for t in step6["tensors"] if not t["equal"]} == {"features.2.weight"}
    html = files["html"].read_text()
    assert "<script src=" not in html and "window.vegaEmbed" in html  # self-contained: opens offline
    for title in (
        "L2 distance of the weights",
        "cosine similarity of the weights",
        "loss |a - b|",
        "accuracy",
    ):
        assert title in html
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_filter_forms(lake):
    head = compare_dumps(lake / "a", lake / "b", filter="head=classifier.", progress=False)
    assert set(head.diffs["name"]) == {"classifier.weight", "classifier.bias"}
    assert head.summary["first_difference"]["step"] == PERTURB_STEP + 1  # the head only feels it a step later
    regex = compare_dumps(lake / "a", lake / "b", filter=r"features\.0", progress=False)
    assert set(regex.diffs["name"]) == {"features.0.weight", "features.0.bias"}
    opt = compare_dumps(lake / "a", lake / "b", filter="backbone=features.", optimizer=True, progress=False)
    assert {n for n in opt.diffs.filter(opt.diffs["source"] == "optimizer")["name"]} >= {
        "features.2.weight.exp_avg"
    }
    assert not any(n.startswith("classifier") for n in opt.diffs["name"])
    with pytest.raises(InvalidArgumentError, match="not a valid regular expression"):
        compare_dumps(lake / "a", lake / "b", filter="mlp(", progress=False)
    with pytest.raises(DumpError, match="matches none of the tensors"):
        compare_dumps(lake / "a", lake / "b", filter="^nothing", progress=False)


def test_mismatched_runs_gaps_and_corruption(lake, tmp_path):
    make_run(tmp_path, "wide", hidden=20, skip=(3,))  # other shapes, a missing step
    result = compare_dumps(lake / "a", tmp_path / "wide", progress=False)
    s = result.summary
    assert s["steps_only_in_a"] == [3] and s["gaps_b"] == [3] and s["steps_compared"] == 9
    shapes = {m["name"]: (m["a"], m["b"]) for m in s["mismatches"] if m["kind"] == "shape"}
    assert shapes["features.0.weight"] == ("[16, 8]", "[20, 8]") and "classifier.bias" not in shapes
    assert set(result.diffs["name"]) == {"classifier.bias"}  # what matches is still compared

    shutil.copytree(lake / "b", tmp_path / "b")
    (tmp_path / "b" / "dumps" / "step=8" / "model.safetensors").write_bytes(b"\x10\x00\x00")  # truncated
    broken = tmp_path / "b" / "dumps" / "step=9" / "model.safetensors"
    data = bytearray(broken.read_bytes())
    data[-3] ^= 0x55
    broken.write_bytes(bytes(data))
    (tmp_path / "b" / "dumps" / "step=10").mkdir()  # an unfinished dump
    result = compare_dumps(lake / "a", tmp_path / "b", progress=False)
    errors = result.summary["errors"]
    assert 8 not in result.steps["step"].to_list() and any(
        e["step"] == 8 and "not a readable" in e["error"] for e in errors
    )
    assert any(e["step"] == 9 and "checksum" in e["error"] and e["run"] == "b" for e in errors)
    assert result.summary["incomplete_b"] and result.summary["first_difference"]["step"] == PERTURB_STEP
    lines = "\n".join(result.summary_lines())
    assert "error: step 8" in lines and "unfinished dump folders" in lines


def test_empty_and_disjoint_runs(lake, tmp_path):
    with lakelog.init(tmp_path, name="empty"):
        pass
    with pytest.raises(
        DumpError, match=r"run empty \(.*\): no dumps; expected .*dumps/step=<s>/model\.safetensors"
    ):
        compare_dumps(lake / "a", tmp_path / "empty", progress=False)
    with pytest.raises(RunNotFoundError, match="no such folder"):
        compare_dumps("nope", "a", root=lake, progress=False)
    shutil.copytree(lake / "a", tmp_path / "late")
    for step_dir in (tmp_path / "late" / "dumps").iterdir():
        step_dir.rename(step_dir.with_name(f"step={int(step_dir.name[5:]) + 100}"))
    with pytest.raises(DumpError, match="share no dump step"):
        compare_dumps(lake / "a", tmp_path / "late", progress=False)


def test_identical_runs_with_sgd(tmp_path):
    make_run(tmp_path, "x", optimizer="sgd", steps=3)
    make_run(tmp_path, "y", optimizer="sgd", steps=3)
    result = compare_dumps("x", "y", root=tmp_path, progress=False, optimizer=True)
    assert result.summary["identical"] and result.summary["first_difference"] is None
    assert "bit-identical at every compared step" in "\n".join(result.summary_lines())
    assert any(n.endswith("momentum_buffer") for n in result.diffs["name"])


def test_half_precision_dumps_compare_in_float64(tmp_path):
    torch.manual_seed(0)
    a = {"bf": torch.randn(300_001).bfloat16(), "fp": torch.randn(7, 5).half()}
    b = {"bf": (a["bf"].float() + 0.01).bfloat16(), "fp": a["fp"].clone()}
    for name, state in (("a", a), ("b", b)):
        with lakelog.init(tmp_path, name=name) as run:
            run.dump(state, step=0)
    result = compare_dumps(tmp_path / "a", tmp_path / "b", progress=False)
    bf = result.diffs.filter(result.diffs["name"] == "bf").row(0, named=True)
    x, y = a["bf"].double(), b["bf"].double()
    assert bf["dtype_a"] == "BF16" and bf["l2"] == pytest.approx(float((x - y).norm()), rel=1e-12)
    assert bf["cosine"] == pytest.approx(float(x @ y / (x.norm() * y.norm())), rel=1e-12)
    assert bf["max_abs_diff"] == pytest.approx(float((x - y).abs().max()), rel=1e-12)
    assert result.diffs.filter(result.diffs["name"] == "fp")["equal"].to_list() == [True]


class ArrayStream:
    """What _pair_stats reads from a file, served from an array."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.count, self.itemsize = values, values.size, values.itemsize

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        part = self.values[start : start + count]
        return part, part

    def verify(self) -> None:
        pass


def stats(a: np.ndarray, b: np.ndarray) -> tuple:
    return _pair_stats(ArrayStream(a), ArrayStream(b), a.dtype == b.dtype)


def test_chunked_statistics_match_float64_reference():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(400_000).astype(np.float32)  # spans several chunks
    b = a.copy()
    b[200_000:] += rng.standard_normal(200_000).astype(np.float32) * 1e-3  # some chunks equal, some not
    ss, dot, aa, bb, peak, same = stats(a, b)
    x, y = a.astype(np.float64), b.astype(np.float64)
    assert math.isclose(ss, float(((x - y) ** 2).sum()), rel_tol=1e-9) and not same
    assert math.isclose(aa, float(x @ x), rel_tol=1e-9) and math.isclose(bb, float(y @ y), rel_tol=1e-9)
    assert math.isclose(dot, float(x @ y), rel_tol=1e-9) and peak == float(np.abs(x - y).max())
    assert stats(a, a.copy()) == (0.0, aa, aa, aa, 0.0, True)
    # Near-identical weights: the cosine keeps the digits that tell them apart.
    c = a + rng.standard_normal(a.size).astype(np.float32) * 1e-6  # 1 - cosine is about 5e-13
    ss, dot, aa, bb, _, _ = stats(a, c)
    z = c.astype(np.float64)
    exact = 1 - float(((x / np.linalg.norm(x) - z / np.linalg.norm(z)) ** 2).sum()) / 2
    assert 1 - _cosine(dot, aa, bb) == pytest.approx(1 - exact, rel=1e-3)


def test_nan_weights_compare_bit_for_bit(tmp_path):
    state = {"w": torch.tensor([1.0, float("nan"), -0.0])}
    for name, tensor in (
        ("a", state["w"]),
        ("b", state["w"].clone()),
        ("c", torch.tensor([1.0, float("nan"), 0.0])),
    ):
        with lakelog.init(tmp_path, name=name) as run:
            run.dump({"w": tensor}, step=0)
    assert compare_dumps(tmp_path / "a", tmp_path / "b", progress=False).diffs["equal"].to_list() == [True]
    row = compare_dumps(tmp_path / "a", tmp_path / "c", progress=False).diffs.row(0, named=True)
    assert (
        not row["equal"] and math.isnan(row["cosine"]) and math.isnan(row["l2"])
    )  # -0.0 vs 0.0; NaN stays NaN


def test_cli(lake, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        compare_dumps_command,
        ["a", "b", "--root", str(lake), "--filter", "features", "-o", str(tmp_path / "cmp"), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert (
        f"first difference: step {PERTURB_STEP}, 1 tensor " in result.output
        and "features.2.weight" in result.output
    )
    assert (tmp_path / "cmp" / "dump_comparison.png").is_file()
    result = runner.invoke(compare_dumps_command, ["a", str(tmp_path / "missing"), "--root", str(lake)])
    assert (
        result.exit_code == 2
        and result.output.startswith("lakelog: error: run ")
        and result.output.count("\n") == 1
    )


def test_cli_exits_non_zero_and_says_what_it_skipped(lake, tmp_path):
    shutil.copytree(lake / "b", tmp_path / "b")
    (tmp_path / "b" / "dumps" / "step=8" / "model.safetensors").write_bytes(b"\x10\x00\x00")  # truncated
    shutil.rmtree(tmp_path / "b" / "dumps" / "step=9")  # a step only A dumped
    result = CliRunner().invoke(
        compare_dumps_command,
        [str(lake / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "cmp"), "--no-progress"],
    )
    assert result.exit_code == 1, result.output
    said = result.output.splitlines()[-1]
    assert said.startswith("lakelog: compare-dumps: not everything was compared: ")
    assert "1 unreadable dump(s) at step(s) 8" in said and "1 step(s) only a dumped (9)" in said
    whole = CliRunner().invoke(
        compare_dumps_command,
        [str(lake / "a"), str(lake / "b"), "-o", str(tmp_path / "cmp2"), "--no-progress"],
    )
    assert whole.exit_code == 0 and "not everything" not in whole.output


def test_single_series_panels_are_neutral_and_carry_no_legend(lake):
    from lakelog.read.dumps.compare_report import NEUTRAL, RUN_COLORS, dump_chart

    spec = dump_chart(compare_dumps(lake / "a", lake / "b", progress=False)).to_dict()
    panels = [p for row in spec["vconcat"] for p in row["hconcat"]]
    by_title = {p["title"]: p for p in panels}
    for title in ("Weight divergence", "Weight similarity", "Loss difference", "Accuracy difference"):
        panel = by_title[title]
        assert "color" not in panel["encoding"] and panel["mark"]["color"] == NEUTRAL, title
        assert panel["mark"]["point"]["color"] == NEUTRAL
    for title in ("Loss of both runs", "Accuracy of both runs"):
        colour = by_title[title]["encoding"]["color"]
        assert colour["scale"] == {"domain": ["a", "b"], "range": RUN_COLORS}
        assert by_title[title]["encoding"]["strokeDash"]["legend"] is None  # one legend, not two
