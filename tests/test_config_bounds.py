"""The shared config validators of stepwise.errors: bound_errors' grammar and messages, image_crop_errors' order."""

import dataclasses

import pytest

from stepwise.errors import bound_errors, image_crop_errors


@dataclasses.dataclass
class _C:
    a: float = 0.5
    n: int = 3
    k: int | None = None


def test_bound_errors_messages_and_edges():
    assert bound_errors(_C(), ("a", "in (0, 1)"), ("n", ">= 2"), ("k", ">= 1 or None")) == []
    # open and closed ends, strict and non-strict lower bounds, in the order of the rules
    assert bound_errors(_C(a=1.0, n=2), ("a", "in (0, 1)"), ("n", "> 2"), ("a", "in (0, 1]")) == [
        "a must be in (0, 1) (got 1.0)", "n must be > 2 (got 2)"]
    assert bound_errors(_C(a=0.0), ("a", "in [0, 1)"), ("a", ">= 0")) == []
    assert bound_errors(_C(n=101), ("n", "in [1, 100]", ": at most 100 seeds")) == [
        "n must be in [1, 100]: at most 100 seeds (got 101)"]
    # None passes only where the bound says so; nan fails every bound
    assert bound_errors(_C(k=0), ("k", ">= 1 or None")) == ["k must be >= 1 or None (got 0)"]
    assert bound_errors(_C(k=None), ("k", ">= 1")) == ["k must be >= 1 (got None)"]
    assert bound_errors(_C(a=float("nan")), ("a", ">= 0")) == ["a must be >= 0 (got nan)"]
    with pytest.raises(ValueError, match="unknown bound"):
        bound_errors(_C(), ("a", "< 1"))


def test_image_crop_errors_first_problem_only():
    table = {"digits": 6}
    assert image_crop_errors("digits", None, table) == [] and image_crop_errors("digits", 8, table) == []
    assert image_crop_errors("digits", 0, {}) == ["crop must be >= 1 (got 0)"]  # before the dataset check
    assert image_crop_errors("mnist", None, table) == ["dataset must be one of digits (got 'mnist')"]
    assert image_crop_errors("digits", 9, table) == ["crop 9 does not fit in digits images of 8x8"]
