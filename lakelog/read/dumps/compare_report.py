"""What ``compare-dumps`` tells and writes: the summary, the ``dump_diffs`` table, a JSON report and
six panels as one altair chart (a self-contained HTML page and a PNG, both made offline).

Every file is written to a temporary name in its folder and renamed, like every other lakelog file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from lakelog.lake import dump_layout as L
from lakelog.lake.files import write_atomic, write_text_atomic
from lakelog.read.dumps.comparison import FIRST_NAMES, Comparer, DumpComparison, summary_lines

if TYPE_CHECKING:
    import altair as alt

_TABLE_ROWS = 200
_WIDTH, _HEIGHT = 360, 200


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _mean_max(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [abs(v) for v in values if v is not None and math.isfinite(v)]
    return (sum(present) / len(present), max(present)) if present else (None, None)


def summarize(
    result: DumpComparison,
    comparer: Comparer,
    listing_a: L.DumpListing,
    listing_b: L.DumpListing,
    *,
    filter: str,
    optimizer: bool,
) -> dict[str, Any]:
    """The numbers a person reads first: how far apart, how similar, where the first difference is."""
    steps, diffs = result.steps, result.diffs
    l2 = steps["l2"].to_list()
    cos = [c for c in steps["cosine"].to_list() if c is not None and math.isfinite(c)]
    worst = int(steps["step"][int(steps["l2"].arg_max())]) if len(steps) else None
    first = None
    differing = diffs.filter(~pl.col("equal"))
    if len(differing):
        step = int(differing["step"].min())
        names = differing.filter(pl.col("step") == step)
        first = {
            "step": step,
            "n_tensors": len(names),
            "tensors": names["name"].head(FIRST_NAMES).to_list(),
            "max_abs_diff": _finite(float(names["max_abs_diff"].max())),
            "at_first_compared_step": step == int(steps["step"].min()),
        }
    loss_mean, loss_max = _mean_max(steps["loss_diff"].to_list())
    acc_mean, acc_max = _mean_max(steps["acc_diff"].to_list())
    only_a = sorted(set(listing_a.steps) - set(listing_b.steps))
    only_b = sorted(set(listing_b.steps) - set(listing_a.steps))
    return {
        "run_a": result.run_a,
        "run_b": result.run_b,
        "dir_a": str(listing_a.run_dir),
        "dir_b": str(listing_b.run_dir),
        "filter": filter,
        "optimizer": optimizer,
        "steps_compared": len(steps),
        "first_step": int(steps["step"].min()),
        "last_step": int(steps["step"].max()),
        "tensors_compared": len(diffs),
        "identical": first is None,
        "l2_mean": _finite(sum(l2) / len(l2)),
        "l2_max": _finite(max(l2)),
        "l2_max_step": worst,
        "cosine_mean": sum(cos) / len(cos) if cos else None,
        "cosine_min": min(cos) if cos else None,
        "first_difference": first,
        "loss_abs_diff_mean": loss_mean,
        "loss_abs_diff_max": loss_max,
        "acc_abs_diff_mean": acc_mean,
        "acc_abs_diff_max": acc_max,
        "steps_only_in_a": only_a,
        "steps_only_in_b": only_b,
        "gaps_a": listing_a.gaps,
        "gaps_b": listing_b.gaps,
        "incomplete_a": [str(p) for p in listing_a.incomplete],
        "incomplete_b": [str(p) for p in listing_b.incomplete],
        "mismatches": list(comparer.mismatches.values()),
        "errors": comparer.errors,
    }


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def report(result: DumpComparison) -> dict[str, Any]:
    """Per step, per tensor: the JSON report (``dump_comparison.json``), NaN and infinity as null."""
    tensors = result.diffs.drop("run_a", "run_b").partition_by("step", as_dict=True, include_key=False)
    steps = []
    for row in result.steps.to_dicts():
        part = tensors.get((row["step"],))
        steps.append({**row, "tensors": part.to_dicts() if part is not None else []})
    return _clean({"summary": result.summary, "steps": steps})


def write_outputs(result: DumpComparison, out: Path) -> dict[str, Path]:
    """Parquet tables, the JSON report and the chart (HTML and PNG) under ``out``."""
    files: dict[str, Path] = {}
    for table, frame in (("dump_diffs", result.diffs), ("dump_steps", result.steps)):
        folder = out / table
        folder.mkdir(parents=True, exist_ok=True)
        files[table] = write_atomic(folder / "part-0.parquet", frame.write_parquet)
    text = json.dumps(report(result), indent=1, allow_nan=False)
    files["report"] = write_text_atomic(out / "dump_comparison.json", text)
    from lakelog.read.plots.export import Page, save_png

    chart = dump_chart(result)
    page = _page(result, chart, Page)
    files["html"] = page.save(out / "dump_comparison.html")  # pages and PNGs are written atomically too
    files["png"] = save_png(chart, out / "dump_comparison.png", scale=1.5)
    return files


def _page(result: DumpComparison, chart: alt.VConcatChart, page_type: type) -> Any:
    """A self-contained page (Vega inlined, so it opens with no network): summary, chart, one row per step."""
    page = page_type(
        f"Dumps compared: {result.run_a} vs {result.run_b}",
        f"{result.summary['dir_a']} vs {result.summary['dir_b']}, filter {result.summary['filter']!r}",
    )
    for line in summary_lines(result):
        page.paragraph(line)
    page.chart(chart, "dump comparison")
    rows = [{k: _finite(v) for k, v in row.items()} for row in result.steps.head(_TABLE_ROWS).to_dicts()]
    status = [{"status": "differs" if row["n_differing"] else "same", **row} for row in rows]
    caption = f"first {_TABLE_ROWS} steps; every step is in dump_steps/ and dump_comparison.json"
    page.table(status, status_key="status", caption=caption if len(result.steps) > _TABLE_ROWS else None)
    return page


RUN_COLORS = ["#4c78a8", "#f58518"]
"""Run A and run B in the panels that show both."""

NEUTRAL = "#555555"
"""The panels of one series (L2, cosine, differences): no run's colour."""


