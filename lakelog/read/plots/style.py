"""One look across the charts of a page: a fixed colour per run, and charts as wide as the page.

altair gives each chart its own colour scale, so the same run is blue in one chart and orange in the
next, depending on which runs the chart holds. ``paint_runs`` pins every run-coloured encoding
(``run``, or a sweep's config ``label``) to one domain and one palette; ``widen`` grows every view's
width so a chart fills the report instead of half of it. Both rewrite a Vega-Lite spec in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TABLEAU10 = [
    "#4c78a8",
    "#f58518",
    "#e45756",
    "#72b7b2",
    "#54a24b",
    "#eeca3b",
    "#b279a2",
    "#ff9da6",
    "#9d755d",
    "#bab0ac",
]
TABLEAU20 = [
    "#4c78a8", "#9ecae9", "#f58518", "#ffbf79", "#54a24b", "#88d27a", "#b79a20", "#f2cf5b", "#439894", "#83bcb6",
    "#e45756", "#ff9d98", "#79706e", "#bab0ac", "#d67195", "#fcbfd2", "#b279a2", "#d6a5c9", "#9e765f", "#d8b5a5",
]  # fmt: skip
RUN_FIELDS = ("run", "label")
"""Encodings that mean "which run": ``run``, and a sweep's ``label`` (the config values that differ),
titled "config" (a class label, field ``label`` too, is not a run)."""

_VIEWS = ("layer", "vconcat", "hconcat", "concat")


def palette(n: int) -> list[str]:
    """``n`` colours: tableau10 up to ten runs, tableau20 beyond (repeating past twenty)."""
    colours = TABLEAU10 if n <= len(TABLEAU10) else TABLEAU20
    return [colours[i % len(colours)] for i in range(n)]


def _means_run(colour: dict[str, Any]) -> bool:
    field = colour.get("field")
    if "condition" in colour or field not in RUN_FIELDS:
        return False
    return field == "run" or colour.get("title") == "config"


def paint_runs(spec: Any, domains: dict[str, Sequence[str]], colours: Sequence[str]) -> Any:
    """Give every nominal ``color`` encoding on a field of ``domains`` that field's fixed domain and ``colours``.

    ``domains`` maps a field (``run``, ``label``) to its values in run order; colours go by position,
    so run i and its config label share a colour. A colour with a condition or its own scale is kept.
    """
    if isinstance(spec, dict):
        colour = spec.get("color")
        if isinstance(colour, dict) and _means_run(colour) and colour["field"] in domains:
            values = list(dict.fromkeys(domains[colour["field"]]))
            if colour.get("type", "nominal") == "nominal" and "domain" not in (colour.get("scale") or {}):
                colour["scale"] = {
                    **(colour.get("scale") or {}),
                    "domain": values,
                    "range": list(colours[: len(values)]),
                }
        for value in spec.values():
            paint_runs(value, domains, colours)
    elif isinstance(spec, list):
        for item in spec:
            paint_runs(item, domains, colours)
    return spec


def widen(spec: dict[str, Any], extra: int) -> dict[str, Any]:
    """Add ``extra`` pixels to the width of every view of ``spec`` (top level, layers, concats, a facet's spec)."""
    width = spec.get("width")
    if isinstance(width, int | float) and not isinstance(width, bool):
        spec["width"] = width + extra
    for key in _VIEWS:
        parts = [part for part in spec.get(key) or [] if isinstance(part, dict)]
        share = extra // len(parts) if key in ("hconcat", "concat") and parts else extra
        for part in parts:
            widen(part, share)
    if isinstance(spec.get("spec"), dict):
        widen(spec["spec"], extra)
    return spec
