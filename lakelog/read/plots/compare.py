"""Where two runs part: their difference over steps per layer of evidence, the first divergence marked."""

from __future__ import annotations

from dataclasses import dataclass, field

import altair as alt
import polars as pl

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import non_negative_number
from lakelog.read import querylib
from lakelog.read.plots._common import (
    DEFAULT_MAX_POINTS,
    STEP_AXIS,
    WIDTH,
    Source,
    check_max_points,
    check_runs,
    connection,
    data,
    fetch,
    title,
)

RULE_COLOR = "#d62728"
LINE_COLOR = "#4c78a8"
UNITS = {
    "rng": "batches differing",
    "batch_order": "batches differing",
    "inputs": "batches differing",
    "predictions": "Δ logit",
    "loss": "Δ loss",
    "gradients": "Δ grad norm",
    "weights": "Δ weight norm",
    "updates": "Δ update norm",
}


def _pretty(layer: str | None) -> str:
    return (layer or "").replace("_", " ")


@dataclass(frozen=True)
class Divergence:
    """The first step where two runs differ, the layer it shows first in, and each layer's first step."""

    step: int | None
    layer: str | None
    layers: dict[str, int | None] = field(default_factory=dict)
    detail: str | None = None

    @property
    def identical(self) -> bool:
        return self.step is None


def _divergence_frame(
    source: Source, run_a: str, run_b: str, metric: str, tol: float, max_points: int
) -> pl.DataFrame:
    con = connection(source)
    if run_a == run_b:
        raise InvalidArgumentError(f"run_b: expected a run other than run_a, got {run_b!r} twice")
    check_runs(con, [run_a, run_b])
    tol = non_negative_number(tol, "tol")
    return fetch(
        con,
        "internal.plot_divergence",
        run_a=run_a,
        run_b=run_b,
        metric=metric,
        tol=float(tol),
        max_points=check_max_points(max_points),
        missing=f"runs {run_a!r} and {run_b!r} share no logged step in batches, params, predictions "
        f"or the {metric!r} scalar: nothing to compare",
    )


def _summarize(frame: pl.DataFrame) -> Divergence:
    per_layer = frame.group_by("layer", maintain_order=True).agg(
        pl.col("first_step").first(), pl.col("layer_order").first()
    )
    layers = {row["layer"]: row["first_step"] for row in per_layer.sort("layer_order").to_dicts()}
    differing = per_layer.filter(pl.col("first_step").is_not_null()).sort("first_step", "layer_order")
    if differing.is_empty():
        return Divergence(None, None, layers)
    first = differing.row(0, named=True)
    return Divergence(int(first["first_step"]), first["layer"], layers)


def _from_library(
    con: object, run_a: str, run_b: str, metric: str, tol: float, layers: dict[str, int | None]
) -> Divergence | None:
    """The answer of the query library's ``first_divergence`` (the one ``lakelog diff`` gives), when present."""
    if "first_divergence" not in querylib.library():
        return None
    found = querylib.query(
        "first_divergence", con=con, run_a=run_a, run_b=run_b, tol=tol, loss_name=metric, loss_tol=tol
    )
    first = found.filter(pl.col("is_first"))
    if first.is_empty():
        return Divergence(None, None, layers)
    row = first.row(0, named=True)
    return Divergence(int(row["first_step"]), row["layer"], layers, row.get("detail"))


def first_divergence(
    source: Source, run_a: str, run_b: str, *, metric: str = "loss", tol: float = 0.0
) -> Divergence:
    """The first step (and layer) where ``run_b`` stops matching ``run_a``; ``.step`` is None when they agree.

    The step and layer are those of the ``first_divergence`` query (what ``lakelog diff`` reports);
    ``layers`` holds each plotted layer's first differing step.
    """
    con = connection(source)
    frame = _divergence_frame(con, run_a, run_b, metric, tol, DEFAULT_MAX_POINTS)
    own = _summarize(frame)
    return _from_library(con, run_a, run_b, metric, float(tol), own.layers) or own


