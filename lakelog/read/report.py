"""``lakelog report``: one self-contained HTML page about a few runs (or a sweep), readable offline.

It chooses what to draw from what the runs logged (``plot_scalar_names``): curves of the plain
scalars, where two runs part and the ``diff`` findings, a sweep's leaderboard, hyperparameters and
training times, each run's health with the ``doctor`` findings. A chart with nothing to draw is
listed at the end with the reason instead of failing the page.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import duckdb

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import did_you_mean, positive_int
from lakelog.lake.layout import RUN_FILE
from lakelog.lake.progress import progress
from lakelog.read import plots, querylib
from lakelog.read.diff import diff_runs
from lakelog.read.doctor import doctor
from lakelog.read.plots._common import NoDataError, label_of
from lakelog.read.plots.export import Page, save_png
from lakelog.read.plots.style import paint_runs, palette, widen
from lakelog.read.views import connect

PREFERRED_METRICS = (
    "holdout/acc",
    "val/acc",
    "val_acc",
    "accuracy",
    "acc",
    "recall",
    "f1",
    "val/loss",
    "val_loss",
    "loss",
)
_NOT_METRICS = {"duration_s", "last_step", "last_epoch"}
_TELEMETRY_SCALARS = {"grad_norm", "weight_norm", "update_norm", "update_ratio", "batch_size"}
EXTRA_WIDTH = 420
"""Pixels added to every chart's width in the report, so a chart spans the page (640 -> 1060)."""


@dataclass
class Report:
    """What ``build_report`` wrote: the page, the charts on it, the charts left out and why, the PNGs."""

    path: Path
    charts: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pngs: list[Path] = field(default_factory=list)


def resolve_targets(
    targets: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None
) -> list[str]:
    """Each target is a run folder, a lake root (all its runs), or a run name under ``root``."""
    if not targets:
        raise InvalidArgumentError("runs: expected at least one run folder, lake root or run name")
    resolved: list[str] = []
    for target in targets:
        text = os.fspath(target)
        if "://" in text or os.path.isdir(text):
            resolved.append(text)
            continue
        candidate = os.path.join(os.fspath(root), text) if root is not None else None
        if candidate and os.path.isfile(os.path.join(candidate, RUN_FILE)):
            resolved.append(candidate)
            continue
        known = (
            sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, RUN_FILE)))
            if root is not None and os.path.isdir(root)
            else []
        )
        where = (
            f" nor a run in {os.fspath(root)!r}{did_you_mean(text, known)}"
            if root is not None
            else " (pass --root to name runs by name)"
        )
        raise InvalidArgumentError(f"runs: {text!r} is not a run folder or lake root{where}")
    return resolved


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, int | float | str | bool) or v is None else json.dumps(v, default=str)
        for k, v in row.items()
    }


