"""The notebooks a user opens first run top to bottom in a fresh kernel, in a scratch folder, with no
network, and their charts need none: vega is inlined, no output loads a remote script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))

EXECUTE = """
import sys
import nbformat
from nbclient import NotebookClient

source, target, folder = sys.argv[1:4]
nb = nbformat.read(source, as_version=4)
NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()
nbformat.write(nb, target)
"""

REMOTE = re.compile(
    r"""<script[^>]+src=["']?(https?:)?//|cdn\\.jsdelivr|unpkg\\.com|cdnjs|requirejs\\.config""", re.I
)


def _no_network() -> list[str]:
    """A command prefix that runs its command in a network namespace with only loopback (kernels talk over it)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    probe = subprocess.run(
        ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return []
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


def test_there_are_at_least_three_notebooks_stored_without_outputs() -> None:
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), (
            f"{path.name} has outputs"
        )
        source = "\n".join(cell.source for cell in code)
        assert "querylib.get(" in source, f"{path.name} does not show the library SQL it uses"
        assert "SELECT" in source, f"{path.name} has no hand-written SQL cell"
        assert "plots." in source, f"{path.name} draws no chart"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_offline_top_to_bottom(path: Path, tmp_path: Path) -> None:
    executed = tmp_path / path.name
    prefix = _no_network()
    done = subprocess.run(
        [*prefix, sys.executable, "-c", EXECUTE, str(path), str(executed), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]  # CellExecutionError names the cell that failed
    nb = nbformat.read(executed, as_version=4)
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    shown = [out for out in outputs if out.output_type in ("execute_result", "display_data")]
    charts = [out for out in shown if "window.vegaEmbed" in out["data"].get("text/html", "")]
    assert len(charts) >= 2, f"{path.name} showed {len(charts)} charts"
    for out in shown:
        for kind, value in out["data"].items():
            text = value if isinstance(value, str) else str(value)
            assert not REMOTE.search(text), f"{path.name}: a {kind} output loads a remote script"
    for chart in charts:  # vega, vega-lite and vega-embed travel with every chart
        assert "window.vegaLite=" in chart["data"]["text/html"]
    assert any(p.is_dir() and p.name.startswith("runs") for p in tmp_path.iterdir())
    if Path(CHROMIUM).exists():  # and a browser with no network draws the chart from the output alone
        page = tmp_path / "chart.html"
        page.write_text(f"<!DOCTYPE html><html><body>{charts[0]['data']['text/html']}</body></html>")
        shown = subprocess.run(
            [
                *prefix,
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={tmp_path / 'chrome'}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        failed = re.search(r'<pre>chart failed: (?!" \+)', shown.stdout)  # the element, not the script's text
        assert "<svg" in shown.stdout and failed is None, shown.stderr[-2000:]
    if prefix:
        probe = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-c",
                "import socket; print(socket.socket().connect_ex(('1.1.1.1', 80)))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.strip() != "0"  # the namespace really had no network