def divergence(
    source: Source,
    run_a: str,
    run_b: str,
    *,
    metric: str = "loss",
    tol: float = 0.0,
    max_points: int = DEFAULT_MAX_POINTS,
) -> alt.VConcatChart:
    """One row per layer of evidence (batch order, inputs, weights, logits, loss, gradients, updates):
    how far ``run_b`` is from ``run_a`` at each step, differing steps in red, and a red rule with a label
    at the first divergence (exact step, found before bucketing)."""
    con = connection(source)
    frame = _divergence_frame(con, run_a, run_b, metric, tol, max_points)
    own = _summarize(frame)
    found = _from_library(con, run_a, run_b, metric, float(tol), own.layers) or own
    rows = []
    layer_names = list(found.layers)
    for index, layer in enumerate(layer_names):
        part = frame.filter(pl.col("layer") == layer)
        positive = part.filter(pl.col("value") > 0)["value"]
        constant = float(positive.min()) if len(positive) else 1.0
        first = found.layers[layer]
        status = (
            f"first differs at step {first:,}"
            if first is not None
            else f"identical over {int(part['n'].sum()):,} steps"
        )
        y = alt.Y(
            "value:Q",
            title=UNITS.get(layer, f"Δ {layer}"),
            scale=alt.Scale(type="symlog", constant=constant),
            axis=alt.Axis(tickCount=3, format=".2~g"),
        )
        last = index == len(layer_names) - 1
        x = alt.X(
            "step:Q", title="step" if last else None, axis=alt.Axis(labels=last, ticks=last, **STEP_AXIS)
        )
        tooltip = [
            alt.Tooltip("layer:N"),
            alt.Tooltip("step:Q", format=",.0f"),
            alt.Tooltip("value:Q", format=".4g"),
            alt.Tooltip("differs:N"),
            alt.Tooltip("n:Q", title="steps in bucket"),
        ]
        base = alt.Chart().transform_filter(alt.datum.layer == layer)
        line = base.mark_line(color=LINE_COLOR, strokeWidth=1.4, interpolate="step-after").encode(x=x, y=y)
        dots = (
            base.mark_circle(color=RULE_COLOR, size=22, opacity=0.9)
            .encode(x=x, y=y, tooltip=tooltip)
            .transform_filter(alt.datum.differs)
        )
        # an empty layer (no differing step) would make vega warn about an infinite extent
        layers: list[alt.Chart] = [line, dots] if first is not None else [line]
        if found.step is not None:
            rule_data = alt.InlineData(
                values=[
                    {
                        "step": found.step,
                        "label": f" first divergence: step {found.step:,} ({_pretty(found.layer)})",
                    }
                ]
            )
            rule = alt.Chart(rule_data).mark_rule(color=RULE_COLOR, strokeWidth=2).encode(x="step:Q")
            layers.append(rule)
            if index == 0:
                layers.append(
                    alt.Chart(rule_data)
                    .mark_text(
                        align="left",
                        baseline="top",
                        dx=4,
                        dy=2,
                        color=RULE_COLOR,
                        fontWeight="bold",
                        fontSize=12,
                    )
                    .encode(x="step:Q", y=alt.value(0), text="label:N")
                )
        rows.append(
            alt.layer(*layers).properties(
                width=WIDTH,
                height=70,
                title=alt.TitleParams(f"{_pretty(layer)}: {status}", anchor="start", fontSize=12),
            )
        )
    if found.step is None:
        sub = f"identical on every compared step (tol={tol:g})"
    else:
        sub = [
            f"first divergence: step {found.step:,}, first seen in {_pretty(found.layer)} (tol={tol:g}); "
            "red dots: differing steps"
        ]
        if found.detail:
            sub.append(found.detail)
    return (
        alt.vconcat(*rows, data=data(frame), spacing=8)
        .resolve_scale(x="shared", y="independent")
        .properties(
            title=title(f"{run_b} vs {run_a}", sub),
        )
    )
