"""Is a run healthy: gradients, weights, updates and learning rates per group, holdout, batch balance."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import polars as pl

from lakelog.errors import InvalidArgumentError
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
    log_floor,
    one_run,
    title,
)

PANELS = {
    "grad_norm": "gradient norm",
    "weight_norm": "weight norm",
    "update_norm": "update norm",
    "update_ratio": "update / weight",
}
HEALTHY_RATIO = 1e-3


DARK2 = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
WHOLE_MODEL = "(all)"


def _group_color(groups: list[str]) -> alt.Color:
    """Parameter groups in the dark2 colours (tableau's mean runs elsewhere on a page), by name order, so a
    group has the same colour in every chart of a run; the whole model is grey."""
    named = sorted(g for g in set(groups) if g != WHOLE_MODEL)
    domain = named + ([WHOLE_MODEL] if WHOLE_MODEL in groups else [])
    colours = [DARK2[i % (len(DARK2) - 1)] for i in range(len(named))] + ["#888888"] * (WHOLE_MODEL in groups)
    return alt.Color(
        "group:N",
        title="group",
        scale=alt.Scale(domain=domain, range=colours),
        legend=alt.Legend(orient="right"),
    )


def group_norms(
    source: Source,
    run: str | None = None,
    *,
    metrics: Sequence[str] = ("grad_norm", "weight_norm", "update_ratio"),
    max_points: int = DEFAULT_MAX_POINTS,
) -> alt.VConcatChart:
    """Gradient norm, weight norm and update-to-weight ratio per parameter group over steps, log scale.

    Zeros (a frozen group's updates) are drawn as triangles on the floor of the panel rather than lost
    to the log axis; the ratio panel has a dashed guide at 1e-3, a common healthy order of magnitude.
    """
    con = connection(source)
    name = one_run(con, run)
    unknown = [m for m in metrics if m not in PANELS]
    if unknown or not metrics:
        raise InvalidArgumentError(f"metrics: expected a subset of {list(PANELS)}, got {metrics!r}")
    frame = fetch(
        con,
        "internal.plot_group_norms",
        run=name,
        max_points=check_max_points(max_points),
        missing=f"run {name!r} has no grad_norm/weight_norm/update_norm scalars or params rows "
        "(call run.watch(model, optimizer) while training)",
    )
    frame = log_floor(frame.filter(pl.col("metric").is_in(list(metrics))), by="metric")
    panels = []
    present = [m for m in metrics if m in set(frame["metric"].to_list())]
    for index, metric in enumerate(present):
        base = alt.Chart().transform_filter(alt.datum.metric == metric)
        x = alt.X("step:Q", title="step" if index == len(present) - 1 else None, axis=alt.Axis(**STEP_AXIS))
        y = alt.Y(
            "plot_value:Q",
            title=f"{PANELS[metric]} (log)",
            scale=alt.Scale(type="log", nice=False, padding=8),
        )
        tooltip = [
            alt.Tooltip("group:N"),
            alt.Tooltip("step:Q", format=",.0f"),
            alt.Tooltip("value:Q", title=PANELS[metric], format=".4g"),
            alt.Tooltip("n:Q", title="steps averaged"),
        ]
        colour = _group_color(frame["group"].to_list())
        layers = [base.mark_line(strokeWidth=1.6).encode(x=x, y=y, color=colour, tooltip=tooltip)]
        if frame.filter(
            (pl.col("metric") == metric) & pl.col("at_floor")
        ).height:  # no empty layers: vega warns
            layers.append(
                base.mark_point(shape="triangle-down", filled=True, size=40)
                .encode(x=x, y=y, color=colour, tooltip=tooltip)
                .transform_filter(alt.datum.at_floor)
            )
        if metric == "update_ratio":
            guide = alt.InlineData(values=[{"value": HEALTHY_RATIO, "label": "1e-3"}])
            layers.append(alt.Chart(guide).mark_rule(strokeDash=[4, 4], color="#888").encode(y="value:Q"))
        panels.append(
            alt.layer(*layers).properties(
                width=WIDTH, height=150, title=alt.TitleParams(PANELS[metric], anchor="start", fontSize=12)
            )
        )
    return (
        alt.vconcat(*panels, data=data(frame), spacing=10)
        .resolve_scale(x="shared", y="independent")
        .properties(
            title=title(
                f"{name}: per-group norms",
                "log scale; triangles at the bottom are zeros (frozen); dashed: update/weight = 1e-3",
            )
        )
    )


def learning_rates(
    source: Source, run: str | None = None, *, max_points: int = DEFAULT_MAX_POINTS
) -> alt.LayerChart:
    """The learning rate each parameter group actually got (``lr/<group>`` scalars), log scale."""
    con = connection(source)
    name = one_run(con, run)
    frame = fetch(
        con,
        "internal.plot_scalar_family",
        run=name,
        prefix="lr/",
        max_points=check_max_points(max_points),
        missing=f"run {name!r} has no lr/<group> scalars (run.watch(model, optimizer) logs them)",
    )
    frame = log_floor(frame.rename({"series": "group"}))
    x = alt.X("step:Q", title="step", axis=alt.Axis(**STEP_AXIS))
    y = alt.Y(
        "plot_value:Q", title="learning rate (log)", scale=alt.Scale(type="log", nice=False, padding=10)
    )
    tooltip = [
        alt.Tooltip("group:N"),
        alt.Tooltip("step:Q", format=",.0f"),
        alt.Tooltip("value:Q", title="lr", format=".3g"),
    ]
    line = (
        alt.Chart()
        .mark_line(strokeWidth=2, interpolate="step-after")
        .encode(x=x, y=y, color=_group_color(frame["group"].to_list()), tooltip=tooltip)
    )
    layers = [line]
    if frame["at_floor"].any():  # no empty layers: vega warns about their infinite extent
        layers.append(
            alt.Chart()
            .mark_point(shape="triangle-down", filled=True, size=40)
            .encode(x=x, y=y, color=_group_color(frame["group"].to_list()), tooltip=tooltip)
            .transform_filter(alt.datum.at_floor)
        )
    return alt.layer(*layers, data=data(frame)).properties(
        width=WIDTH,
        height=200,
        title=title(
            f"{name}: learning rate per group",
            "as the optimizer applied it; log scale, triangles at the bottom are zeros",
        ),
    )


def holdout_accuracy(
    source: Source, runs: str | Sequence[str] | None = None, *, max_points: int = DEFAULT_MAX_POINTS
) -> alt.Chart:
    """Accuracy on the fixed holdout set over steps, one line per run."""
    con = connection(source)
    chosen = check_runs(con, runs)
    frame = fetch(
        con,
        "internal.plot_holdout_accuracy",
        runs=chosen,
        max_points=check_max_points(max_points),
        missing="no holdout rows nor holdout/acc scalars (pass holdout=... to run.watch)",
    )
    return (
        alt.Chart(data(frame))
        .mark_line(point=alt.OverlayMarkDef(size=14), strokeWidth=1.8)
        .encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(**STEP_AXIS)),
            y=alt.Y(
                "value:Q", title="holdout accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])
            ),
            color=alt.Color("run:N", title="run"),
            tooltip=[
                alt.Tooltip("run:N"),
                alt.Tooltip("step:Q", format=",.0f"),
                alt.Tooltip("value:Q", format=".1%"),
                alt.Tooltip("n_samples:Q", title="samples"),
            ],
        )
        .properties(
            width=WIDTH,
            height=220,
            title=title("holdout accuracy", "fixed holdout set, same samples every time"),
        )
    )


def holdout_heatmap(
    source: Source, run: str | None = None, *, max_samples: int = 60, max_steps: int = 120
) -> alt.Chart:
    """Per holdout sample (rows) and step (columns): right or wrong. The samples that flip most come first."""
    con = connection(source)
    name = one_run(con, run)
    frame = fetch(
        con,
        "internal.plot_holdout_heatmap",
        run=name,
        max_samples=check_max_points(max_samples, "max_samples"),
        max_steps=check_max_points(max_steps, "max_steps"),
        missing=f"run {name!r} has no holdout rows (pass holdout=... to run.watch)",
    )
    frame = frame.with_columns(
        (
            pl.lit("#")
            + pl.col("sample_idx").cast(pl.String)
            + pl.lit(" · ")
            + pl.col("flips").cast(pl.String)
            + pl.when(pl.col("flips") == 1).then(pl.lit(" flip")).otherwise(pl.lit(" flips"))
        ).alias("sample"),
        pl.when(pl.col("correct")).then(pl.lit("right")).otherwise(pl.lit("wrong")).alias("outcome"),
    )
    order = frame["sample"].unique(maintain_order=True).to_list()
    n_flipping = frame.filter(pl.col("flips") > 0)["sample_idx"].n_unique()
    return (
        alt.Chart(data(frame))
        .mark_rect()
        .encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(**STEP_AXIS), scale=alt.Scale(nice=False)),
            x2="step_end:Q",
            y=alt.Y("sample:N", title="holdout sample", sort=order, axis=alt.Axis(labelFontSize=9)),
            color=alt.Color(
                "outcome:N",
                title="prediction",
                scale=alt.Scale(domain=["right", "wrong"], range=["#59a14f", "#e15759"]),
            ),
            tooltip=[
                alt.Tooltip("sample_idx:Q", title="sample"),
                alt.Tooltip("step:Q", format=",.0f"),
                alt.Tooltip("label:Q"),
                alt.Tooltip("prediction:Q"),
                alt.Tooltip("flips:Q"),
            ],
        )
        .properties(
            width=WIDTH,
            height=max(120, 12 * len(order)),
            title=title(
                f"{name}: holdout samples over steps",
                f"{n_flipping} of the {len(order)} samples shown flip at least once",
            ),
        )
    )


def label_balance(
    source: Source, run: str | None = None, *, max_points: int = DEFAULT_MAX_POINTS
) -> alt.LayerChart:
    """Share of each label in the training batches over steps; the dashed line is a perfectly balanced batch."""
    con = connection(source)
    name = one_run(con, run)
    frame = fetch(
        con,
        "internal.plot_label_balance",
        run=name,
        max_points=check_max_points(max_points),
        missing=f"run {name!r} has no label_pct/<class> scalars nor labelled predictions",
    )
    balanced = 100.0 / max(1, frame["label"].n_unique())
    lines = (
        alt.Chart()
        .mark_line(strokeWidth=1.5)
        .encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(**STEP_AXIS)),
            y=alt.Y("pct:Q", title="share of batch (%)", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("label:N", title="label"),
            tooltip=[
                alt.Tooltip("label:N"),
                alt.Tooltip("step:Q", format=",.0f"),
                alt.Tooltip("pct:Q", format=".1f"),
                alt.Tooltip("n:Q", title="steps averaged"),
            ],
        )
    )
    guide = (
        alt.Chart(alt.InlineData(values=[{"pct": balanced}]))
        .mark_rule(strokeDash=[4, 4], color="#888")
        .encode(y="pct:Q")
    )
    return alt.layer(lines, guide, data=data(frame)).properties(
        width=WIDTH,
        height=HEIGHT - 60,
        title=title(f"{name}: label balance per batch", f"dashed: {balanced:.0f}% each"),
    )
