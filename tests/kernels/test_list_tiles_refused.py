"""The spmm_hybrid kernel does not read list tiles yet: its planner and launcher refuse them by name."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format import encode
from dste.kernels.launch_spmm import launch_spmm_hybrid, plan_launches


def _with_list_tile():
    rows = np.concatenate([(np.arange(3) * 41 + c * 7) % 128 for c in range(40)])
    cols = np.repeat(np.arange(40), 3)
    A = encode(sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(128, 40)), list_tiles=True)
    assert A.n_ltiles == 1
    return A


def test_plan_and_launch_refuse_list_tiles():
    A = _with_list_tile()
    with pytest.raises(ValueError, match="plan_launches: A holds 1 list tiles"):
        plan_launches(A, 16, "fp32")
    with pytest.raises(ValueError, match="launch_spmm_hybrid: A holds 1 list tiles"):
        launch_spmm_hybrid(A, np.ones((40, 16), np.float32))
