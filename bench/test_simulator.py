"""Speed of the NKI simulator on the ``spmm_hybrid`` kernel (small graph): simulated tiles per second."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data import make_graph
from dste.experiments import bench
from dste.format import gcn_normalized, quantize_rows
from dste.kernels import launch_spmm_hybrid as spmm_hybrid
from dste.nkisim import install


@pytest.mark.parametrize("x_mode", ["fp32", "int8-hybrid"])
def test_simulated_tiles_per_second(benchmark, x_mode):
    install()
    matrix = gcn_normalized(sp.csr_matrix(make_graph(bench.SIMULATOR_GRAPH).adj))
    x = np.random.default_rng(0).standard_normal((matrix.shape[1], bench.SIMULATOR_FEATURES)).astype(np.float32)
    operand = quantize_rows(x, fp16_fraction=bench.DEFAULT_HI_FRACTION) if x_mode == "int8-hybrid" else x
    benchmark.group = "simulator"
    y = benchmark.pedantic(spmm_hybrid, args=(matrix, operand), rounds=3, warmup_rounds=1, iterations=1)
    tiles = int(matrix.n_tiles + matrix.n_etiles)
    benchmark.extra_info.update(graph=bench.SIMULATOR_GRAPH, features=bench.SIMULATOR_FEATURES, x_mode=x_mode,
                                tiles=tiles, tiles_per_s=tiles / benchmark.stats.stats.min)
    expected = matrix.effective_csr() @ (operand.dequantize() if x_mode == "int8-hybrid" else x)
    # bf16 products inside the kernel: ~3 significant digits
    assert np.abs(y - expected).max() <= 1e-2 * np.abs(expected).max()
