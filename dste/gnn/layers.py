"""GCN and GraphSAGE (mean) layers over DSTE propagation matrices, with PyG's conventions.

``layer(x, adj)``: ``x float32 [n, in]``, dense or sparse COO (wide bag-of-words features; the FP32 weight product
then touches only the nonzeros, compressed weights take it densified); ``adj`` any form :mod:`dste.gnn.adjacency`
accepts. The
propagation runs through ``dste.spmm`` (``backend`` per call or ``DSTE_BACKEND``), differentiable in ``x``.
After :meth:`compress_weights` the layer in eval mode multiplies by DSTE-compressed INT8/FP16 weights.
"""

from __future__ import annotations

import math
import numbers
import sys
import weakref
import zlib

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from dste.bindings import spmm
from dste.bindings.api import float32_under_autocast

from .adjacency import propagation_matrix
from .weights import CompressedWeight, value_version

__all__ = ["GCNConv", "SAGEConv"]


def _check_input(x, in_features: int, layer: str, module: nn.Module | None = None) -> torch.Tensor:
    """``x`` checked, as the layer multiplies it: a float16/bfloat16 x that ``torch.autocast`` made (a previous
    layer's output) comes back float32, the dtype the sparse product runs in (autocast's float32 op policy)."""
    if module is not None:
        odd = next((p for p in module.parameters() if p.dtype != torch.float32), None)
        if odd is not None:
            raise TypeError(f"{layer}: its parameters are {odd.dtype}; the layers run in float32 (the kernels' "
                            "operands), so .double() / .half() are not supported: call .float()")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer}: x must be a torch tensor [n, {in_features}], got {type(x).__name__}")
    if x.layout not in (torch.strided, torch.sparse_coo):
        raise TypeError(f"{layer}: x must be a dense or sparse COO tensor, got layout {x.layout}")
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"{layer}: x must be [n, {in_features}], got {tuple(x.shape)}")
    x = float32_under_autocast(x)
    if x.dtype != torch.float32:
        raise TypeError(f"{layer}: x must be float32, got {x.dtype}")
    return x


def _propagate_product(a, product, weight, layer: str, backend):
    """``spmm(a, product)`` for ``product = x @ weight.T``. Where the product is not finite the op's own message would
    blame its operand "X", which the caller never passed; this one says what made it. The product is scanned only
    once the op has refused it: the op itself scans its X only where its result is not finite."""
    try:
        return spmm(a, product, backend=backend)
    except ValueError:
        if torch.isfinite(product).all():
            raise
    if not torch.isfinite(weight).all():
        raise ValueError(f"{layer}: its weight holds NaN or Inf (a diverged training step?); the DSTE ops take "
                         "finite values only")
    raise ValueError(f"{layer}: x @ weight.T is not finite: x holds NaN or Inf, or the product overflows float32; "
                     "the DSTE ops take finite values only")


def _check_sizes(in_features, out_features, layer) -> tuple[int, int]:
    """Positive whole numbers (NumPy's integers too, as from ``x.shape`` of an array); a float or bool is refused."""
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < 1:
            raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return int(in_features), int(out_features)


class _CompressibleLinear(nn.Linear):
    """``nn.Linear`` whose eval-mode forward can use a DSTE-compressed copy of its weight.

    The copy follows the weight: where the weight changed after :meth:`compress` (an optimizer step,
    ``load_state_dict``, a new Parameter), the next eval-mode call compresses it again with the same settings, so the
    output is never the old weight's."""

    compressed: CompressedWeight | None = None
    _compressed_from: tuple | None = None  # value_version of the weight the copy was made from
    _compress_settings: dict | None = None

    def compress(self, *, sparsity: float = 0.0, fp16_threshold: float | None = None) -> CompressedWeight:
        # nn.Linear stores [out, in]; CompressedWeight takes W [in, out] with h @ W.
        self.compressed = CompressedWeight(self.weight.t(), sparsity=sparsity, fp16_threshold=fp16_threshold)
        self._compressed_from = value_version(self.weight)
        self._compress_settings = {"sparsity": sparsity, "fp16_threshold": fp16_threshold}
        return self.compressed

    def forward(self, x, backend: str | None = None):
        if self.compressed is not None and not self.training:
            if value_version(self.weight) != self._compressed_from:
                self.compress(**self._compress_settings)
            out = self.compressed(x.to_dense() if x.is_sparse else x, backend=backend)
            return out + self.bias if self.bias is not None else out
        return super().forward(x)


