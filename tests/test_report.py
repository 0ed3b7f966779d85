"""``lakelog report``: a self-contained page that renders in headless Chromium, PNGs, the CLI, progress."""

from __future__ import annotations

import io
import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from test_plots import DIVERGE, build_sweep, train

import lakelog
from lakelog.cli import cli
from lakelog.errors import InvalidArgumentError
from lakelog.lake import progress
from lakelog.read.plots import export
from lakelog.read.report import build_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module", autouse=True)
def bundle_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the cached vega bundle in a scratch folder, not in ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("LAKELOG_CACHE_DIR", str(folder))
        export.javascript_bundle.cache_clear()
        yield folder
    export.javascript_bundle.cache_clear()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lake")
    train(root, "base")
    train(root, "cand", diverge_at=DIVERGE)
    return root


@pytest.fixture(scope="module")
def pair_report(lake: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_report([lake / "base", lake / "cand"], tmp_path_factory.mktemp("report") / "report.html")


def _chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chrome-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_report_is_one_self_contained_page(pair_report) -> None:
    text = pair_report.path.read_text(encoding="utf-8")
    assert re.search(r"<script[^>]+src=", text) is None  # nothing to fetch at view time
    assert re.search(r"<link[^>]+href=", text) is None
    assert "window.vegaEmbed" in text  # the bundle is inlined
    assert pair_report.charts[:3] == ["curves", "loss per epoch", "divergence"]
    assert {"base: group norms", "cand: learning rates", "cand: holdout samples", "holdout accuracy"} <= set(
        pair_report.charts
    )
    assert text.count('class="chart"') == len(pair_report.charts)
    assert "diff findings" in text and "batch_order" in text  # the diff table, read from the query library
    assert pair_report.skipped == []


@pytest.mark.slow  # renders every chart to PNG
def test_pngs_are_written_and_not_blank(lake: Path, tmp_path: Path) -> None:
    from lakelog import plots
    from lakelog.read.plots.export import save_png

    divergence = save_png(plots.divergence(lake, "base", "cand"), tmp_path / "divergence.png")
    with Image.open(divergence) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 600
        dark = sum(image.convert("L").histogram()[:200])
        assert dark > 0.01 * image.width * image.height  # lines, axes and labels, not an empty canvas
        colors = image.convert("RGB").getcolors(1 << 20)
        assert any(
            count > 50 and rgb[0] > 180 and rgb[1] < 80 and rgb[2] < 80 for count, rgb in colors
        )  # the rule
    # the command writes one PNG per chart of the page
    with lakelog.init(tmp_path / "lake", "plain") as run:
        for step in range(30):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 30}, step=step, epoch=step // 10)
    result = CliRunner().invoke(
        cli,
        ["report", str(tmp_path / "lake"), "-o", str(tmp_path / "r.html"), "--png", str(tmp_path / "png")],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pngs] == ["00-curves.png", "01-loss-per-epoch.png"]
    assert "wrote 2 PNG files" in result.output
    for png in pngs:
        with Image.open(png) as image:
            assert image.width > 300 and sum(image.convert("L").histogram()[:200]) > 1000, png.name


