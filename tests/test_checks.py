"""lakelog.lake.checks: the one set of argument checks; each error names the argument, expectation and value."""

from __future__ import annotations

import numpy as np
import pytest

from lakelog.errors import InvalidArgumentError
from lakelog.lake.checks import (
    non_negative_int,
    non_negative_number,
    optional_positive_int,
    positive_int,
    positive_number,
)


def test_ints_accept_numpy_and_refuse_bools_floats_and_out_of_range():
    assert positive_int(np.int32(3), "n") == 3 and type(positive_int(np.int64(3), "n")) is int
    assert non_negative_int(0, "step") == 0 and optional_positive_int(None, "every") is None
    for bad, message in [
        (True, "n: expected a positive int, got bool True"),
        (1.0, "n: expected a positive int, got float 1.0"),
        (0, "n: expected a positive int, got 0"),
        (2**63, "n: expected a positive int that fits in int64"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            positive_int(bad, "n")
    with pytest.raises(InvalidArgumentError, match="step: expected a non-negative int, got -1"):
        non_negative_int(-1, "step")


def test_numbers_accept_ints_and_numpy_and_refuse_nan_bools_and_strings():
    assert positive_number(2, "scale") == 2.0 and non_negative_number(np.float32(0.5), "tol") == 0.5
    assert non_negative_number(0, "tol") == 0.0 and positive_number(float("inf"), "flush_every_s") == float(
        "inf"
    )
    for check, bad, message in [
        (positive_number, 0, "scale: expected a positive number, got 0"),
        (positive_number, float("nan"), "scale: expected a positive number, got NaN"),
        (positive_number, "2", "scale: expected a positive number, got str '2'"),
        (non_negative_number, -0.1, r"scale: expected a number >= 0, got -0.1"),
        (non_negative_number, False, "scale: expected a number >= 0, got bool False"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            check(bad, "scale")


def test_the_public_api_uses_them(tmp_path):
    import lakelog

    with pytest.raises(InvalidArgumentError, match="flush_every_s: expected a positive number, got NaN"):
        lakelog.init(tmp_path, name="a", flush_every_s=float("nan"))
    with pytest.raises(InvalidArgumentError, match="tol: expected a number >= 0, got -1"):
        lakelog.diff_runs(tmp_path, "a", "b", tol=-1)
