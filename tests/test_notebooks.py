"""The notebooks a user opens first run top to bottom in a fresh kernel, in a scratch folder."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    charts = [
        out
        for out in outputs
        if out.output_type in ("execute_result", "display_data")
        and (any("vega" in kind for kind in out["data"]) or "vegaEmbed" in out["data"].get("text/html", ""))
    ]
    assert len(charts) >= 2, f"{path.name} showed {len(charts)} charts"
    assert any(
        p.is_dir() and p.name.startswith("runs") for p in tmp_path.iterdir()
    )  # runs went to the scratch folder
