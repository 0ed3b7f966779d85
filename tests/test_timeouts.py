"""pytest timeouts (pyproject ``timeout``, pytest-timeout): a test stuck on a hung child process fails, and
the child is killed, instead of hanging CI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

HUNG = textwrap.dedent(
    """
    import subprocess, sys

    def test_waits_on_a_child_that_never_exits():
        subprocess.run([sys.executable, "-c", "import time; time.sleep(600)  # {marker}"], check=True)
    """
)


def _running(marker: str) -> list[int]:
    """Processes (not zombies) whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            if marker in cmdline and "\nState:\tZ" not in (proc / "status").read_text():
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the process table from /proc")
def test_a_test_hung_on_a_child_process_fails_at_the_timeout_and_the_child_is_killed(tmp_path):
    marker = f"lakelog-hung-{uuid.uuid4().hex}"
    (tmp_path / "test_hung.py").write_text(HUNG.format(marker=marker))
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 3\n")  # pyproject's timeout = 600, shortened
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hung.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 failed" in result.stdout and "Timeout" in result.stdout
        assert time.monotonic() - started < 120
        assert _running(marker) == []  # subprocess.run killed the child when the timeout interrupted it
    finally:
        for pid in _running(marker):
            os.kill(pid, 9)
