"""Charts to files with no network: one self-contained HTML page (Vega JS inlined), or PNGs (vl-convert).

The page embeds vl-convert's bundle of vega, vega-lite and vega-embed once, then renders every
chart into its own div. It records what happened on ``<body>`` (``data-charts-rendered``,
``data-chart-errors``) so a headless browser, or a person, can tell a broken chart from a slow one.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import altair as alt

from lakelog.lake.checks import positive_number
from lakelog.lake.files import write_bytes_atomic, write_text_atomic

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px 40px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 36px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin-top: 24px; } .meta { color: #666; font-size: 13px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; max-width: 560px; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { background: #e8e8e8; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
.table-wrap { overflow-x: auto; max-width: 100%; }
tr.bad td { background: #fdecea; } tr.warn td { background: #fff6e0; } tr.good td { background: #eef7ee; }
.chart { margin: 12px 0 20px; width: 100%; overflow-x: auto; } .chart-error { color: #b00020; font-family: monospace; white-space: pre-wrap; }
.note { color: #666; font-size: 13px; } code { background: #f4f4f4; padding: 1px 4px; }
"""

_RUNNER = """
(function () {
  var specs = JSON.parse(document.getElementById('lakelog-specs').textContent);
  var body = document.body, rendered = 0, errors = [];
  function done() {
    body.setAttribute('data-charts-rendered', String(rendered));
    body.setAttribute('data-chart-errors', String(errors.length));
    if (rendered + errors.length === specs.length) body.setAttribute('data-charts-done', 'true');
  }
  window.addEventListener('error', function (e) { errors.push(String(e.message)); done(); });
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.querySelectorAll('th');
    heads.forEach(function (th, column) {
      th.addEventListener('click', function () {
        var down = th.getAttribute('aria-sort') === 'ascending';
        heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
        var rows = Array.prototype.slice.call(table.querySelectorAll('tr')).slice(1);
        function key(row) {
          var td = row.children[column];
          var v = td ? td.getAttribute('data-value') : null;
          return v !== null && v !== '' ? parseFloat(v) : (td ? td.textContent : '');
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b), c = (typeof x === 'number' && typeof y === 'number') ? x - y
            : String(x).localeCompare(String(y), undefined, {numeric: true});
          return down ? -c : c;
        });
        rows.forEach(function (row) { row.parentNode.appendChild(row); });
      });
    });
  });
  specs.forEach(function (spec, i) {
    var target = document.getElementById('chart-' + i);
    vegaEmbed(target, spec, {renderer: 'svg', actions: {export: true, source: false, compiled: false, editor: false}})
      .then(function () { rendered += 1; done(); })
      .catch(function (err) {
        errors.push(String(err));
        target.innerHTML = '<div class="chart-error">chart failed: ' + String(err).replace(/</g, '&lt;') + '</div>';
        done();
      });
  });
  done();
})();
"""


@dataclass
class Page:
    """An HTML page being assembled: headings, paragraphs, tables and charts, in order."""

    title: str
    subtitle: str = ""
    parts: list[str] = field(default_factory=list)
    specs: list[dict[str, Any]] = field(default_factory=list)
    chart_titles: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
        self.parts.append(f'<h{level} id="{slug}">{html.escape(text)}</h{level}>')

    def paragraph(self, text: str, css: str = "note") -> None:
        self.parts.append(f'<p class="{css}">{html.escape(text)}</p>')

    def chart(self, chart: alt.TopLevelMixin | dict[str, Any], name: str) -> int:
        """Add a chart (or its Vega-Lite spec); ``to_dict`` validates it now, so a bad chart fails here."""
        index = len(self.specs)
        self.specs.append(chart if isinstance(chart, dict) else chart.to_dict())
        self.chart_titles.append(name)
        self.parts.append(f'<div class="chart" id="chart-{index}" data-name="{html.escape(name)}"></div>')
        return index

    def table(
        self,
        rows: list[dict[str, Any]],
        *,
        status_key: str | None = None,
        caption: str | None = None,
        sortable: bool = False,
    ) -> None:
        """A plain HTML table; rows whose ``status_key`` reads bad/warn/good are tinted accordingly.

        ``sortable`` tables sort by a column when its header is clicked (numbers as numbers).
        """
        if not rows:
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out = [
            '<div class="table-wrap"><table class="sortable">'
            if sortable
            else '<div class="table-wrap"><table>'
        ]
        if caption:
            out.append(f"<caption class='note'>{html.escape(caption)}</caption>")
        out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr>")
        for row in rows:
            css = _status_class(row.get(status_key)) if status_key else ""
            cells = []
            for c in columns:
                value = row.get(c)
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                cells.append(
                    f"<td class='num' data-value='{value!r}'>{_fmt(value)}</td>"
                    if numeric
                    else f"<td>{_fmt(value)}</td>"
                )
            out.append(f"<tr class='{css}'>" + "".join(cells) + "</tr>")
        out.append("</table></div>")
        self.parts.append("".join(out))

    def html(self) -> str:
        specs = json.dumps(self.specs, allow_nan=False, default=str).replace("</", "<\\/")
        return "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                "<head>",
                '<meta charset="utf-8">',
                f"<title>{html.escape(self.title)}</title>",
                f"<style>{_STYLE}</style>",
                f"<script>{javascript_bundle()}</script>",
                "</head>",
                "<body>",
                f"<h1>{html.escape(self.title)}</h1>",
                f'<p class="meta">{html.escape(self.subtitle)}</p>',
                *self.parts,
                f'<script type="application/json" id="lakelog-specs">{specs}</script>',
                f"<script>{_RUNNER}</script>",
                "</body>",
                "</html>",
            ]
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, self.html())


def _status_class(status: Any) -> str:
    text = str(status or "").lower()
    if text in ("fail", "failed", "error", "bad", "differs", "critical"):
        return "bad"
    if text in ("warn", "warning", "missing in a", "missing in b", "no overlap"):
        return "warn"
    if text in ("ok", "pass", "passed", "same", "good"):
        return "good"
    return ""


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str)
    return html.escape(str(value))


def vl_version() -> str:
    """The Vega-Lite version altair writes (``v6_4``), for vl-convert to use the same."""
    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    return f"v{major}_{minor}"


def _cache_file() -> Path:
    import vl_convert

    base = os.environ.get("LAKELOG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lakelog"
    )
    return Path(base) / f"vega-embed-bundle-vlc{vl_convert.__version__}-{vl_version()}.js"


@cache
def javascript_bundle() -> str:
    """vega + vega-lite + vega-embed as one script (from vl-convert: no network at build or view time).

    Bundling takes seconds, so the result is kept in ``~/.cache/lakelog`` (``LAKELOG_CACHE_DIR``),
    one file per vl-convert and Vega-Lite version; a cache that cannot be written is skipped.
    """
    import vl_convert

    path = _cache_file()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    bundle = vl_convert.javascript_bundle(vl_version=vl_version()).replace("</script", "<\\/script")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, bundle)  # whole or nothing: a concurrent reader never sees half a bundle
    except OSError:
        pass
    return bundle


def save_png(chart: alt.TopLevelMixin | dict[str, Any], path: str | Path, *, scale: float = 2.0) -> Path:
    """One chart as a PNG, rendered offline by vl-convert."""
    import vl_convert

    scale = positive_number(scale, "scale")
    spec = chart if isinstance(chart, dict) else chart.to_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, vl_convert.vegalite_to_png(spec, scale=scale, vl_version=vl_version()))
