"""Test fixtures for the torch bindings: small DSTE matrices.

The fixtures use real encoded matrices; :class:`StandInMatrix` has only the decoding interface (``shape``,
``effective_csr()``) and checks that the op accepts any such object.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dste.format.encoder import encode


class StandInMatrix:
    """Only what the CPU path reads from a DSTEMatrix: its shape and effective CSR."""

    def __init__(self, csr: sp.csr_matrix):
        self._csr = sp.csr_matrix(csr, dtype=np.float32)
        self.shape = self._csr.shape

    def effective_csr(self):
        return self._csr

    def decode(self, effective=True):
        return self._csr.copy()


def random_sparse(n, m, density, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    matrix = sp.random(n, m, density=density, format="csr", dtype=dtype, random_state=rng)
    matrix.data = (matrix.data * 2 - 1).astype(dtype)  # signed values, as weight tiles have
    return matrix


@pytest.fixture
def small_matrix():
    """A 300 x 200 matrix: not a multiple of 128, several windows, one empty row."""
    csr = random_sparse(300, 200, 0.05, seed=1).tolil()
    csr[7, :] = 0
    return encode(csr.tocsr())
