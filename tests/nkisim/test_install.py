"""install(): registers the simulator only when no working nki exists; unmodified kernel files run."""

import importlib
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import dste.nkisim as sim

HERE = Path(__file__).resolve().parent


def test_install_registers_modules():
    assert sim.install() is True
    import nki
    import nki.isa
    import nki.language

    assert nki._implementation is sim.nki and nki.language._implementation is sim.language
    assert nki.isa._implementation is sim.isa and sys.modules["nki.isa"] is nki.isa
    assert nki.isa.nc_matmul is sim.isa.nc_matmul and nki.language.ndarray is sim.language.ndarray


def test_installed_modules_hold_only_the_official_names():
    """A kernel reaching for a simulator helper (nisa.write fills a tile directly, nisa.read2d hands device data to
    Python) or a name NKI 0.6 dropped (nki.tensor, now nki.meta.tensor) ran here and fails on a Neuron SDK."""
    from dste.nkisim import official_names

    sim.install()
    import nki
    import nki.isa as nisa
    import nki.language as nl

    for module, name in ((nisa, "write"), (nisa, "read2d"), (nisa, "violate"), (nki, "tensor"), (nki, "Kernel"),
                         (nl, "DynSlice")):
        with pytest.raises(AttributeError, match="not in the public API of NKI 0.6"):
            getattr(module, name)
    for module, names in ((nki, official_names.NKI), (nisa, official_names.ISA), (nl, official_names.LANGUAGE)):
        public = {name for name in dir(module) if not isinstance(getattr(module, name), types.ModuleType)}
        assert public <= set(names)
    assert {"nc_matmul", "dma_copy", "register_alloc"} <= set(dir(nisa)) and {"ndarray", "fori_loop"} <= set(dir(nl))


def test_every_official_name_resolves_on_the_installed_modules():
    """nl.DType (the stub's ``DType = str``, which AWS's kernels use in annotations) was listed but not defined."""
    from dste.nkisim import official_names

    sim.install()
    import nki
    import nki.isa as nisa
    import nki.language as nl

    for module, names in ((nki, official_names.NKI), (nisa, official_names.ISA), (nl, official_names.LANGUAGE)):
        missing = [name for name in names if not hasattr(module, name)]
        assert missing == [], f"{module.__name__}: {missing}"
    assert nl.DType is str


def test_nki_collectives_imports_and_each_collective_names_itself_unsimulated():
    """nki.collectives is a public module of the NKI 0.6 stubs (nki/api/nki/collectives/__init__.py); a kernel that
    imported it failed ('nki' is not a package). The official simulator implements none of it
    (nki/guides/nki_simulator.rst L322), so each function raises NotImplementedError naming itself."""
    sim.install()
    import nki
    import nki.collectives as ncc
    from dste.nkisim import official_names

    public = {name for name in dir(ncc) if not isinstance(getattr(ncc, name), types.ModuleType)}
    assert public == set(official_names.COLLECTIVES) and nki.collectives is ncc
    group = ncc.ReplicaGroup([[0, 1]])
    with pytest.raises(NotImplementedError, match=r"nki.collectives.all_reduce is .* not simulated.*isa.not_simulated"):
        ncc.all_reduce(srcs=[], dsts=[], replica_group=group, op=None)
    with pytest.raises(NotImplementedError, match="nki.collectives.rank_id"):
        ncc.rank_id()
    with pytest.raises(TypeError):  # a call the official signature refuses is refused first
        ncc.rank_id(group, "extra")
    with pytest.raises(AttributeError, match="not in the public API of NKI 0.6"):
        ncc.lang_buffers


def test_install_never_shadows_a_working_real_nki_unless_forced():
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "nki" or k.startswith("nki.")}
    try:
        fake = types.ModuleType("nki")
        sys.modules["nki"] = fake
        assert sim.install() is False
        assert sys.modules["nki"] is fake
        assert sim.install(force=True) is True
        assert sys.modules["nki"]._implementation is sim.nki
    finally:
        for k in [k for k in sys.modules if k == "nki" or k.startswith("nki.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_unmodified_kernel_file_runs_in_a_fresh_interpreter():
    """A kernel file importing only nki / nki.language / nki.isa runs after install() and matches NumPy."""
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        import dste.nkisim
        assert dste.nkisim.install()
        sys.path.insert(0, {str(HERE)!r})
        import nki_kernels
        a = np.arange(256 * 8, dtype=np.float32).reshape(256, 8)
        out = nki_kernels.tensor_add_kernel(a, a)
        assert np.array_equal(out, 2 * a), out
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_kernel_file_source_imports_only_nki():
    source = (HERE / "nki_kernels.py").read_text()
    imports = {line.strip() for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"import nki", "import nki.isa as nisa", "import nki.language as nl"}


def test_kernel_module_reimport_under_installed_nki():
    sim.install()
    module = importlib.import_module("tests.nkisim.nki_kernels")
    x = np.ones((128, 4), np.float32)
    np.testing.assert_array_equal(module.tensor_add_kernel(x, x), 2 * x)


@pytest.mark.parametrize("name", ["spmm_hybrid", "masked_quant"])
def test_dstes_own_kernels_see_only_the_official_names(name):
    """DSTE's launchers load the kernel files against the simulator without registering it; they loaded them against
    the simulator's own modules, where its helpers were in reach of the kernels."""
    from dste.kernels.device import kernel_module

    module = kernel_module(name, "nkisim")
    for namespace, helper in ((module.nisa, "write"), (module.nisa, "read2d"), (module.nki, "tensor")):
        with pytest.raises(AttributeError, match="not in the public API of NKI 0.6"):
            getattr(namespace, helper)
    assert module.nisa.dma_copy is sim.isa.dma_copy
