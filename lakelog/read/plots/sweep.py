"""A sweep at a glance: curves per configuration, a leaderboard, hyperparameters vs metric, time per run."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import polars as pl

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import positive_int
from lakelog.read.plots._common import (
    DEFAULT_MAX_POINTS,
    HEIGHT,
    STEP_AXIS,
    WIDTH,
    NoDataError,
    Source,
    check_max_points,
    check_runs,
    connection,
    data,
    fetch,
    label_of,
    title,
)
from lakelog.read.plots.curves import epoch_history

STATE_COLOURS = {"finished": "#4c78a8", "running": "#bab0ac"}
AXIS_SPACING = 150
"""Pixels per parallel-coordinates axis: room for its name and its values."""
_LOWER_IS_BETTER = ("loss", "err", "fpr", "perplexity", "time", "duration", "mse", "mae")


def lower_is_better(metric: str) -> bool:
    """Guess the direction of a metric from its name (losses, errors and times go down)."""
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


def _direction(metric: str, higher_is_better: bool | None) -> bool:
    if not isinstance(metric, str) or not metric:
        raise InvalidArgumentError(f"metric: expected a summary key such as 'holdout/acc', got {metric!r}")
    return (not lower_is_better(metric)) if higher_is_better is None else bool(higher_is_better)


def _with_labels(con: object, frame: pl.DataFrame, runs: list[str]) -> pl.DataFrame:
    labels = label_of(con, runs)
    return frame.with_columns(pl.col("run").replace_strict(labels, default=pl.col("run")).alias("label"))


def sweep_curves(
    source: Source,
    metric: str = "loss",
    runs: str | Sequence[str] | None = None,
    *,
    per: str = "epoch",
    max_points: int = DEFAULT_MAX_POINTS,
) -> alt.Chart | alt.LayerChart:
    """The metric of every configuration overlaid, labelled by the config values that differ between runs."""
    con = connection(source)
    chosen = check_runs(con, runs)
    if per == "epoch":
        return epoch_history(
            con,
            metric,
            chosen or None,
            color_labels=label_of(con, chosen),
            chart_title=f"{metric} per epoch, per configuration",
        )
    if per != "step":
        raise InvalidArgumentError(f"per: expected 'epoch' or 'step', got {per!r}")
    frame = fetch(
        con,
        "internal.plot_metric_curves",
        names=[metric],
        runs=chosen,
        max_points=check_max_points(max_points),
        missing=f"no scalar named {metric!r} in the sweep's runs",
    )
    frame = _with_labels(con, frame, chosen)
    pick = alt.selection_point(fields=["label"], bind="legend")
    return (
        alt.Chart(data(frame))
        .mark_line(strokeWidth=1.4)
        .encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(**STEP_AXIS)),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color("label:N", title="config", legend=alt.Legend(symbolLimit=40, labelLimit=320)),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("label:N", title="config"),
                alt.Tooltip("step:Q", format=",.0f"),
                alt.Tooltip("value:Q", format=".5g"),
            ],
        )
        .add_params(pick)
        .properties(width=WIDTH, height=HEIGHT, title=title(f"{metric} per step, per configuration"))
    )


def leaderboard(
    source: Source,
    metric: str,
    *,
    higher_is_better: bool | None = None,
    runs: str | Sequence[str] | None = None,
    top: int = 30,
) -> alt.LayerChart:
    """Runs ranked by a summary metric (the library's ``leaderboard`` query), best on top, labelled by config."""
    con = connection(source)
    chosen = check_runs(con, runs)
    higher = _direction(metric, higher_is_better)
    top = positive_int(top, "top")
    frame = fetch(con, "leaderboard", metric=metric, descending=higher, missing="the lake holds no runs")
    frame = frame.filter(pl.col("metric_value").is_not_null() & pl.col("metric_value").is_finite())
    if chosen:
        frame = frame.filter(pl.col("run").is_in(chosen))
    if frame.is_empty():
        raise NoDataError(f"no run has {metric!r} in its summary nor as a logged scalar")
    total = frame.height
    frame = frame.select(
        pl.col("place").alias("rank"),
        "run",
        pl.col("metric_value").alias("value"),
        pl.col("train_time_s").alias("duration_s"),
        "final_loss",
    )
    frame = _with_labels(con, frame.head(top), chosen).with_columns(
        (pl.col("rank").cast(pl.String) + pl.lit(". ") + pl.col("label")).alias("entry"),
        (pl.col("rank") == 1).alias("best"),
    )
    order = frame["entry"].to_list()
    y = alt.Y("entry:N", title=None, sort=order, axis=alt.Axis(labelLimit=360))
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("value:Q", title=metric),
            y=y,
            # each run in its own colour (the report pins it across charts); the best is ranked 1 on top
            color=alt.Color("label:N", title="config", legend=None),
            tooltip=[
                alt.Tooltip("rank:Q"),
                alt.Tooltip("run:N"),
                alt.Tooltip("label:N", title="config"),
                alt.Tooltip("value:Q", title=metric, format=".5g"),
                alt.Tooltip("final_loss:Q", format=".4g"),
                alt.Tooltip("duration_s:Q", title="time (s)", format=".1f"),
            ],
        )
    )
    labels = (
        alt.Chart()
        .mark_text(align="left", dx=3, fontSize=10)
        .encode(x="value:Q", y=y, text=alt.Text("value:Q", format=".4~g"))
    )
    shown = f"top {top} of {total}" if total > top else f"all {total} runs"
    return alt.layer(bars, labels, data=data(frame)).properties(
        width=WIDTH - 160,
        height=max(60, 22 * frame.height),
        title=title(f"leaderboard by {metric}", f"{'higher' if higher else 'lower'} is better; {shown}"),
    )


