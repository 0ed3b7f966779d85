"""Charts in a notebook with no network: an altair renderer that inlines vega, vega-lite and vega-embed.

altair's default renderer writes HTML that loads vega from a CDN, so a notebook executed or opened
offline shows "Error loading script" instead of its charts. ``lakelog-offline`` writes each chart as
self-contained HTML: the bundle from vl-convert (the same one the HTML report inlines), evaluated once
per page (later charts find ``window.vegaEmbed``), then the chart. Importing ``lakelog.read.plots``
enables it while altair's renderer is still its ``default``; ``alt.renderers.enable("default")``
switches back, and ``enable_offline()`` switches to it explicitly.
"""

from __future__ import annotations

import html
import json
import uuid
from typing import Any

import altair as alt

from lakelog.read.plots.export import javascript_bundle

RENDERER = "lakelog-offline"

_TEMPLATE = """<div id="{id}" class="lakelog-chart"></div>
<script type="text/javascript">
(function () {{
  var target = document.getElementById("{id}");
  function show() {{
    window.vegaEmbed(target, {spec}, {{renderer: "svg", actions: {{export: true, source: false, compiled: false, editor: false}}}})
      .catch(function (err) {{ target.innerHTML = "<pre>chart failed: " + String(err).replace(/</g, "&lt;") + "</pre>"; }});
  }}
  if (typeof window.vegaEmbed !== "function") {{
{bundle}
  }}
  show();
}})();
</script>"""


def chart_html(spec: dict[str, Any]) -> str:
    """One chart as HTML that needs no network: the vega bundle inlined, then ``vegaEmbed``."""
    text = json.dumps(spec, allow_nan=False, default=str).replace("</", "<\\/")
    return _TEMPLATE.format(id=f"lakelog-{uuid.uuid4().hex}", spec=text, bundle=javascript_bundle())


def offline_renderer(spec: dict[str, Any], **_: Any) -> dict[str, str]:
    """The mimebundle altair asks for: self-contained HTML, plus a text fallback naming the chart."""
    title = spec.get("title")
    name = title.get("text") if isinstance(title, dict) else title
    return {
        "text/html": chart_html(spec),
        "text/plain": f"<lakelog chart: {html.escape(str(name or 'chart'))}>",
    }


def enable_offline() -> None:
    """Make altair render every chart with ``lakelog-offline`` (no CDN)."""
    alt.renderers.enable(RENDERER)


alt.renderers.register(RENDERER, offline_renderer)
if alt.renderers.active == "default":
    enable_offline()
