"""Loss / accuracy curves of several runs overlaid, per step or per epoch (read side: no torch)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import altair as alt
import polars as pl

from lakelog.read.plots._common import (
    DEFAULT_MAX_POINTS,
    HEIGHT,
    STEP_AXIS,
    WIDTH,
    Source,
    check_max_points,
    check_runs,
    connection,
    data,
    fetch,
    names_list,
    title,
)


def _legend_highlight(field: str) -> alt.Parameter:
    """Click a legend entry to bring that series forward (shift-click for several)."""
    return alt.selection_point(fields=[field], bind="legend")


def metric_curves(
    source: Source,
    metrics: str | Sequence[str] = "loss",
    runs: str | Sequence[str] | None = None,
    *,
    max_points: int = DEFAULT_MAX_POINTS,
    log_y: bool = False,
    chart_title: str | None = None,
) -> alt.Chart | alt.FacetChart:
    """Scalars (``loss``, ``acc``…) of several runs over steps, one colour per run, one panel per metric.

    Fed by ``plot_metric_curves``, which buckets steps in SQL: at most ``max_points`` points per series.
    """
    con = connection(source)
    names = names_list(metrics, "metrics")
    chosen = check_runs(con, runs)
    frame = fetch(
        con,
        "internal.plot_metric_curves",
        names=names,
        runs=chosen,
        max_points=check_max_points(max_points),
        missing=f"no scalar named {', '.join(map(repr, names))} in runs {', '.join(chosen) or '(all)'}",
    )
    bucketed = int(frame["n"].max()) > 1
    pick = _legend_highlight("run")
    base = (
        alt.Chart(data(frame))
        .mark_line(strokeWidth=1.6)
        .encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(**STEP_AXIS)),
            y=alt.Y(
                "value:Q",
                title=names[0] if len(names) == 1 else None,
                scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False),
            ),
            color=alt.Color("run:N", title="run", legend=alt.Legend(symbolLimit=40, labelLimit=260)),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("name:N", title="scalar"),
                alt.Tooltip("step:Q", format=",.0f"),
                alt.Tooltip("epoch:Q"),
                alt.Tooltip("value:Q", format=".5g"),
                alt.Tooltip("n:Q", title="steps averaged"),
            ],
        )
        .add_params(pick)
    )
    note = f"mean of up to {int(frame['n'].max())} steps per point" if bucketed else "every logged step"
    text = chart_title or f"{' / '.join(names)} per step"
    if len(names) == 1:
        return base.properties(width=WIDTH, height=HEIGHT, title=title(text, note)).interactive(bind_y=False)
    return (
        base.properties(width=WIDTH, height=180)
        .interactive(bind_y=False)
        .facet(row=alt.Row("name:N", title=None, header=alt.Header(labelFontSize=13, labelFontWeight="bold")))
        .resolve_scale(y="independent")
        .properties(title=title(text, note))
    )


def loss_curves(
    source: Source,
    runs: str | Sequence[str] | None = None,
    *,
    metric: str = "loss",
    max_points: int = DEFAULT_MAX_POINTS,
) -> alt.Chart:
    """The loss of several runs overlaid: ``metric_curves`` for one scalar."""
    return metric_curves(source, metric, runs, max_points=max_points)


def _warn_single_epoch(frame: pl.DataFrame, metric: str) -> None:
    """Warn when every run's values sit in one epoch over several steps: ``run.log`` got no ``epoch=``."""
    per_run = frame.group_by("run").agg(pl.len().alias("epochs"), pl.col("n_steps").sum().alias("steps"))
    if per_run["epochs"].max() == 1 and per_run["steps"].max() > 1:
        epoch = frame["epoch"][0]
        warnings.warn(
            f"epoch_history: every {metric!r} value of {per_run.height} run(s) carries epoch {epoch} "
            f"(up to {per_run['steps'].max()} steps each), so a per-epoch chart shows one point per run. "
            "If the runs train for several epochs, pass the epoch when logging: "
            "run.log({'loss': loss}, step=step, epoch=epoch) (or call run.log_batch(epoch=...) first); "
            "otherwise draw per step (plots.sweep_curves(..., per='step') or plots.metric_curves)",
            UserWarning,
            stacklevel=3,
        )


def epoch_history(
    source: Source,
    metric: str = "loss",
    runs: str | Sequence[str] | None = None,
    *,
    color_labels: dict[str, str] | None = None,
    chart_title: str | None = None,
) -> alt.LayerChart:
    """Per-epoch loss history (mean over the epoch's steps, band from min to max), one line per run."""
    con = connection(source)
    names = names_list(metric, "metric")
    chosen = check_runs(con, runs)
    frame = fetch(
        con,
        "internal.plot_epoch_history",
        names=names,
        runs=chosen,
        missing=f"no scalar named {metric!r} in runs {', '.join(chosen) or '(all)'}",
    )
    _warn_single_epoch(frame, metric)
    if color_labels:
        frame = frame.with_columns(
            pl.col("run").replace_strict(color_labels, default=pl.col("run")).alias("label")
        )
        color_field, color_title = "label", "config"
    else:
        color_field, color_title = "run", "run"
    pick = _legend_highlight(color_field)
    color = alt.Color(
        f"{color_field}:N", title=color_title, legend=alt.Legend(symbolLimit=40, labelLimit=320)
    )
    epochs = sorted(frame["epoch"].unique().to_list())
    ticks = alt.Axis(values=epochs, format="d") if len(epochs) <= 30 else alt.Axis(tickMinStep=1, format="d")
    x = alt.X("epoch:Q", title="epoch", axis=ticks)
    band = (
        alt.Chart()
        .mark_area(opacity=0.12)
        .encode(
            x=x,
            y=alt.Y("value_min:Q"),
            y2="value_max:Q",
            color=alt.Color(f"{color_field}:N", legend=None),
            opacity=alt.condition(pick, alt.value(0.12), alt.value(0.02)),
        )
    )
    line = (
        alt.Chart()
        .mark_line(point=True, strokeWidth=1.8)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=f"{metric} (epoch mean)", scale=alt.Scale(zero=False)),
            color=color,
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("epoch:Q"),
                alt.Tooltip("value:Q", title="mean", format=".5g"),
                alt.Tooltip("last_value:Q", title="last", format=".5g"),
                alt.Tooltip("n_steps:Q", title="steps"),
            ],
        )
        .add_params(pick)
    )
    return (
        alt.layer(band, line, data=data(frame))
        .resolve_legend(color="independent")
        .properties(
            width=WIDTH,
            height=HEIGHT,
            title=title(
                chart_title or f"{metric} per epoch", "mean over each epoch's steps; band: min to max"
            ),
        )
    )
