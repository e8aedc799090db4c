"""One check of a SciPy sparse matrix's stored index arrays, shared by every room that takes one from a caller.

SciPy builds a CSR, CSC or COO matrix from index arrays without checking them against its shape, so a column id past
the shape, a negative one or a non-monotone ``indptr`` surfaces later in NumPy's words (or, for a negative id, as
a silently wrapped index). ``check_sparse_indices`` refuses such a matrix first, naming it and what is wrong.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["check_sparse_indices"]


def check_sparse_indices(A, what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless the SciPy sparse matrix ``A`` (named ``what``) stores a valid ``indptr`` (CSR/CSC)
    and indices inside its shape. Other formats are checked through their COO form."""
    if not sp.issparse(A):
        raise TypeError(f"{what} must be a SciPy sparse matrix, got {type(A).__name__}")
    shape = tuple(int(s) for s in A.shape)
    if A.format in ("csr", "csc"):
        major, minor = shape if A.format == "csr" else shape[::-1]
        indptr = np.asarray(A.indptr)
        if (indptr.shape != (major + 1,) or indptr[0] != 0 or indptr[-1] > A.indices.size
                or (np.diff(indptr) < 0).any()):
            raise error(f"{what}: its {A.format.upper()} indptr (index pointer) is not one of a {shape} matrix: it "
                        f"must hold {major + 1} non-decreasing offsets from 0 to at most nnz ({A.indices.size})")
        groups = [(np.asarray(A.indices[: indptr[-1]]), minor)]
    else:
        coo = A.tocoo()
        groups = [(np.asarray(coo.row), shape[0]), (np.asarray(coo.col), shape[1])]
    for ids, bound in groups:
        if ids.size and (ids.min() < 0 or ids.max() >= bound):
            raise error(f"{what} has indices outside its shape {shape} (or negative): found {int(ids.min())} .. "
                        f"{int(ids.max())}, allowed 0 .. {bound - 1}")
