"""The README's first command: the demo trains twice and names the planted bug at the right step."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lakelog.cli import cli
from lakelog.read.diff import diff_runs


@pytest.mark.slow  # trains the demo's two runs end to end
def test_demo_trains_two_runs_and_finds_the_shuffle_bug(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--root", str(tmp_path), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "the runs part first in batch_order at step 48" in result.output
    assert "lakelog doctor" in result.output
    diff = diff_runs(tmp_path, "baseline", "candidate")
    assert (diff.first_layer, diff.first_step) == ("batch_order", 48)
