"""The read side works without torch: analysing runs must not pay torch's import time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
