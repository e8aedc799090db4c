import numpy as np
import pytest

from dste.format import quantize_rows


@pytest.mark.parametrize("fraction", [0.0, 0.1, 1.0])
def test_hybrid_rows_footprint_counts_the_device_arrays(fraction):
    rng = np.random.default_rng(0)
    M, F = 300, 40
    x = rng.normal(size=(M, F)).astype(np.float32)
    hybrid = quantize_rows(x, fp16_fraction=fraction)
    m_hi = int(round(fraction * M))
    assert hybrid.hi.shape == (m_hi, F)
    nbytes = hybrid.nbytes()
    # INT8 values for every row, a float32 scale per row, an int32 id and F float16 values per FP16 row
    assert nbytes["total"] == M * F + 4 * M + m_hi * (4 + 2 * F)
    assert nbytes["hi_index"] == 4 * M  # listed, but host-only: not in the total
