"""nki.isa, nki and nki.collectives of the simulator expose every official function with the official signature.

The reference is ``signatures.json`` (names, kinds and defaults of the official stubs of
``nki/api/nki/{__init__,isa/__init__,collectives/__init__}.py``), kept beside the project; the test skips when it is
absent.
"""

import inspect
import json
from enum import Enum
from pathlib import Path

import pytest

from dste.nkisim import isa, nki

SIGNATURES = Path(__file__).parents[3] / "shared" / "nki_api" / "signatures.json"
KINDS = {"positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
         "keyword_only": inspect.Parameter.KEYWORD_ONLY, "var_keyword": inspect.Parameter.VAR_KEYWORD,
         "var_positional": inspect.Parameter.VAR_POSITIONAL, "positional_only": inspect.Parameter.POSITIONAL_ONLY}


def _official():
    if not SIGNATURES.exists():
        pytest.skip(f"{SIGNATURES} not found")
    return json.loads(SIGNATURES.read_text())["modules"]


def _default_text(value):
    """Our default written the way the stubs write theirs."""
    if value is None:
        return "None"
    if value is ...:
        return "..."
    if isinstance(value, Enum):
        return f"{type(value).__name__}.{value.name}"
    name = getattr(value, "name", None)
    if isinstance(name, str) and not isinstance(value, (int, float, str, tuple)):
        return name  # an nl operator object such as nl.equal
    return repr(value)


def _check(module, official_functions):
    problems = []
    for fname, params in official_functions.items():
        fn = getattr(module, fname, None)
        if fn is None:
            problems.append(f"{fname}: missing")
            continue
        ours = list(inspect.signature(fn).parameters.values())
        if [p.name for p in ours] != [p["name"] for p in params]:
            problems.append(f"{fname}: parameters {[p.name for p in ours]} != {[p['name'] for p in params]}")
            continue
        for mine, theirs in zip(ours, params):
            if mine.kind != KINDS[theirs["kind"]]:
                problems.append(f"{fname}.{mine.name}: kind {mine.kind} != {theirs['kind']}")
            if theirs["default"] is None:
                if mine.default is not inspect.Parameter.empty:
                    problems.append(f"{fname}.{mine.name}: has a default, the official one is required")
            elif mine.default is inspect.Parameter.empty or _default_text(mine.default) != theirs["default"]:
                problems.append(f"{fname}.{mine.name}: default {mine.default!r} != {theirs['default']}")
    return problems


def test_every_isa_function_has_the_official_signature():
    official = _official()["nki.isa"]["functions"]
    assert len(official) == 52
    assert _check(isa, official) == []


def test_nki_jit_and_simulate_signatures():
    assert _check(nki, _official()["nki"]["functions"]) == []


def test_nki_collectives_functions_have_the_official_signatures():
    from dste.nkisim import collectives

    official = _official()["nki.collectives"]
    assert len(official["functions"]) == 11
    assert _check(collectives, official["functions"]) == []
    for cls in official["classes"]:
        assert hasattr(collectives, cls), cls


def test_isa_classes_and_enum_members():
    for cls in _official()["nki.isa"]["classes"]:
        assert hasattr(isa, cls), cls
    assert [m.name for m in isa.engine] == ["tensor", "vector", "scalar", "gpsimd", "dma", "sync", "unknown"]
    assert [m.name for m in isa.reduce_cmd] == ["idle", "reset", "reduce", "reset_reduce", "load_reduce"]
    assert {m.name: m.value for m in isa.dge_mode} == {"unknown": 0, "swdge": 1, "hwdge": 2, "none": 3}
    assert [m.name for m in isa.dma_engine] == ["dma", "gpsimd_dma"]
    assert issubclass(isa.NkiValidationError, Exception)


def test_every_isa_function_is_simulated_or_raises_not_implemented():
    official = _official()["nki.isa"]["functions"]
    simulated = [f for f in official if getattr(getattr(isa, f), "is_simulated", True)]
    # every one is simulated (nc_matmul_mx / quantize_mx are target-refused on trn1/trn2)
    assert sorted(set(official) - set(simulated)) == []
