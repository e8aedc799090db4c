import json
import math

import numpy as np
import pytest

from dste.experiments import strict_json


def _strict_loads(text):
    def refuse(token):
        raise AssertionError(f"non-standard token {token}")
    return json.loads(text, parse_constant=refuse)


def test_infinities_become_text_that_float_reads_back_and_nan_becomes_null():
    report = {"margin": math.inf, "low": -math.inf, "broken": math.nan, "scores": {math.inf: 0.8, 0.02: 0.7},
              "array": np.array([1.5, np.inf]), "pair": (np.int64(3), np.float32(0.25)), "flag": np.bool_(True)}
    loaded = _strict_loads(strict_json.dumps(report))
    assert loaded == {"margin": "inf", "low": "-inf", "broken": None, "scores": {"inf": 0.8, "0.02": 0.7},
                      "array": [1.5, "inf"], "pair": [3, 0.25], "flag": True}
    assert float(loaded["margin"]) == math.inf and float(loaded["low"]) == -math.inf
    assert {float(key) for key in loaded["scores"]} == {math.inf, 0.02}


def test_finite_values_are_written_as_plain_json_would_write_them():
    report = {"accuracy": 0.8765432101234567, "count": 12, "name": "cora-like", "nested": [[1, 2.5], {"a": None}]}
    assert strict_json.dumps(report, indent=2) == json.dumps(report, indent=2)


def test_other_types_go_to_default_or_raise():
    class Odd:
        pass

    with pytest.raises(TypeError):
        strict_json.dumps({"x": Odd()})
    assert _strict_loads(strict_json.dumps({"x": Odd()}, default=lambda value: "odd")) == {"x": "odd"}
