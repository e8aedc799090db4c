"""The references stand apart: NumPy/SciPy only, nothing from ``dste``, and loading them loads no format code."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import dste.format.constants as format_constants
from dste.reference import layout

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[2] / "dste" / "reference"
ALLOWED_TOP_LEVEL = {"numpy", "scipy", "__future__", "dataclasses"}


def _imports(path):
    """(top-level module or None for a package-relative import, relative level, line) of each import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], 0, node.lineno
        elif isinstance(node, ast.ImportFrom):
            top = node.module.split(".")[0] if node.module and node.level == 0 else None
            yield top, node.level, node.lineno


def test_reference_sources_found():
    names = sorted(p.name for p in REFERENCE_DIR.glob("*.py"))
    assert {"__init__.py", "bits.py", "quant.py", "spmm.py", "masked_quant.py", "layout.py"} <= set(names)


@pytest.mark.parametrize("path", sorted(REFERENCE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_reference_module_imports_only_numpy_scipy(path):
    for top, level, line in _imports(path):
        where = f"{path.name}:{line}"
        assert top != "dste", f"{where} imports from dste; the references must not depend on the package"
        # a package-relative import may reach a sibling reference module, never climb out of dste/reference
        assert level <= 1, f"{where} climbs out of dste/reference with a level-{level} relative import"
        if level == 0:
            assert top in ALLOWED_TOP_LEVEL, f"{where} imports {top!r}; allowed: {sorted(ALLOWED_TOP_LEVEL)}"


def test_importing_reference_loads_no_format_module():
    # a fresh interpreter: this test process has dste.format loaded already
    probe = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import dste.reference\n"
        "new = sorted(m for m in set(sys.modules) - before if m.startswith('dste') or m == 'torch')\n"
        "print(json.dumps(new))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    new_modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert "dste.reference.spmm" in new_modules  # the probe did import the package
    leaked = [m for m in new_modules if not (m == "dste" or m.startswith("dste.reference"))]
    assert leaked == [], f"importing dste.reference also imported {leaked}"


def test_reference_layout_matches_format_constants():
    # two copies of the contract's constants: they must agree, or one side misreads the layout
    assert layout.WINDOW_ROWS == format_constants.WINDOW_ROWS
    assert layout.TILE_COLS == format_constants.TILE_COLS
    assert layout.MASK_WORD_BITS == format_constants.MASK_WORD_BITS
    assert layout.MASK_WORDS == format_constants.MASK_WORDS == format_constants.ENTRY_MASK_WORDS
    assert layout.INT8_QMAX == format_constants.INT8_QMAX
    assert layout.FP16_MAX == format_constants.FP16_MAX
    kinds = format_constants.TileKind
    assert (layout.KIND_BIN, layout.KIND_INT8, layout.KIND_FP16) == (kinds.BIN, kinds.INT8, kinds.FP16)
