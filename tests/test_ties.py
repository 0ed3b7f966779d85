"""One verdict: diff, determinism_report and check-determinism name the same first cause at a tie.

Two causes that show at the same step are ordered causally (environment and seeding, sample order,
inputs, RNG, initial weights, forward, loss, gradients, update): an unseeded shuffle changes both the
sample order and the RNG state at step 0, and the order is the cause; a model built before seeding
changes the initial weights and everything after them, and the weights are the cause.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_check_determinism import Setup, trainer

from lakelog.check_determinism import check_determinism, determinism_report
from lakelog.cli import cli
from lakelog.read.diff import diff_runs

RUNS = ("determinism-a", "determinism-b")
pytestmark = pytest.mark.usefixtures("restore_global_state")


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("setup", "check", "layer", "words"),
    [
        (Setup(seed=None, generator=False), "sample_ids", "batch_order", "shuffle is not seeded"),
        (Setup(seed_model_first=False), "initial_weights", "initial_weights", "initialized from a different"),
    ],
    ids=["unseeded_shuffle", "model_before_seeding"],
)
def test_a_tie_names_the_same_first_cause_in_every_entry_point(tmp_path, setup, check, layer, words):
    checked = check_determinism(trainer(setup), steps=setup.steps, root=tmp_path).first
    assert checked.name == check and words in checked.cause
    reported = determinism_report(tmp_path, *RUNS).first
    assert (reported.name, reported.cause, reported.fix) == (check, checked.cause, checked.fix)
    r = diff_runs(tmp_path, *RUNS)
    assert r.first_layer == layer and r.layer(layer)["is_first"]
    assert (r.cause["name"], r.cause["layer"], r.cause["cause"], r.cause["fix"]) == (
        check,
        layer,
        checked.cause,
        checked.fix,
    )
    result = CliRunner().invoke(cli, ["diff", *RUNS, "--root", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert _flat(f"cause: {checked.cause}") in _flat(result.output)
    assert _flat(f"fix: {checked.fix}") in _flat(result.output)


def test_an_rng_nothing_uses_is_latent_in_diff_as_in_the_report(tmp_path):
    setup = Setup(seed="torch", stray_draw=True)
    report = check_determinism(trainer(setup), steps=setup.steps, root=tmp_path)
    assert report.identical and report.check("rng").status == "latent"
    r = diff_runs(tmp_path, *RUNS)
    assert r.identical and r.first_layer is None and r.layer("rng")["status"] == "latent"