def parallel_coordinates(
    source: Source,
    metric: str,
    *,
    higher_is_better: bool | None = None,
    runs: str | Sequence[str] | None = None,
) -> alt.LayerChart:
    """Every varying hyperparameter and the metric as vertical axes, one line per run, coloured by the metric.

    Each axis is scaled to 0..1 in SQL (log for values spanning 10x or more, sorted order for strings);
    the values are written along each axis (only the lowest and highest when there are many).
    """
    con = connection(source)
    chosen = check_runs(con, runs)
    higher = _direction(metric, higher_is_better)
    frame = fetch(
        con,
        "internal.plot_sweep_params",
        metric=metric,
        runs=chosen,
        missing=f"no run config varies and no run has {metric!r} in its summary",
    )
    frame = frame.filter(pl.col("score").is_not_null())
    if frame.is_empty():
        raise InvalidArgumentError(f"metric: no run has {metric!r} in its summary")
    keys = frame.sort("axis_kind", "key")["key"].unique(maintain_order=True).to_list()
    ticks = _axis_ticks(frame)
    x = alt.X(
        "key:N",
        title=None,
        sort=keys,
        axis=alt.Axis(
            labelAngle=0,
            labelFontSize=12,
            labelFontWeight="bold",
            labelLimit=AXIS_SPACING - 12,
            orient="bottom",
            domain=False,
            ticks=False,
            labelPadding=10,
        ),
    )
    y = alt.Y("norm:Q", title=None, axis=None, scale=alt.Scale(domain=[-0.04, 1.04]))
    scheme = alt.Scale(scheme="viridis", reverse=not higher)
    lines = (
        alt.Chart(data(frame))
        .mark_line(strokeWidth=1.6, opacity=0.8)
        .encode(
            x=x,
            y=y,
            detail="run:N",
            color=alt.Color("score:Q", title=metric, scale=scheme),
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("key:N", title="axis"),
                alt.Tooltip("raw:N", title="value"),
                alt.Tooltip("score:Q", title=metric, format=".4g"),
            ],
        )
    )
    axes = alt.Chart(data(pl.DataFrame({"key": keys}))).mark_rule(color="#999").encode(x=x)
    # the values along each axis, left of it, on a white halo so the lines never cross out a label
    labels = alt.Chart(data(ticks)).encode(x=x, y=y, text="raw:N")
    halo = labels.mark_text(fontSize=10, align="right", dx=-5, stroke="white", strokeWidth=3, opacity=0.9)
    text = labels.mark_text(fontSize=10, color="#222", align="right", dx=-5)
    return alt.layer(axes, lines, halo, text).properties(
        view=alt.ViewBackground(stroke=None),
        width=max(WIDTH - 140, AXIS_SPACING * len(keys)),
        height=HEIGHT,
        title=title(
            f"hyperparameters vs {metric}",
            "each axis scaled to its own range (log where values span 10x or more)",
        ),
    )