@pytest.mark.slow  # starts a headless browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_report_renders_in_headless_chromium_without_errors(pair_report, tmp_path: Path) -> None:
    page = pair_report.path
    result = _chromium(tmp_path, page, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body [^>]*data-charts[^>]*>", result.stdout).group(0)
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


@pytest.mark.slow  # trains a sweep, renders every chart
def test_sweep_report_and_cli(tmp_path: Path) -> None:
    root = build_sweep(tmp_path / "sweep")
    out = tmp_path / "sweep.html"
    result = CliRunner().invoke(
        cli, ["report", str(root), "-o", str(out), "--sweep-metric", "final_acc", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    text = out.read_text(encoding="utf-8")
    for name in ("leaderboard", "hyperparameters", "training time", "sweep curves"):
        assert f'data-name="{name}"' in text
    best = max(
        lakelog.connect(root)
        .execute("SELECT run, (summary::JSON->>'final_acc')::DOUBLE AS acc FROM runs ORDER BY run")
        .fetchall(),
        key=lambda row: row[1],
    )[0]
    assert "Health of the best (by final_acc) 2 of 4 runs" in text
    assert f"Health: {best}" in text


def test_cli_names_runs_under_root_and_reports_errors(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.html"
    result = CliRunner().invoke(cli, ["report", "cand", "--root", str(lake), "-o", str(out), "-m", "acc"])
    assert result.exit_code == 0, result.output
    assert '"acc"' in out.read_text(encoding="utf-8") and "wrote" in result.output
    result = CliRunner().invoke(cli, ["report", "nope", "--root", str(lake), "-o", str(out)])
    assert result.exit_code == 2
    assert "lakelog: error: runs: 'nope' is not a run folder" in result.output
    with pytest.raises(InvalidArgumentError, match="at least one"):
        build_report([], out)


def test_missing_data_is_listed_not_fatal(tmp_path: Path) -> None:
    with lakelog.init(tmp_path / "lake", "plain") as run:
        for step in range(5):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
    report = build_report([tmp_path / "lake" / "plain"], tmp_path / "plain.html")
    assert report.charts == ["curves"]
    skipped = dict(report.skipped)
    assert "run.watch" in skipped["plain: group norms"]
    assert "pass epoch= to run.log" in skipped["loss per epoch"]  # five steps, all in epoch 0
    assert "Not drawn" in report.path.read_text(encoding="utf-8")


def test_progress_shows_only_where_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.enabled() is None  # tqdm decides: a terminal only
    monkeypatch.setenv(progress.ENV, "0")
    assert progress.enabled() is False and progress.enabled(True) is True
    stream = io.StringIO()
    with progress.bar(3, desc="runs", show=True, file=stream, leave=True, mininterval=0) as line:
        for _ in range(3):
            line.update(1)
    assert "runs" in stream.getvalue() and "3/3" in stream.getvalue()
    assert list(progress.progress(range(5), show=False)) == list(range(5))
    assert list(progress.progress(iter([1, 2]), desc="x")) == [1, 2]


def test_the_vega_bundle_is_built_once_and_cached_on_disk(pair_report, bundle_cache: Path) -> None:
    cached = list(bundle_cache.glob("vega-embed-bundle-*.js"))
    assert len(cached) == 1 and "window.vegaEmbed" in cached[0].read_text(encoding="utf-8")
    cached[0].write_text("/* from the cache */" + cached[0].read_text(encoding="utf-8"), encoding="utf-8")
    export.javascript_bundle.cache_clear()
    assert export.javascript_bundle().startswith("/* from the cache */")
    export.javascript_bundle.cache_clear()


# -- a page read top to bottom ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory: pytest.TempPathFactory):
    root = build_sweep(tmp_path_factory.mktemp("sweep") / "sweep")
    return build_report(
        [root], tmp_path_factory.mktemp("sweep-report") / "sweep.html", sweep_metric="final_acc"
    )


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, what follows it up to the next h2) for every h2 of the page."""
    parts = re.split(r"<h2 [^>]*>(.*?)</h2>", text.split("<body>", 1)[1])
    return list(zip(parts[1::2], parts[2::2], strict=True))


def _specs(report) -> list[dict]:
    text = report.path.read_text(encoding="utf-8")
    blob = re.search(r'<script type="application/json" id="lakelog-specs">(.*?)</script>', text, re.S).group(
        1
    )
    return json.loads(blob.replace("<\\/", "</"))


def _colours(spec, found: dict[str, str]) -> dict[str, str]:
    """value -> colour of every run-coloured encoding of a spec (a value coloured twice must agree)."""
    if isinstance(spec, dict):
        colour = spec.get("color")
        if isinstance(colour, dict) and colour.get("field") in ("run", "label") and "scale" in colour:
            scale = colour["scale"]
            if "range" in scale and isinstance(scale["range"], list):
                for value, rgb in zip(scale["domain"], scale["range"], strict=False):
                    assert found.setdefault(value, rgb) == rgb, (value, rgb, found[value])
        for value in spec.values():
            _colours(value, found)
    elif isinstance(spec, list):
        for item in spec:
            _colours(item, found)
    return found


def test_two_runs_are_a_comparison_with_no_empty_section(pair_report) -> None:
    text = pair_report.path.read_text(encoding="utf-8")
    sections = _sections(text)
    headings = [h for h, _ in sections]
    assert headings[:3] == ["Runs", "Training curves", "Where cand parts from base"]
    assert "Sweep" not in headings and "Not drawn" not in headings  # two runs, everything drawn
    for heading, body in sections:
        assert re.search(r'class="chart"|<table|<p class=', body), f"section {heading!r} is empty"
    assert "max_health_runs" not in text.replace("max_health_runs= in Python", "")


def test_a_sweep_report_colours_each_run_once_and_reads_as_columns(sweep_report) -> None:
    text = sweep_report.path.read_text(encoding="utf-8")
    headings = [h for h, _ in _sections(text)]
    assert "Sweep" in headings and "Holdout" in headings
    assert "loss per epoch" not in sweep_report.charts  # drawn once, as the sweep curves per config
    assert sweep_report.charts.count("sweep curves") == 1
    runs_table = _sections(text)[0][1]
    assert '<table class="sortable">' in runs_table
    for column in ("config.lr", "config.hidden", "summary.final_acc"):
        assert f"<th>{column}</th>" in runs_table
    specs = _specs(sweep_report)
    colours = {}
    for spec in specs:
        _colours(spec, colours)
    runs = ["lr0.01-h16", "lr0.01-h4", "lr0.3-h16", "lr0.3-h4"]
    assert all(run in colours for run in runs)
    labels = {"hidden=16 lr=0.01": "lr0.01-h16", "hidden=4 lr=0.3": "lr0.3-h4"}
    for label, run in labels.items():  # a config label takes its run's colour
        assert colours[label] == colours[run]
    assert len({colours[run] for run in runs}) == 4
    for name, spec in zip(sweep_report.charts, specs, strict=True):
        widths = [v for v in re.findall(r'"width": (\d+)', json.dumps(spec))]
        if name in ("curves", "sweep curves", "holdout accuracy"):
            assert min(int(w) for w in widths) >= 1000, (name, widths)  # full width, not half the page
    times = json.dumps(specs[sweep_report.charts.index("training time")])
    assert '"running"' not in times and '"legend": null' in times  # nothing runs: no "running" entry


def test_parallel_coordinate_labels_do_not_overlap(sweep_report) -> None:
    spec = _specs(sweep_report)[sweep_report.charts.index("hyperparameters")]
    ticks = [layer for layer in spec["layer"] if layer.get("mark", {}).get("type") == "text"]
    assert len(ticks) == 2  # the halo and the text
    data = ticks[1]["data"]
    rows = data["values"] if "values" in data else spec["datasets"][data["name"]]
    by_key: dict[str, list[float]] = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append(row["norm"])
    for key, norms in by_key.items():
        norms.sort()
        assert all(b - a >= 0.07 for a, b in itertools.pairwise(norms)), (key, norms)
    assert spec["layer"][1]["encoding"]["x"]["axis"]["labelLimit"] > 100


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_sweep_page_renders_and_its_tables_sort_in_chromium(sweep_report, tmp_path: Path) -> None:
    page = tmp_path / "sorted.html"
    clicker = (
        "<script>(function(){var th=[].slice.call(document.querySelectorAll('table.sortable th'))"
        ".filter(function(h){return h.textContent==='summary.final_acc';})[0];th.click();th.click();"
        "var runs=[].slice.call(document.querySelectorAll('table.sortable tr')).slice(1)"
        ".map(function(r){return r.children[0].textContent;});"
        "document.body.setAttribute('data-sorted', runs.join(','));})();</script></body>"
    )
    head, tail = sweep_report.path.read_text(encoding="utf-8").rsplit("</body>", 1)  # the bundle has one too
    page.write_text(head + clicker + tail, encoding="utf-8")
    result = _chromium(tmp_path, page, "--enable-logging=stderr", "--v=0", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body [^>]*data-charts[^>]*>", result.stdout).group(0)
    assert f'data-charts-rendered="{len(sweep_report.charts)}"' in body and 'data-chart-errors="0"' in body
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    order = re.search(r'data-sorted="([^"]*)"', result.stdout).group(1).split(",")
    table = _sections(sweep_report.path.read_text(encoding="utf-8"))[0][1]
    header = re.findall(r"<th>(.*?)</th>", table)
    rows = [
        re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr class='[^']*'>(.*?)</tr>", table)
    ]
    column = header.index("summary.final_acc")
    expected = [r[0] for r in sorted(rows, key=lambda r: -float(r[column]))]
    assert order == expected  # clicked twice: descending by the number, not by its text
