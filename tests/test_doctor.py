"""Health checks on real runs that each have one known problem (and one run that has none of them)."""

from __future__ import annotations

import polars as pl
import pytest

import lakelog
from lakelog.errors import InvalidArgumentError
from lakelog.read.doctor import CHECKS, STATUSES, Check, doctor, expectation_names, fmt

RUNS = ("healthy", "overfit", "explode", "nan", "vanish", "frozen", "lr_flat", "imbalanced", "many_batches")


@pytest.fixture(scope="module")
def con(lake):
    return lakelog.connect(lake(*RUNS))


def checks(con, run, **expectations) -> dict[str, Check]:
    found = doctor(con, run, **expectations)
    assert [c.name for c in found] == list(CHECKS)
    assert all(c.status in STATUSES and c.summary for c in found)
    return {c.name: c for c in found}


def test_a_healthy_run_passes_everything_and_notes_its_tiny_epochs(con):
    found = checks(con, "healthy", lr_ratio="head/backbone=10")
    status = {name: c.status for name, c in found.items()}
    assert status == {
        "gradients": "pass",
        "dead_layers": "pass",
        "frozen_layers": "pass",
        "lr_ratio": "pass",
        "label_balance": "pass",
        "not_learning": "pass",
        "overfitting": "pass",
        "nan_inf": "pass",
        "updates_per_epoch": "note",  # 64 samples: few batches, but not too few for the data
    }
    assert "8 batches of 8 samples per epoch" in found["updates_per_epoch"].summary


def test_memorising_is_overfitting(con):
    found = checks(con, "overfit")["overfitting"]
    assert found.status == "warn" and "memorising" in found.summary
    ev = found.evidence
    assert ev["holdout_acc"].drop_nulls().unique().to_list() == [0.5]  # the paired holdout sits at chance
    assert ev["train_end"][0] - ev["train_start"][0] >= 0.1


def test_exploding_gradients(con):
    found = checks(con, "explode")
    assert found["gradients"].status == "error" and "exploding" in found["gradients"].summary
    assert set(found["gradients"].evidence["status"]) == {"exploding"}
    # the values grow to ~1e19 but stay finite: no NaN/Inf origin is claimed (a norm that overflowed
    # would be a note, never the origin)
    assert found["nan_inf"].status in ("pass", "note"), found["nan_inf"].summary


def test_first_nan_names_the_step_and_the_parameters(con, lake):
    nan_step, first_param = lake.built["nan"].first_nan
    found = checks(con, "nan")["nan_inf"]
    assert found.status == "error" and f"step {nan_step} in predictions" in found.summary
    ev = found.evidence
    assert ev.filter(pl.col("is_first"))["source"].to_list() == ["predictions"]
    weights = ev.filter(pl.col("source") == "weights")
    assert (
        weights["step"].min() == nan_step
        and first_param in weights.filter(pl.col("step") == nan_step)["name"]
    )


def test_vanishing_gradients_in_one_group(con):
    found = checks(con, "vanish")["gradients"]
    assert found.status == "warn" and "backbone vanishing" in found.summary
    stuck = checks(con, "vanish")["frozen_layers"]  # too small to move: not blamed on the optimizer
    assert "too small to change" in stuck.summary and "optimizer" not in stuck.summary
    status = dict(zip(found.evidence["group"], found.evidence["status"], strict=True))
    assert status == {"backbone": "vanishing", "head": "ok"}


def test_a_group_left_out_of_the_optimizer_is_frozen(con):
    found = checks(con, "frozen")["frozen_layers"]
    assert (
        found.status == "warn"
        and "in no optimizer param group: backbone.0.weight, backbone.0.bias" in found.summary  # model order
    )
    frozen = found.evidence.filter(pl.col("status") == "frozen")
    assert sorted(frozen["name"]) == ["backbone.0.bias", "backbone.0.weight"]
    assert (frozen["max_update_norm"] == 0).all() and (frozen["max_grad_norm"] > 0).all()


def test_differential_lr_not_applied(con):
    found = checks(con, "lr_flat", lr_ratio={"head/backbone": 10})["lr_ratio"]
    assert found.status == "warn" and "expected 10" in found.summary
    assert found.evidence.row(0, named=True)["first_off_step"] == 0
    assert checks(con, "healthy", lr_ratio="head/backbone=10")["lr_ratio"].status == "pass"
    skipped = checks(con, "healthy")["lr_ratio"]
    assert skipped.status == "skip" and "head/backbone = 10" in skipped.summary
    assert checks(con, "healthy", lr_ratio="head/backbone=10", rtol=0.5)["lr_ratio"].status == "pass"
    missing = checks(con, "healthy", lr_ratio="head/nothing=2")["lr_ratio"]
    assert missing.status == "warn" and "the groups logged are backbone, head" in missing.summary
    wrong = checks(con, "lr_flat", lr_ratio="head/backbone=10")["lr_ratio"]
    assert "is 1 at first, 1 at the end, expected 10" in wrong.summary


def test_label_imbalance(con):
    found = checks(con, "imbalanced")["label_balance"]
    assert found.status == "warn" and "class 0 91%" in found.summary
    assert checks(con, "imbalanced", max_ratio=20.0)["label_balance"].status == "pass"


def test_enough_batches_per_epoch(con):
    assert checks(con, "many_batches")["updates_per_epoch"].status == "pass"
    assert checks(con, "healthy", min_batches=5)["updates_per_epoch"].status == "pass"


def test_numbers_print_as_users_read_them():
    assert [fmt(v) for v in (2048.0, 0.05, 10.000000000000002, 3e-12, 12345.6, float("inf"))] == [
        "2048", "0.05", "10", "3e-12", "12346", "inf",
    ]  # fmt: skip


def test_checks_without_their_data_are_skipped(con):
    found = checks(con, "many_batches")  # logged without run.watch
    assert found["gradients"].status == found["frozen_layers"].status == "skip"
    assert "run.watch" in found["gradients"].summary


def test_bad_expectations_are_named(con):
    assert {"lr_ratio", "vanish", "min_batches", "max_ratio"} <= set(expectation_names())
    with pytest.raises(InvalidArgumentError, match=r"unknown expectation.*'colour'"):
        doctor(con, "healthy", colour="red")
    with pytest.raises(InvalidArgumentError, match="lr_ratio: expected"):
        doctor(con, "healthy", lr_ratio=10)
    with pytest.raises(
        InvalidArgumentError, match=r"lr_ratio\['head/backbone'\]: expected a number, got 'ten'"
    ):
        doctor(con, "healthy", lr_ratio="head/backbone=ten")
    with pytest.raises(InvalidArgumentError, match="expected a pair 'numerator/denominator', got 'head'"):
        doctor(con, "healthy", lr_ratio="head=10")
    with pytest.raises(InvalidArgumentError, match="vanish: expected a number"):
        doctor(con, "healthy", vanish="small")
    with pytest.raises(lakelog.RunNotFoundError):
        doctor(con, "nope")
