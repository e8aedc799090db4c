import platform

import numpy as np
import scipy.sparse as sp

from dste.experiments.memory import freed_memory_kept
from dste.gnn.execution import _sparse_times
from dste.gnn.settings import quantize_rows_by_fraction


def _layer_arithmetic(x, matrix):
    rows = quantize_rows_by_fraction(x, 0.05)
    return [rows.q, rows.scale, rows.hi, rows.dequantize(), _sparse_times(matrix, rows.dequantize())]


def test_kept_memory_changes_no_value():
    """Inside the block freed arrays are reused: the first thing a computation gets may be memory full of NaN
    from an array just freed, and its results must be those of fresh memory, bit for bit."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40_000, 64)).astype(np.float32)
    rows, cols = rng.integers(0, 40_000, size=(2, 300_000))
    matrix = sp.csr_matrix((rng.random(300_000, dtype=np.float32), (rows, cols)), shape=(40_000, 40_000))
    fresh = _layer_arithmetic(x, matrix)
    with freed_memory_kept() as applied:
        assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
        for _ in range(3):
            np.full((40_000, 64 * 4), np.nan, dtype=np.float32)  # 40 MB of NaN, freed at once
            reused = _layer_arithmetic(x, matrix)
            for a, b in zip(fresh, reused):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