# The arrays a SciPy adjacency of each format is built from; other formats (LIL, DOK) are encoded on every call.
_SCIPY_ARRAYS = {
    "csr": ("indptr", "indices", "data"),
    "csc": ("indptr", "indices", "data"),
    "bsr": ("indptr", "indices", "data"),
    "coo": ("row", "col", "data"),
    "dia": ("offsets", "data"),
}


def _content_digest(adj) -> tuple | None:
    """What the propagation matrix of ``adj`` is built from: format, shape, each array's dtype and shape, and a
    CRC-32 of their bytes (GB/s, against an encoding that costs far more). None for a form the cache does not
    digest (a DSTE matrix needs no encoding; LIL and DOK hold Python objects), which is then not cached."""
    if isinstance(adj, torch.Tensor):
        if adj.device.type != "cpu":
            return None  # refused by the encoder, with its own message
        if adj.layout == torch.strided:
            arrays = [adj]
        elif adj.layout == torch.sparse_coo:
            arrays = [adj._indices(), adj._values()]
        elif adj.layout == torch.sparse_csr:
            arrays = [adj.crow_indices(), adj.col_indices(), adj.values()]
        else:
            return None
        arrays = [a.detach().contiguous().numpy() for a in arrays]
        kind = str(adj.layout)
    elif sp.issparse(adj) and adj.format in _SCIPY_ARRAYS:
        arrays = [np.ascontiguousarray(getattr(adj, name)) for name in _SCIPY_ARRAYS[adj.format]]
        kind = adj.format
    else:
        return None
    crc = 0
    for array in arrays:
        crc = zlib.crc32(array.reshape(-1).view(np.uint8), crc)
    return (kind, tuple(adj.shape), tuple((a.dtype.str, a.shape) for a in arrays), crc)


def _layer_propagation(cache, adj, num_nodes: int, norm: str):
    """The propagation matrix a layer multiplies by: ``cache``'s entry for ``adj`` (None: encoded anew).

    Encoding is host code (NumPy, the encoder), run eagerly under every torch transform: ``torch.compile`` runs it
    outside the graph (tracing it failed deep inside Dynamo), ``torch.func`` transforms see plain tensors (the
    cache's digest read a functorch wrapper's missing storage). ``torch.jit.trace`` is refused for an adjacency
    tensor: the trace would keep this adjacency's encoding as a constant and ignore the adjacency passed later."""
    if isinstance(adj, torch.Tensor) and torch.jit.is_tracing():
        raise RuntimeError(
            "torch.jit.trace of a DSTE layer given an adjacency tensor: the traced graph would hold this adjacency's "
            "encoding as a constant and silently ignore the adjacency of later calls. Encode it outside the trace "
            "(a = layer.propagation(x, adj)) and trace a function of x alone that passes a, or use torch.compile, "
            "which encodes each call's adjacency outside its graph")
    return _encode_eagerly()(cache, adj, num_nodes, norm)


def _encode(cache, adj, num_nodes: int, norm: str):
    with torch._C._DisableFuncTorch():
        if cache is None:
            return propagation_matrix(adj, num_nodes, norm)
        return cache.get(adj, num_nodes, norm)


_encode_outside_graphs = None  # _encode wrapped by torch.compiler.disable, made once (~11 us per wrapping)


def _encode_eagerly():
    """``_encode``, kept out of ``torch.compile``'s graph once Dynamo is loaded (before that, nothing compiles)."""
    global _encode_outside_graphs
    if "torch._dynamo" not in sys.modules:
        return _encode
    if _encode_outside_graphs is None:
        _encode_outside_graphs = torch.compiler.disable(_encode, reason="dste encodes an adjacency on the host, eagerly")
    return _encode_outside_graphs


class _PropagationCache:
    """The propagation matrix of the last adjacency a layer saw (PyG's ``cached=True``, made safe: reused only
    for the *same* object, held weakly, whose content has not changed since, by :func:`_content_digest`). An
    adjacency edited in place between calls (``adj[i, j] = 1``, ``edge_index[1, k] = m``) is encoded again,
    never answered from the stale encoding."""

    def __init__(self):
        self._source: weakref.ref | None = None
        self._digest: tuple | None = None
        self._matrix = None

    def __getstate__(self) -> dict:
        # A weak reference cannot be pickled or deep-copied, and a copy does not hold the adjacency object the entry
        # is keyed on: a saved or copied layer starts with an empty cache (torch.save(model), copy.deepcopy(model))
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def get(self, adj, num_nodes: int, norm: str):
        digest = _content_digest(adj)
        if (
            digest is not None
            and self._source is not None
            and self._source() is adj
            and self._digest == digest
            and tuple(self._matrix.shape) == (num_nodes,) * 2
        ):
            return self._matrix
        matrix = propagation_matrix(adj, num_nodes, norm)
        self._source, self._digest, self._matrix = None, None, None
        if digest is not None:
            try:
                self._source, self._digest, self._matrix = weakref.ref(adj), digest, matrix
            except TypeError:  # not weak-referenceable: not cached
                pass
        return matrix


