"""The shared argument checks (dste.checks): what each accepts, converts and refuses."""

import math

import numpy as np
import pytest

from dste.checks import flag, integer, real_number, real_scores
from dste.format.errors import DSTEFormatError


@pytest.mark.parametrize("value", [0.5, 3, np.float32(0.25), np.int64(2), np.float64(-1.5)])
def test_real_number_takes_python_and_numpy_numbers_as_float(value):
    out = real_number(value, "x")
    assert type(out) is float and out == float(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), "0.5", None, [0.5], np.array([0.5]), 1j])
def test_real_number_refuses_what_is_not_a_real_number_naming_it(value):
    with pytest.raises(TypeError, match="threshold must be a real number"):
        real_number(value, "threshold")


def test_real_number_range_and_finiteness():
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\], got 1.5"):
        real_number(1.5, "share", low=0.0, high=1.0)
    with pytest.raises(ValueError, match="finite"):
        real_number(math.nan, "share")
    with pytest.raises(ValueError, match="finite"):
        real_number(math.inf, "share")
    assert real_number(math.inf, "margin", low=0.0, finite=False) == math.inf
    with pytest.raises(ValueError, match="finite"):  # NaN is never a value, even where inf is
        real_number(math.nan, "margin", finite=False)
    with pytest.raises(DSTEFormatError):
        real_number(-1.0, "share", low=0.0, error=DSTEFormatError)


@pytest.mark.parametrize("value", [True, 1.0, 2.5, "3", None, np.float64(2.0)])
def test_integer_refuses_bools_floats_and_strings(value):
    with pytest.raises(TypeError, match="seed must be an integer"):
        integer(value, "seed")


def test_integer_converts_numpy_integers_and_checks_the_range():
    assert integer(np.int32(7), "n", low=1) == 7 and type(integer(np.int32(7), "n")) is int
    with pytest.raises(ValueError, match=r"must lie in \[1, inf\], got 0"):
        integer(0, "n", low=1)


@pytest.mark.parametrize("value", ["no", 1, 0, None, "True"])
def test_flag_refuses_merely_truthy_values(value):
    with pytest.raises(TypeError, match="fp32 must be True or False"):
        flag(value, "fp32")


def test_flag_takes_numpy_bools():
    assert flag(np.bool_(True), "x") is True and flag(False, "x") is False


def test_real_scores_refuses_bool_complex_and_string_arrays_and_non_finite_values():
    for bad in (np.ones(3, bool), np.ones(3, complex), np.array(["a", "b", "c"]), np.array([None] * 3)):
        with pytest.raises(TypeError, match="must hold real numbers"):
            real_scores(bad, "sensitivity")
    with pytest.raises(ValueError, match="NaN or Inf"):
        real_scores([1.0, np.nan, 2.0], "sensitivity")
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        real_scores(np.ones(3), "sensitivity", shape=(4,))
    out = real_scores(np.arange(3, dtype=np.int8), "sensitivity", shape=(3,))
    assert out.dtype == np.float64 and out.tolist() == [0.0, 1.0, 2.0]