def dump_chart(result: DumpComparison) -> alt.VConcatChart:
    """Six panels: weight L2, cosine, loss of both, loss difference, accuracy of both, its difference."""
    import altair as alt

    rows = result.steps.to_dicts()
    a, b = result.run_a, result.run_b
    steps = [
        rows[0]["step"],
        rows[-1]["step"],
    ]  # one x range for all six panels, even where a value is missing

    def series(key: str, **extra: Any) -> list[dict]:
        return [{"step": r["step"], "value": r[key], **extra} for r in rows if _finite(r[key]) is not None]

    def absolute(key: str) -> list[dict]:
        return [{**p, "value": abs(p["value"])} for p in series(key)]

    def panel(
        values: list[dict], title: str, y_title: str, *, by_run: bool = False, zero: bool = False
    ) -> alt.Chart:
        if not values:
            note = alt.Data(values=[{"note": f"no {y_title.split(' ')[0].lower()} in the dumps' metadata"}])
            return (
                alt.Chart(note)
                .mark_text(size=13)
                .encode(text="note:N")
                .properties(title=title, width=_WIDTH, height=_HEIGHT)
            )
        encoding: dict[str, Any] = {
            "x": alt.X(
                "step:Q",
                title="step",
                axis=alt.Axis(format="d", tickMinStep=1),
                scale=alt.Scale(domain=steps),
            ),
            "y": alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=zero)),
            "tooltip": ["step:Q", "value:Q"],
        }
        if by_run:
            encoding["color"] = alt.Color(
                "run:N", title="run", scale=alt.Scale(domain=[a, b], range=RUN_COLORS)
            )
            encoding["strokeDash"] = alt.StrokeDash(
                "run:N", legend=None
            )  # equal runs overlap: keep both visible
            encoding["tooltip"] = ["run:N", "step:Q", "value:Q"]
        # one series (a distance, a difference): a neutral colour, never run A's, and no legend
        mark = {} if by_run else {"color": NEUTRAL, "point": alt.OverlayMarkDef(color=NEUTRAL)}
        return (
            alt.Chart(alt.Data(values=values))
            .mark_line(**{"point": True, **mark})
            .encode(**encoding)
            .properties(title=title, width=_WIDTH, height=_HEIGHT)
        )

    chart = alt.vconcat(
        alt.hconcat(
            panel(series("l2"), "Weight divergence", "L2 distance of the weights", zero=True),
            panel(series("cosine"), "Weight similarity", "cosine similarity of the weights"),
        ),
        alt.hconcat(
            panel(
                series("loss_a", run=a) + series("loss_b", run=b), "Loss of both runs", "loss", by_run=True
            ),
            panel(absolute("loss_diff"), "Loss difference", "loss |a - b|", zero=True),
        ),
        alt.hconcat(
            panel(
                series("acc_a", run=a) + series("acc_b", run=b),
                "Accuracy of both runs",
                "accuracy",
                by_run=True,
            ),
            panel(absolute("acc_diff"), "Accuracy difference", "accuracy |a - b|", zero=True),
        ),
    )
    return chart.resolve_legend(color="shared", strokeDash="shared").properties(
        title=f"{a} vs {b}: weights (filter {result.summary.get('filter', 'all')!r}), loss, accuracy"
    )
