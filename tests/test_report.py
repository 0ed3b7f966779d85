"""``lakelog report``: a self-contained page that renders in headless Chromium, PNGs, the CLI, progress."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from test_plots import DIVERGE, build_pair, build_sweep

from lakelog import progress
from lakelog.cli import cli
from lakelog.errors import InvalidArgumentError
from lakelog.report import build_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pair(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def pair_report(lake: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("report")
    return build_report([lake / "base", lake / "cand"], out / "report.html", png_dir=out / "png")


def _chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chrome-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_report_is_one_self_contained_page(pair_report) -> None:
    text = pair_report.path.read_text(encoding="utf-8")
    assert re.search(r"<script[^>]+src=", text) is None  # nothing to fetch at view time
    assert re.search(r"<link[^>]+href=", text) is None
    assert "window.vegaEmbed" in text  # the bundle is inlined
    assert pair_report.charts[:3] == ["curves", "loss per epoch", "divergence"]
    assert {"base: group norms", "cand: learning rates", "cand: holdout samples", "holdout accuracy"} \
        <= set(pair_report.charts)
    assert text.count('class="chart"') == len(pair_report.charts)
    assert "diff findings" in text and "batch_order" in text  # the diff table, read from the query library
    assert pair_report.skipped == []


def test_pngs_are_written_and_not_blank(pair_report) -> None:
    assert len(pair_report.pngs) == len(pair_report.charts)
    divergence = next(p for p in pair_report.pngs if p.name.endswith("divergence.png"))
    with Image.open(divergence) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 600
        gray = image.convert("L")
        dark = sum(gray.histogram()[:200])
        assert dark > 0.01 * image.width * image.height  # lines, axes and labels, not an empty canvas
        red = image.convert("RGB").getcolors(1 << 20)
        assert any(count > 50 and rgb[0] > 180 and rgb[1] < 80 and rgb[2] < 80 for count, rgb in red)  # the rule


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_report_renders_in_headless_chromium_without_errors(pair_report, tmp_path: Path) -> None:
    page = pair_report.path
    result = _chromium(tmp_path, page, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body[^>]*>", result.stdout).group(0)
    assert f'data-charts-rendered="{len(pair_report.charts)}"' in body, body
    assert 'data-chart-errors="0"' in body and 'data-charts-done="true"' in body
    assert result.stdout.count("<svg") >= len(pair_report.charts)
    assert f"first divergence: step {DIVERGE}" in result.stdout  # the rule's label made it into the drawing
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # vega logs warnings and errors to the console; the page logs nothing

    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1400,2000")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as image:
        gray = image.convert("L")
        not_white = sum(gray.histogram()[:240])
        assert not_white > 0.03 * image.width * image.height


def test_sweep_report_and_cli(tmp_path: Path) -> None:
    root = build_sweep(tmp_path / "sweep")
    out = tmp_path / "sweep.html"
    result = CliRunner().invoke(cli, ["report", str(root), "-o", str(out), "--sweep-metric", "final_acc",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    text = out.read_text(encoding="utf-8")
    for name in ("leaderboard", "hyperparameters", "training time", "sweep curves"):
        assert f'data-name="{name}"' in text


def test_cli_names_runs_under_root_and_reports_errors(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.html"
    result = CliRunner().invoke(cli, ["report", "frozen", "--root", str(lake), "-o", str(out), "-m", "loss"])
    assert result.exit_code == 0, result.output
    assert out.exists()
    result = CliRunner().invoke(cli, ["report", "nope", "--root", str(lake), "-o", str(out)])
    assert result.exit_code == 2
    assert "lakelog: error: runs: 'nope' is not a run folder" in result.output
    with pytest.raises(InvalidArgumentError, match="at least one"):
        build_report([], out)


def test_missing_data_is_listed_not_fatal(tmp_path: Path) -> None:
    import lakelog

    with lakelog.init(tmp_path / "lake", "plain") as run:
        for step in range(5):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
    report = build_report([tmp_path / "lake" / "plain"], tmp_path / "plain.html")
    assert report.charts == ["curves"]
    skipped = dict(report.skipped)
    assert "run.watch" in skipped["plain: group norms"]
    assert "Not drawn" in report.path.read_text(encoding="utf-8")


def test_progress_shows_only_where_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.enabled() is None  # tqdm decides: a terminal only
    monkeypatch.setenv(progress.ENV, "0")
    assert progress.enabled() is False and progress.enabled(True) is True
    stream = io.StringIO()
    with progress.bar(3, desc="runs", show=True, file=stream) as line:
        for _ in range(3):
            line.update(1)
    assert "runs" in stream.getvalue() and "3/3" in stream.getvalue()
    assert list(progress.progress(range(5), show=False)) == list(range(5))
    assert list(progress.progress(iter([1, 2]), desc="x")) == [1, 2]