class GCNConv(nn.Module):
    """``out = D^-1/2 (A+I) D^-1/2 (x W) + b`` (Kipf & Welling; PyG ``GCNConv`` defaults).

    ``weight`` is ``lin.weight [out, in]`` (glorot init), ``bias [out]`` (zeros). ``cached``: keep the
    propagation matrix of the last adjacency object (see ``_PropagationCache``); False encodes on every call.
    Edges are unweighted (``dste.gnn.adjacency``): an edge listed twice in ``edge_index`` counts once, where PyG's
    layer counts both copies (PyG's datasets hold coalesced edge lists, on which the two agree), and existing self
    loops are kept once.
    """

    norm = "gcn"
    """The propagation matrix's normalization (``dste.gnn.adjacency``): D^-1/2 (A + I) D^-1/2."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, cached: bool = True):
        super().__init__()
        in_features, out_features = _check_sizes(in_features, out_features, "GCNConv")
        self._propagation = _PropagationCache() if cached else None
        self.in_features, self.out_features = in_features, out_features
        self.lin = _CompressibleLinear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.lin.weight)

    def propagation(self, x, adj):
        return _layer_propagation(self._propagation, adj, x.shape[0], self.norm)

    def forward(self, x, adj, backend: str | None = None):
        x = _check_input(x, self.in_features, "GCNConv", self)
        a = self.propagation(x, adj)
        out = _propagate_product(a, self.lin(x, backend=backend), self.lin.weight, "GCNConv", backend)
        return out + self.bias if self.bias is not None else out

    def compress_weights(self, *, sparsity: float = 0.0, fp16_threshold: float | None = None):
        """Encode the weight for eval-mode inference (INT8/FP16 tiles, magnitude keep-mask)."""
        self.lin.compress(sparsity=sparsity, fp16_threshold=fp16_threshold)
        return self

    def decompress_weights(self):
        self.lin.compressed = None
        return self

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class SAGEConv(nn.Module):
    """``out = lin_l(mean_{j in N(i)} x_j) + lin_r(x_i)`` (PyG ``SAGEConv``, mean aggregation, root weight).

    ``lin_l`` carries the bias; ``lin_r`` has none. ``cached`` as for :class:`GCNConv`. An edge listed twice counts
    once in the mean, where PyG's layer counts both copies (as for :class:`GCNConv`).
    """

    norm = "mean"
    """The propagation matrix's normalization: the mean over the in-neighbours."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, cached: bool = True):
        super().__init__()
        in_features, out_features = _check_sizes(in_features, out_features, "SAGEConv")
        self._propagation = _PropagationCache() if cached else None
        self.in_features, self.out_features = in_features, out_features
        self.lin_l = _CompressibleLinear(in_features, out_features, bias=bias)
        self.lin_r = _CompressibleLinear(in_features, out_features, bias=False)
        bound = 1.0 / math.sqrt(in_features)
        for lin in (self.lin_l, self.lin_r):
            nn.init.uniform_(lin.weight, -bound, bound)
        if self.lin_l.bias is not None:
            nn.init.zeros_(self.lin_l.bias)

    def propagation(self, x, adj):
        return _layer_propagation(self._propagation, adj, x.shape[0], self.norm)

    def forward(self, x, adj, backend: str | None = None):
        x = _check_input(x, self.in_features, "SAGEConv", self)
        a = self.propagation(x, adj)
        if x.is_sparse and (self.lin_l.compressed is None or self.training):
            # The mean of sparse rows is dense: aggregate after the weight product, (A x) W^T = A (x W^T).
            aggregated = _propagate_product(a, F.linear(x, self.lin_l.weight), self.lin_l.weight, "SAGEConv", backend)
            out = aggregated if self.lin_l.bias is None else aggregated + self.lin_l.bias
            return out + self.lin_r(x, backend=backend)
        if x.is_sparse:
            x = x.to_dense()
        aggregated = spmm(a, x, backend=backend)
        return self.lin_l(aggregated, backend=backend) + self.lin_r(x, backend=backend)

    def compress_weights(self, *, sparsity: float = 0.0, fp16_threshold: float | None = None):
        for lin in (self.lin_l, self.lin_r):
            lin.compress(sparsity=sparsity, fp16_threshold=fp16_threshold)
        return self

    def decompress_weights(self):
        self.lin_l.compressed = self.lin_r.compressed = None
        return self

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, aggr='mean'"