def _axis_ticks(frame: pl.DataFrame, most: int = 8, gap: float = 0.07) -> pl.DataFrame:
    """The values to write along each axis: all of them when there are few, else the lowest and highest;
    a value closer than ``gap`` (of the axis height) to the one written below it is left out, so
    labels never overlap (the tooltip still has every value)."""
    distinct = frame.select("key", "raw", "norm").unique().sort("key", "norm")
    counts = distinct.group_by("key").agg(pl.len().alias("n_values"))
    distinct = distinct.join(counts, on="key")
    few = distinct.filter(pl.col("n_values") <= most)
    ends = distinct.filter(pl.col("n_values") > most).filter(
        (pl.col("norm") == pl.col("norm").min().over("key"))
        | (pl.col("norm") == pl.col("norm").max().over("key"))
    )
    kept = []
    for (key,), part in (
        pl.concat([few, ends])
        .unique(["key", "norm"])
        .sort("key", "norm")
        .group_by("key", maintain_order=True)
    ):
        last = None
        for row in part.iter_rows(named=True):
            if last is None or row["norm"] - last >= gap:
                kept.append({"key": key, "raw": row["raw"], "norm": row["norm"]})
                last = row["norm"]
    return pl.DataFrame(kept, schema={"key": pl.String, "raw": pl.String, "norm": pl.Float64})


def training_time(source: Source, runs: str | Sequence[str] | None = None) -> alt.Chart:
    """Training time per configuration (run.json's duration_s), longest first."""
    con = connection(source)
    chosen = check_runs(con, runs)
    frame = fetch(
        con, "internal.plot_run_times", runs=chosen, missing="no run has a duration or timed scalars yet"
    )
    frame = _with_labels(con, frame.filter(pl.col("duration_s").is_not_null()), chosen).drop("config")
    if frame.is_empty():
        raise InvalidArgumentError("runs: none of the runs has a duration yet (finish them first)")
    frame = frame.with_columns(
        pl.when(pl.col("finished")).then(pl.lit("finished")).otherwise(pl.lit("running")).alias("state")
    )
    states = [state for state in ("finished", "running") if state in frame["state"].to_list()]
    # a legend only when runs are in both states: "running" is not listed when nothing runs
    colour = alt.Color(
        "state:N",
        title=None,
        scale=alt.Scale(domain=states, range=[STATE_COLOURS[state] for state in states]),
        legend=alt.Legend() if len(states) > 1 else None,
    )
    return (
        alt.Chart(data(frame))
        .mark_bar()
        .encode(
            x=alt.X("duration_s:Q", title="training time (s)", axis=alt.Axis(tickCount=8, labelOverlap=True)),
            y=alt.Y("label:N", title=None, sort="-x", axis=alt.Axis(labelLimit=360)),
            color=colour,
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("label:N", title="config"),
                alt.Tooltip("duration_s:Q", format=".1f"),
                alt.Tooltip("last_step:Q"),
                alt.Tooltip("status:N"),
            ],
        )
        .properties(
            width=WIDTH - 160,
            height=max(60, 22 * frame.height),
            title=title("training time per configuration"),
        )
    )
