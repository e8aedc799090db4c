"""nki.language parity with the official NKI 0.6 stubs: names, parameters, kinds, defaults, module attributes.

The facts come from ``shared/nki_api/signatures.json`` (parsed from aws-neuron-sdk at 81ce03ae); the test skips
when that file is not beside the repository.
"""

import inspect
import json
from pathlib import Path

import pytest

from dste.nkisim import language as nl
from dste.nkisim.tensor import NkiTensor

SIGNATURES = Path(__file__).parents[3] / "shared" / "nki_api" / "signatures.json"
_KINDS = {
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "positional_only": inspect.Parameter.POSITIONAL_ONLY,
    "keyword_only": inspect.Parameter.KEYWORD_ONLY,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}


def _language_facts():
    if not SIGNATURES.exists():
        pytest.skip(f"{SIGNATURES} is absent (the shared API facts are not beside this checkout)")
    return json.loads(SIGNATURES.read_text())["modules"]["nki.language"]


def _stub_default(text):
    """The value a stub default denotes, evaluated in the simulator's nki.language namespace (``sbuf`` -> nl.sbuf)."""
    return eval(text, {}, vars(nl))  # noqa: S307 - stub default expressions: literals and nl names


def _check(name, ours, official):
    params = list(inspect.signature(ours).parameters.values())
    assert [p.name for p in params] == [p["name"] for p in official], f"{name}: parameter names/order"
    for ours_p, theirs in zip(params, official):
        assert ours_p.kind == _KINDS[theirs["kind"]], f"{name}({ours_p.name}): kind"
        if theirs["default"] is None:
            assert ours_p.default is inspect.Parameter.empty, f"{name}({ours_p.name}) must have no default"
        else:
            assert ours_p.default is not inspect.Parameter.empty, f"{name}({ours_p.name}) needs a default"
            assert ours_p.default == _stub_default(theirs["default"]), f"{name}({ours_p.name}): default"


def test_every_official_function_exists_with_the_official_signature():
    functions = _language_facts()["functions"]
    assert len(functions) == 103
    missing = [name for name in functions if not callable(getattr(nl, name, None))]
    assert not missing, f"missing nl functions: {missing}"
    for name, official in functions.items():
        _check(f"nl.{name}", getattr(nl, name), official)


def test_every_official_nkitensor_method_exists_with_the_official_signature():
    methods = _language_facts()["NkiTensor_methods"]
    for name, official in methods.items():
        assert callable(getattr(NkiTensor, name, None)), f"NkiTensor.{name} is missing"
        _check(f"NkiTensor.{name}", getattr(NkiTensor, name), official)


def test_official_classes_and_module_attributes_exist():
    facts = _language_facts()
    for cls in facts["classes"]:
        assert inspect.isclass(getattr(nl, cls)), cls
    dtypes = ["bool_", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float16", "float32", "bfloat16",
              "tfloat32", "float8_e4m3", "float8_e4m3fn", "float8_e5m2", "float8_e5m2_x4", "float8_e4m3fn_x4",
              "float8_e8m0fnu", "float4_e2m1fn_x4"]
    for name in dtypes + ["sbuf", "psum", "hbm", "private_hbm", "shared_hbm", "tile_size", "average", "prelu", "bypass"]:
        assert hasattr(nl, name), f"nl.{name} is missing"
    assert nl.hbm is nl.private_hbm  # "HBM - Alias of private_hbm"
    assert {m.value for m in nl.MemoryRegion} == {"sbuf", "psum", "private_hbm", "shared_hbm"}


def test_tile_size_attributes_follow_the_stub():
    names = ["pmax", "psum_fmax", "psum_bank_fmax", "psum_bank_fmax_bytes", "gemm_stationary_fmax",
             "gemm_moving_fmax", "psum_num_banks", "sbuf_size_bytes", "sbuf_fmax", "sbuf_fmax_bytes",
             "total_available_sbuf_size", "bn_stats_fmax", "psum_min_align", "sbuf_min_align"]
    for name in names:
        assert name in dir(type(nl.tile_size)), f"nl.tile_size.{name} is missing"
    assert (nl.tile_size.pmax, nl.tile_size.psum_bank_fmax, nl.tile_size.gemm_stationary_fmax,
            nl.tile_size.gemm_moving_fmax, nl.tile_size.psum_num_banks) == (128, 512, 128, 512, 8)


def test_nkitensor_has_no_unofficial_view_method():
    facts = _language_facts()["NkiTensor_methods"]
    ours = {n for n, v in vars(NkiTensor).items() if callable(v) and not n.startswith("_")}
    # Simulator-side accessors of the values (used by the ISA and by tests), not views a kernel could take.
    simulator_accessors = {"array", "numpy", "element_offsets"}
    # reinterpret_cast: the stub's class attribute ``reinterpret_cast = ...`` (an alias of view, language L544), which
    # the method facts do not list
    extra = ours - set(facts) - simulator_accessors - {"reinterpret_cast"}
    assert not extra, f"unofficial public NkiTensor methods: {sorted(extra)}"
