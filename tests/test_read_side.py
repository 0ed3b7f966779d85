"""The read side works without torch: analysing runs must not pay torch's import time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import lakelog


def test_connect_and_query_leave_torch_unimported(tmp_path):
    with lakelog.init(tmp_path, name="a") as run:
        run.log({"loss": 1.0}, step=0)
    script = textwrap.dedent(
        f"""
        import sys
        import lakelog
        con = lakelog.connect({str(tmp_path)!r})
        assert con.execute("SELECT count(*) FROM scalars").fetchone() == (1,)
        from lakelog import querylib, cli
        querylib.library()
        assert "torch" not in sys.modules, "the read side imported torch"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def _modules(package: str) -> list[str]:
    """Every module of a lakelog package, found from its files (importing them is the test's job)."""
    import lakelog as pkg

    base = Path(pkg.__file__).parent
    folder = base.joinpath(*package.split(".")[1:])
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(base.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_read_and_lake_module_imports_without_torch():
    """Each module of lakelog.read and lakelog.lake, imported in one fresh interpreter, leaves torch (and the
    trainer frameworks) unimported; the lake contract also leaves the query engines unimported."""
    read, lake = _modules("lakelog.read"), _modules("lakelog.lake")
    assert len(read) > 20 and len(lake) > 5 and "lakelog.read.dumps.reader" in read
    script = textwrap.dedent(
        """
        import importlib, json, sys
        groups = json.loads(sys.argv[1])
        for name in groups["lake"]:
            importlib.import_module(name)
        engines = sorted(m for m in ("duckdb", "polars", "altair") if m in sys.modules)
        for name in groups["read"]:
            importlib.import_module(name)
        heavy = sorted(m for m in ("torch", "lightning", "pytorch_lightning", "transformers") if m in sys.modules)
        print(json.dumps({"engines_after_lake": engines, "heavy": heavy}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps({"lake": lake, "read": read})],
        check=True,
        capture_output=True,
        text=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"engines_after_lake": [], "heavy": []}, found