def diff_findings(
    con: duckdb.DuckDBPyConnection, run_a: str, run_b: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The layers table and the notes of ``lakelog diff`` (``lakelog.read.diff.diff_runs``)."""
    result = diff_runs(con, run_a, run_b)
    return [_plain(row) for row in result.layers.to_dicts()], list(result.notes)


def doctor_findings(con: duckdb.DuckDBPyConnection, run: str) -> list[dict[str, Any]]:
    """The health checks of ``lakelog doctor`` for one run, one row each (the evidence stays in the CLI)."""
    return [
        {"check": c.name, "status": c.status, "summary": c.summary, "query": c.query}
        for c in doctor(con, run)
    ]


def _auto_metrics(names: list[str]) -> list[str]:
    """Up to four plain scalars (no ``/``), loss first; the telemetry's whole-model norms have their own chart."""
    plain = {n for n in names if "/" not in n} - _TELEMETRY_SCALARS
    return sorted(plain, key=lambda n: (n != "loss", "loss" not in n, n))[:4]


def _sweep_metric(summaries: list[dict[str, Any]]) -> str | None:
    """The summary key to rank a sweep by: a preferred one every run has, else any shared number."""
    shared = None
    for summary in summaries:
        keys = {k for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        shared = keys if shared is None else shared & keys
    shared = (shared or set()) - _NOT_METRICS
    for name in PREFERRED_METRICS:
        if name in shared:
            return name
    return sorted(shared)[0] if shared else None


class _Builder:
    """Assembles the page: charts painted with one colour per run and widened, sections dropped when empty."""

    def __init__(self, con: duckdb.DuckDBPyConnection, page: Page, report: Report, runs: list[str]) -> None:
        self.con, self.page, self.report = con, page, report
        self.charts: list[tuple[str, dict[str, Any]]] = []
        labels = label_of(con, runs) if len(runs) > 1 else {}
        self.domains = {"run": runs, "label": [labels.get(run, run) for run in runs]}
        self.colours = palette(len(runs))

    def chart(self, name: str, make: Callable[[], alt.TopLevelMixin]) -> bool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                chart = make()
            except NoDataError as exc:
                self.report.skipped.append((name, str(exc)))
                return False
        spec = widen(paint_runs(chart.to_dict(), self.domains, self.colours), EXTRA_WIDTH)
        index = self.page.chart(spec, name)
        self.charts.append((name, self.page.specs[index]))  # validated once; the PNGs reuse the spec
        self.report.charts.append(name)
        for warning in caught:
            self.page.paragraph(f"note: {warning.message}")
        return True

    @contextmanager
    def section(self, text: str, level: int = 2) -> Iterator[None]:
        """A heading that stays only if something (a chart, a table, a note) follows it."""
        start = len(self.page.parts)
        self.page.heading(text, level)
        yield
        if len(self.page.parts) == start + 1:
            del self.page.parts[start]


def _leaves(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _leaves(item, f"{prefix}.{key}", out)
    else:
        out[prefix] = (
            value if isinstance(value, int | float | str | bool) or value is None else json.dumps(value)
        )


def run_rows(overview: Any) -> list[dict[str, Any]]:
    """One row per run: its columns, then one column per config leaf and per summary value (sortable)."""
    rows = []
    for row in overview.to_dicts():
        config, summary = json.loads(row.pop("config") or "{}"), json.loads(row.pop("summary") or "{}")
        flat: dict[str, Any] = {}
        _leaves(config if isinstance(config, dict) else {"value": config}, "config", flat)
        shown = {
            k: v for k, v in (summary if isinstance(summary, dict) else {}).items() if k not in _NOT_METRICS
        }
        _leaves(shown, "summary", flat)
        rows.append({**row, **{k: v for k, v in flat.items() if k not in ("config", "summary")}})
    keys = sorted({k for r in rows for k in r if k.startswith(("config.", "summary."))})
    return [
        {
            **{k: v for k, v in r.items() if not k.startswith(("config.", "summary."))},
            **{k: r.get(k) for k in keys},
        }
        for r in rows
    ]


def is_sweep(runs: list[str], sweep_metric: str | None) -> bool:
    """Three or more runs are a sweep; two are a comparison, unless a sweep metric is asked for."""
    return len(runs) >= 3 or (len(runs) == 2 and sweep_metric is not None)


def build_report(
    targets: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] = "report.html",
    *,
    root: str | os.PathLike[str] | None = None,
    png_dir: str | os.PathLike[str] | None = None,
    metrics: Sequence[str] | None = None,
    sweep_metric: str | None = None,
    title: str | None = None,
    max_points: int = plots._common.DEFAULT_MAX_POINTS,
    max_health_runs: int = 2,
    show_progress: bool | None = None,
) -> Report:
    """Write the report page for ``targets`` (run folders, lake roots, or run names under ``root``).

    Sections, each only when it has something to show: the runs (one sortable column per config and
    summary value), training curves, where two runs part (two runs), the sweep (three or more runs, or
    two with ``sweep_metric``), the holdout, the health of the ``max_health_runs`` best runs
    (``--max-health-runs``), and the charts not drawn with the reason. Every chart colours a run the
    same way and spans the page. Raises InvalidArgumentError for an unknown target or an empty lake.
    """
    max_health_runs = positive_int(max_health_runs, "max_health_runs")
    con = connect(resolve_targets(targets, root))
    overview = querylib.query("internal.plot_runs_overview", con=con)
    runs = overview["run"].to_list()
    if len(set(runs)) != len(runs):
        raise InvalidArgumentError(
            f"runs: two runs share a name ({', '.join(runs)}); report runs from one lake at a time"
        )
    if not runs:
        raise InvalidArgumentError("runs: no run found in the given folders")
    report = Report(Path(output))
    page = Page(
        title or f"lakelog report: {', '.join(runs[:4])}{' …' if len(runs) > 4 else ''}",
        f"{len(runs)} run(s) · generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} · lakelog",
    )
    build = _Builder(con, page, report, runs)
    summaries = [json.loads(s or "{}") for s in overview["summary"].to_list()]
    sweep = is_sweep(runs, sweep_metric)

    with build.section("Runs"):
        page.table(run_rows(overview), status_key="status", sortable=True)

    scalars = querylib.query("internal.plot_scalar_names", con=con)
    names = scalars["name"].unique().to_list()
    per_epoch = int(scalars["n_epochs"].max() or 0) > 1
    chosen = list(metrics) if metrics else _auto_metrics(names)
    with build.section("Training curves"):
        if chosen:
            build.chart("curves", lambda: plots.metric_curves(con, chosen, max_points=max_points))
            if per_epoch and not sweep:  # a sweep draws it once, labelled by config
                build.chart("loss per epoch", lambda: plots.epoch_history(con, chosen[0]))
            elif not per_epoch and int(scalars["n"].max() or 0) > 1:
                report.skipped.append(
                    (
                        f"{chosen[0]} per epoch",
                        "every scalar sits in one epoch: if the runs train for several, pass epoch= to "
                        "run.log (run.log({...}, step=step, epoch=epoch)) or call run.log_batch(epoch=...) first",
                    )
                )
        else:
            page.paragraph("No plain scalars (loss, acc…) were logged.")

    if len(runs) == 2:
        a, b = runs
        with build.section(f"Where {b} parts from {a}"):
            build.chart("divergence", lambda: plots.divergence(con, a, b, max_points=max_points))
            layers, notes = diff_findings(con, a, b)
            with build.section("diff findings", 3):
                page.table(layers, status_key="status")
                for note in notes:
                    page.paragraph(note)

    ranked, why = runs, "first"
    if sweep:
        metric = sweep_metric or _sweep_metric(summaries)
        if metric:
            board = querylib.query("leaderboard", con=con, metric=metric)
            ranked, why = board["run"].to_list(), f"best (by {metric})"
        with build.section("Sweep"):
            curve = chosen[0] if chosen else "loss"
            build.chart(
                "sweep curves", lambda: plots.sweep_curves(con, curve, per="epoch" if per_epoch else "step")
            )
            if metric:
                build.chart("leaderboard", lambda: plots.leaderboard(con, metric))
                if len(set(overview["config"].to_list())) > 1:
                    build.chart("hyperparameters", lambda: plots.parallel_coordinates(con, metric))
            build.chart("training time", lambda: plots.training_time(con))

    with build.section("Holdout"):
        build.chart("holdout accuracy", lambda: plots.holdout_accuracy(con, max_points=max_points))

    health = ranked[:max_health_runs]
    for number, run in enumerate(progress(health, desc="report", unit="run", show=show_progress)):
        with build.section(f"Health: {run}"):
            if number == 0 and len(runs) > len(health):
                page.paragraph(
                    f"Health of the {why} {len(health)} of {len(runs)} runs; report the others on their own, "
                    "or raise --max-health-runs (max_health_runs= in Python)."
                )
            build.chart(
                f"{run}: group norms", lambda run=run: plots.group_norms(con, run, max_points=max_points)
            )
            build.chart(
                f"{run}: learning rates",
                lambda run=run: plots.learning_rates(con, run, max_points=max_points),
            )
            build.chart(f"{run}: holdout samples", lambda run=run: plots.holdout_heatmap(con, run))
            build.chart(
                f"{run}: label balance", lambda run=run: plots.label_balance(con, run, max_points=max_points)
            )
            with build.section("doctor findings", 3):
                page.table(doctor_findings(con, run), status_key="status")

    with build.section("Not drawn"):
        page.table([{"chart": name, "why": why} for name, why in report.skipped])
    report.path = page.save(output)
    if png_dir is not None:
        folder = Path(png_dir)
        for index, (name, chart) in enumerate(
            progress(build.charts, desc="png", unit="chart", show=show_progress)
        ):
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            report.pngs.append(save_png(chart, folder / f"{index:02d}-{slug}.png"))
    return report
