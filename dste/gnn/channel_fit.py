"""Least-squares compensation of pruned input channels (label-free, per graph).

Dropping input channels ``D`` of a linear map ``W`` [in, out] loses ``H_D W_D`` from its product ``H W``. Part of
that loss is predictable from the channels kept, ``K``: bag-of-words columns co-occur, hidden units correlate. The
kept rows are re-fitted so that ``H_K W'`` reproduces the full product on the graph's own FP32 layer input, by
ridge regression towards the original rows (He, Zhang and Sun, "Channel Pruning for Accelerating Very Deep Neural
Networks", ICCV 2017, reconstruct a pruned layer's output by linear least squares)::

    W' = argmin ||H_K W' - H W||^2 + lam ||W' - W_K||^2  =  W_K + (G_KK + lam I)^-1 G_KD W_D,   G = H^T H

with ``lam = CHANNEL_FIT_RIDGE * mean(diag G_KK)``. The fit needs only the layer's input, never labels, and
changes no shape: the kept channels, the stored bytes and the modelled latency of an action are those of the plain
selection; only the values in the weight's tiles differ.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.sparse

__all__ = ["CHANNEL_FIT_RIDGE", "CHANNEL_FIT_MAX_CHANNELS", "gram_matrix", "compensated_rows"]

CHANNEL_FIT_RIDGE = 1e-2
"""The ridge, relative to the kept channels' mean energy ``mean(diag G_KK)``: a channel the graph never sets (a zero
column) keeps its original weight row, and the fit cannot lean on a direction the graph barely spans."""

CHANNEL_FIT_MAX_CHANNELS = 4096
"""Layers with more input channels keep their trained rows: the fit holds the input's Gram matrix (in x in, float64;
128 MiB at 4,096) and its solve is cubic in the kept channels."""

SPARSE_INPUT_DENSITY = 0.1
"""Inputs with fewer nonzeros than this share (bag-of-words features) form their Gram matrix as a sparse product."""


def gram_matrix(layer_input: np.ndarray) -> np.ndarray:
    """float64 ``[in, in]``: ``G = h^T h`` of a layer input ``h`` float ``[n, in]`` (sparse products for inputs with
    fewer nonzeros than ``SPARSE_INPUT_DENSITY``, else one symmetric rank-k update)."""
    if layer_input.ndim != 2:
        raise ValueError(f"a layer input is [n, in], got shape {layer_input.shape}")
    if np.count_nonzero(layer_input) < SPARSE_INPUT_DENSITY * layer_input.size:
        columns = scipy.sparse.csc_matrix(layer_input, dtype=np.float64)
        return (columns.T @ columns).toarray()
    upper = scipy.linalg.blas.dsyrk(1.0, np.asarray(layer_input, dtype=np.float64), trans=1)
    return np.triu(upper) + np.triu(upper, 1).T


def compensated_rows(weight: np.ndarray, kept: np.ndarray, gram: np.ndarray,
                     ridge: float = CHANNEL_FIT_RIDGE) -> np.ndarray:
    """float32 ``[len(kept), out]``: the rows ``kept`` of ``weight`` (float ``[in, out]``) re-fitted to carry the
    dropped rows' share of ``h @ weight`` on the input ``h`` whose Gram matrix is ``gram`` (:func:`gram_matrix` of
    the FP32 input the map sees on this graph); see the module docstring."""
    weight = np.asarray(weight)
    size = weight.shape[0]
    if weight.ndim != 2 or gram.shape != (size, size):
        raise ValueError(f"need weight [in, out] and its input's Gram matrix [in, in]; got {weight.shape} and "
                         f"{gram.shape}")
    kept = np.asarray(kept, dtype=np.int64)
    if kept.ndim != 1 or kept.size == 0 or kept.min() < 0 or kept.max() >= size or np.any(np.diff(kept) <= 0):
        raise ValueError(f"kept must be sorted, distinct input rows in [0, {size}), at least one")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge!r}")
    plain = weight[kept].astype(np.float64)
    dropped = np.setdiff1d(np.arange(size), kept, assume_unique=True)
    if dropped.size == 0:
        return plain.astype(np.float32)
    g_kk = gram[np.ix_(kept, kept)]
    scale = float(np.mean(np.diag(g_kk)))
    if not scale > 0:  # the kept channels are all zero on this graph: nothing to fit them on
        return plain.astype(np.float32)
    g_kk[np.diag_indices_from(g_kk)] += ridge * scale
    shift = scipy.linalg.solve(g_kk, gram[np.ix_(kept, dropped)] @ weight[dropped].astype(np.float64), assume_a="pos")
    return (plain + shift).astype(np.float32)
