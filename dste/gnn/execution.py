"""The one compressed forward pass of a trained two-layer GCN/SAGE model.

:class:`CompressedModel` holds a model's layers and the compressed weights built from them (one per layer,
linear map, precision and kept-channel set, built once). :class:`GraphInference` runs that model on one graph
under per-layer :class:`~dste.gnn.settings.LayerSetting` s: it owns the graph's propagation plan, the FP32
reference activations that rank edges and channels, and the pruned propagation matrices.

Two executions of the same values and masks:

* :meth:`GraphInference.run_layer` -- NumPy on the dequantized operands (SciPy CSR of the effective matrix,
  ``h @ W_eff``), returning a :class:`LayerRun` that :mod:`dste.gnn.footprint` and :mod:`dste.gnn.latency`
  size and price. Fast enough for the controller's thousands of episodes.
* :meth:`GraphInference.forward` -- through the DSTE torch ops (``dste.spmm``, ``CompressedWeight``) on a
  chosen backend. On ``cpu`` it agrees with the NumPy execution up to float32 summation order; the kernel
  backends multiply bf16 operands (within 2^-7 (|A| |X|) per product, README "Backends").

A layer, under a setting: keep the most important input channels (score of channel c = ||W[c, :]||, summed
in square over the layer's linear maps, times the root-mean-square of column c of the FP32 layer input; the
lowest ``floor(c * F)`` dropped, ties by index, at least one kept) and re-fit the kept weight rows to carry the
dropped channels' share of the product on the graph's FP32 layer input (:mod:`dste.gnn.channel_fit`, label-free;
``channel_fit=False`` keeps the trained rows); quantize the kept input to hybrid rows;
GCN: ``A (Q(h W))``, SAGE mean: ``lin_l(A Q(h)) + lin_r(Q(h))``, with A pruned by the pruning policy; bias;
ReLU between layers.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dste.bindings import DSTETensor, spmm
from dste.bindings.backends import resolve_backend
from dste.bindings.csr_kernel import csr_product
from dste.format.constants import FLOAT32_MAX, FP16_MAX, FP16_UNDERFLOW_AMAX
from dste.format.hybrid_rows import MIN_ROW_MAGNITUDE

from .channel_fit import CHANNEL_FIT_MAX_CHANNELS, compensated_rows, gram_matrix
from .pruning import GatherAwarePruning, PropagationPlan
from .row_quant import dequantize_rows, fake_quantize
from .settings import FP32_SETTING, LayerSetting, quantize_rows_by_fraction
from .weights import CompressedWeight, value_version

__all__ = ["CompressedModel", "GraphInference", "LayerOperands", "LayerRun", "compressed_forward", "settings_for"]


STORED_FEATURE_BYTES = 320 << 20
"""Bytes of quantized feature versions (``HybridRows`` per kept-channel set and FP16 share, about one byte per
value) each graph keeps, least recently used dropped. All twelve versions of a graph up to ogbn-arxiv's size fit
(75 MB for PubMed's 19,717 x 500, 287 MB for 169,343 x 128): the controller sweeps the actions edge-major,
so a cache holding fewer versions than the twelve (channel, FP16) pairs misses on every layer run, and at
ogbn-arxiv's size re-quantizing the features was the largest share of the main job. Larger feature matrices keep
the most recent versions within this bound: no snapshot holds more than this in copies of its features."""


FITTED_ROWS_BYTES = 64 << 20
"""Bytes of re-fitted weight rows (:meth:`CompressedModel.fitted_rows`) a model keeps across graphs: a few hundred
kept-channel sets of a 3,703 x 64 layer; every graph also keeps its own compressed weights."""


def _digest(array: np.ndarray) -> str:
    """A name for an array's contents (shape, dtype and bytes)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(f"{array.shape}{array.dtype}".encode(), digest_size=16)
    digest.update(array.data)
    return digest.hexdigest()


class StoredRows:
    """Quantized rows (``HybridRows``) kept by key within ``limit_bytes`` of their device arrays, least recently used
    dropped first; the newest entry is kept even alone above the limit. Owned by the object whose data they are."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = int(limit_bytes)
        self._rows: OrderedDict[tuple, object] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._rows)

    def values(self):
        return self._rows.values()

    def get(self, key: tuple, make):
        """The rows kept under ``key``, made by ``make()`` (and kept) on first use."""
        rows = self._rows.pop(key, None)
        if rows is None:
            rows = make()
            self.nbytes += rows.nbytes()["total"]
        self._rows[key] = rows  # most recently used last
        while len(self._rows) > 1 and self.nbytes > self.limit_bytes:
            _, dropped = self._rows.popitem(last=False)
            self.nbytes -= dropped.nbytes()["total"]
        return rows


def dequantized_hybrid_rows(rows) -> torch.Tensor:
    """``rows.dequantize()`` (float32) as a torch tensor, bit for bit, in one compiled pass
    (:func:`dste.gnn.row_quant.dequantize_rows`). One thread: 300 x 16 2.8 us, 2,708 x 500 0.13 ms, 3,327 x 3,703
    6.7 ms, against 14 us, 0.22 ms and 25 ms for torch's widening copy, in-place scale and FP16 rows' index copy.
    """
    out = np.empty(rows.q.shape, dtype=np.float32)
    dequantize_rows(rows.q, rows.scale, rows.hi_rows, rows.hi.view(np.uint16), 0, out)
    return torch.from_numpy(out)


class WorkBuffers:
    """float32 work buffers reused from call to call, one per name, grown on demand: what
    :func:`fake_quantized_rows` writes its result into, and :func:`hybrid_rows_product` its dequantized block, when a
    caller keeps one (a forward pass holds one per thread). A fresh activation-sized tensor per pass is mapped and
    written anew each call; the reused ones stay mapped and mostly cached (10k x 64 ReLU activations, 5 % FP16 rows,
    one thread: see ``bench/README.md``). Buffers above ``WORK_BUFFER_MAX_BYTES`` are not kept."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}
        self._views: dict[tuple, torch.Tensor] = {}  # (name, shape) -> the view of that name's buffer

    def take(self, name: str, shape: tuple[int, int]) -> torch.Tensor:
        """A float32 tensor of ``shape`` (contents arbitrary) that stays this name's until its next ``take``."""
        view = self._views.get((name, shape))
        if view is not None:
            return view
        numel = int(shape[0]) * int(shape[1])
        if 4 * numel > WORK_BUFFER_MAX_BYTES:
            return torch.empty(shape, dtype=torch.float32)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            buffer = self._buffers[name] = torch.empty(numel, dtype=torch.float32)
            self._views = {key: value for key, value in self._views.items() if key[0] != name}
        view = self._views[(name, tuple(shape))] = buffer[:numel].view(shape)
        return view


WORK_BUFFER_MAX_BYTES = 16 << 20
"""Largest work buffer :class:`WorkBuffers` keeps (with the dequantized block's ``FEATURE_BLOCK_BYTES``: 20 MB at
most per thread and graph); larger activations get fresh tensors, as before."""


FEATURE_BLOCK_BYTES = 4 << 20
"""Bytes of dequantized feature rows :func:`hybrid_rows_product` holds at a time. Dequantizing a whole feature
matrix maps and faults in a fresh float32 copy on every inference (CiteSeer-sized 3,327 x 3,703: 49 MB); blocks
of this size in one reused buffer measured fastest of 256 KiB - 4 MiB (one thread, product with a 64-column
weight: 36.8 -> 21.9 ms there, PubMed-sized 31.4 -> 17.1 ms; FP32's product 20.0 and 18.5 ms)."""


def hybrid_rows_product(rows, weight: torch.Tensor, work: WorkBuffers | None = None) -> torch.Tensor:
    """``rows.dequantize() @ weight`` (float32), a block of ``FEATURE_BLOCK_BYTES`` of rows at a time.

    Each block is dequantized as ``HybridRows.dequantize`` does, in one compiled call
    (:func:`dste.gnn.row_quant.dequantize_rows`: the int8 values times the row scale in float32, FP16 rows widened),
    and multiplied by ``torch.mm`` into its rows of the output. The dequantized values are the same bits; the
    product's are those of the whole-matrix ``torch.mm`` wherever the GEMM sums each output row the same way for any
    row count (so on this host's MKL; one block, as for Cora-sized features, is the whole-matrix product itself).
    The torch steps it replaces (a widening copy, the scale in place, the FP16 rows' index copy, slicing) cost ~40
    us of fixed time per call, a quarter of a 300-node graph's whole FP32 pass. ``work``: buffers for the
    dequantized block (one of them is then overwritten).
    """
    n, width = rows.q.shape
    block = max(1, FEATURE_BLOCK_BYTES // (4 * max(width, 1)))
    shape = (min(block, n), width)
    dequantized = np.empty(shape, dtype=np.float32) if work is None else work.take("dequantized", shape).numpy()
    hi_bits = rows.hi.view(np.uint16)
    if n <= block:
        dequantize_rows(rows.q, rows.scale, rows.hi_rows, hi_bits, 0, dequantized)
        return torch.mm(torch.from_numpy(dequantized), weight)
    out = torch.empty((n, weight.shape[1]), dtype=torch.float32)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        dequantize_rows(rows.q, rows.scale, rows.hi_rows, hi_bits, lo, dequantized[: hi - lo])
        torch.mm(torch.from_numpy(dequantized[: hi - lo]), weight, out=out[lo:hi])
    return out


def fake_quantized_rows(x: torch.Tensor, fraction: float, work: WorkBuffers | None = None) -> torch.Tensor:
    """``quantize_rows_by_fraction(x, fraction).dequantize()`` bit for bit, without the ``HybridRows``.

    What the cpu backend multiplies by when it is handed hybrid rows: INT8 rows ``rne_sat(x * fp32(1/s)) * s``
    with the device scale ``s = max|x| * fp32(1/127)`` (1 for an all-zero row), FP16 rows ``fp32(fp16(x))``, the
    FP16 rows being the ``round(fraction * n)`` most sensitive (ties by lower row id). One compiled call
    (:func:`dste.gnn.row_quant.fake_quantize`: the quantizer's float32 arithmetic, NumPy's summation order for
    the exact scores, which only the rows that float32 score bounds cannot rule out get); no int8, scale or index
    arrays, no validation and no separate dequantization (1,000 x 64, 5 % FP16 rows, one thread: see
    ``bench/README.md``, "CPU inference with the compiled row quantization"). Input the quantizer refuses (NaN/Inf,
    rows with a subnormal INT8 scale, FP16 rows beyond float16's range) goes through ``quantize_rows_by_fraction``
    itself, so it raises exactly what the quantizer raises; so does input with FP16 rows and a row whose largest
    |x| is nonzero but below ``FP16_UNDERFLOW_AMAX``, which the quantizer keeps INT8 whatever its score.

    ``work``: buffers for the result; it is then one of them, valid until the next call with the same ``work``
    (``x`` must not be one).
    """
    # each step only where it changes something: a no-op detach, cast and copy cost ~2 us together, per call
    if x.requires_grad:
        x = x.detach()
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    if not x.is_contiguous():
        x = x.contiguous()
    rows = x.numpy()
    if rows.ndim != 2 or rows.size == 0 or not 0.0 <= fraction <= 1.0:  # a NaN fraction fails the comparison
        return torch.from_numpy(quantize_rows_by_fraction(rows, fraction).dequantize())
    out = torch.empty(rows.shape, dtype=torch.float32) if work is None else work.take("rounded", rows.shape)
    count = int(round(fraction * rows.shape[0]))
    # with FP16 rows, a row whose largest |x| is below FP16_UNDERFLOW_AMAX stays INT8 whatever its score: the compiled
    # pass does not know that rule, so such input goes through the quantizer (as rare as such tiny hidden rows)
    smallest = MIN_ROW_MAGNITUDE if count == 0 else max(MIN_ROW_MAGNITUDE, FP16_UNDERFLOW_AMAX)
    if fake_quantize(rows, count, out.numpy(), smallest, FLOAT32_MAX, FP16_MAX):
        return torch.from_numpy(quantize_rows_by_fraction(rows, fraction).dequantize())
    return out


def compile_quantization_passes() -> float:
    """Compile the passes of :func:`fake_quantized_rows` and :func:`hybrid_rows_product` (``dste.gnn.row_quant``),
    or load them from Numba's cache beside the module; returns the seconds it took. Compiling takes several
    seconds, once per machine and revision: ``scripts/setup.sh`` calls this once, so that ``dste run`` and every
    test worker find the passes cached."""
    started = time.perf_counter()
    features = torch.linspace(-1.0, 1.0, 512).reshape(64, 8)
    fake_quantized_rows(features, 0.25)
    hybrid_rows_product(quantize_rows_by_fraction(features.numpy(), 0.25), torch.eye(8))
    return time.perf_counter() - started


def _parameter_versions(model) -> tuple:
    """Each parameter's :func:`~dste.gnn.weights.value_version`: what changes when training or ``load_state_dict``
    changes the model."""
    return tuple((name, value_version(p)) for name, p in model.named_parameters())


def _one_parameter_check(method):
    """``method`` of a ``GraphInference`` run inside ``CompressedModel.checked_once``."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        with self.model.checked_once():
            return method(self, *args, **kwargs)

    return checked


def _layer_kind(model) -> str:
    kind = getattr(model, "conv_kind", None)
    if kind not in ("gcn", "sage") or getattr(model, "convs", None) is None:
        raise TypeError(f"model must be a dste.gnn TwoLayerGNN (gcn or sage), got {type(model).__name__}")
    return kind


class CompressedModel:
    """A trained ``dste.gnn`` two-layer model with its compressed weights built on demand (inference only: no
    dropout, whatever the model's own train/eval mode, which is left as it was).

    It holds the model's parameters as they were when it was built: where they change afterwards (an optimizer step,
    ``load_state_dict``) it refuses to answer rather than mix old biases and compressed weights with new ones; build
    a new one (``compressed_forward`` does, on every call)."""

    def __init__(self, model):
        self.kind = _layer_kind(model)
        self.model = model
        self.num_layers = len(model.convs)
        self._built_from = _parameter_versions(model)
        self._check_scope = threading.local()  # .depth: open checked_once blocks on this thread
        self.layers = [self._layer_weights(conv) for conv in model.convs]
        self._weights: dict[tuple, tuple[CompressedWeight, np.ndarray]] = {}
        self._fitted_rows: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._fitted_rows_bytes = 0
        self._grams: dict[tuple[int, int], tuple[str, np.ndarray]] = {}  # (layer, map) -> its last input's Gram

    @property
    def norm(self) -> str:
        return "gcn" if self.kind == "gcn" else "mean"

    @staticmethod
    def _layer_weights(conv):
        linears = [conv.lin] if hasattr(conv, "lin") else [conv.lin_l, conv.lin_r]
        bias = conv.bias if getattr(conv, "bias", None) is not None else getattr(conv.lin_l, "bias", None)
        return linears, (bias.detach().numpy().astype(np.float32) if bias is not None else None)

    def linears(self, layer: int) -> list:
        self._check_outside_scope()
        return self.layers[layer][0]

    def bias(self, layer: int) -> np.ndarray | None:
        self._check_outside_scope()
        return self.layers[layer][1]

    @contextmanager
    def checked_once(self):
        """A block in which the parameters are checked once, on entry, rather than at every read of a weight or a
        bias: a layer run reads them several times, and each check reads every parameter's bytes (its CRC-32), which
        made the checks most of a small graph's forward pass. Nothing outside the block can change them in between
        on this thread; blocks nest."""
        depth = getattr(self._check_scope, "depth", 0)
        if depth == 0:
            self.check_unchanged()
        self._check_scope.depth = depth + 1
        try:
            yield
        finally:
            self._check_scope.depth = depth

    def _check_outside_scope(self) -> None:
        if not getattr(self._check_scope, "depth", 0):
            self.check_unchanged()

    def check_unchanged(self) -> None:
        """Raise where the model's parameters changed after this was built (module docstring)."""
        if _parameter_versions(self.model) != self._built_from:
            raise RuntimeError(
                "the model's parameters changed after this CompressedModel was built (an optimizer step, "
                "load_state_dict or a new Parameter): its biases, compressed weights and every GraphInference or "
                "environment over it hold the old values; build a new CompressedModel (or call compressed_forward, "
                "which builds one per call)")

    @staticmethod
    def compress_rows(rows: np.ndarray, setting: LayerSetting) -> tuple[CompressedWeight, np.ndarray]:
        """``(CompressedWeight, effective float32 [in, out])`` of weight rows ``rows`` float32 ``[in, out]`` under a
        compressed ``setting`` (its weight sparsity and FP16 threshold)."""
        weight = CompressedWeight(
            torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)),
            sparsity=setting.weight_sparsity,
            fp16_threshold=setting.weight_threshold,
        )
        return weight, weight.effective().numpy().astype(np.float32)

    def fitted_rows(self, layer: int, index: int, kept: np.ndarray, input_digest: str, layer_input) -> np.ndarray:
        """float32 ``[kept, out]``: linear map ``index`` of ``layer``'s ``kept`` rows re-fitted on an FP32 input
        (:func:`dste.gnn.channel_fit.compensated_rows`); ``layer_input()`` gives that input, ``input_digest`` names
        it. Kept by (kept channels, input) across graphs, so snapshots whose features do not change fit once;
        least recently used dropped beyond ``FITTED_ROWS_BYTES``."""
        key = (layer, index, kept.tobytes(), input_digest)
        rows = self._fitted_rows.get(key)
        if rows is not None:
            self._fitted_rows.move_to_end(key)
            return rows
        # One Gram matrix per map serves every kept set of the same input (a sweep asks for them in turn).
        held = self._grams.get((layer, index))
        if held is None or held[0] != input_digest:
            self._grams.pop((layer, index), None)  # freed before the next is built
            held = self._grams[(layer, index)] = (input_digest, gram_matrix(layer_input()))
        rows = compensated_rows(self.linears(layer)[index].weight.detach().numpy().T, kept, held[1])
        self._fitted_rows[key] = rows
        self._fitted_rows_bytes += rows.nbytes
        while self._fitted_rows_bytes > FITTED_ROWS_BYTES and len(self._fitted_rows) > 1:
            self._fitted_rows_bytes -= self._fitted_rows.popitem(last=False)[1].nbytes
        return rows

    def weight(self, layer: int, index: int, setting: LayerSetting, kept: np.ndarray | None = None):
        """``(CompressedWeight or None, effective float32 [in, out])`` of linear map ``index`` of ``layer``
        over the ``kept`` input channels (all if None), their rows as trained; None and the FP32 weight for an
        FP32 setting. (:meth:`GraphInference.weight` re-fits the kept rows to the graph.)"""
        linear = self.linears(layer)[index]
        if setting.fp32:
            return None, linear.weight.detach().numpy().T.astype(np.float32)
        threshold = setting.weight_threshold
        key = (layer, index, threshold, setting.weight_sparsity, None if kept is None else kept.tobytes())
        if key not in self._weights:
            full = linear.weight.detach().numpy().T.astype(np.float32)  # [in, out]
            self._weights[key] = self.compress_rows(full if kept is None else full[kept], setting)
        return self._weights[key]


@dataclass
class LayerRun:
    """One layer run under a setting: its output and every operand it used (for bytes and latency)."""

    layer: int
    setting: LayerSetting
    output: np.ndarray  # float32 [n, out], after bias and (between layers) ReLU
    adjacency: object  # the DSTEMatrix propagated over
    base: object  # the unpruned DSTEMatrix
    weights: list  # per linear map: (CompressedWeight or None, effective float32 [in, out])
    bias: np.ndarray | None
    layer_input: np.ndarray  # float32 [n, kept channels]: the FP32 input after channel selection
    input_rows: object  # HybridRows of layer_input (None for FP32)
    spmm_rows: object  # HybridRows handed to the SpMM kernel (None unless x_mode is int8-hybrid)
    spmm_width: int

    @property
    def num_nodes(self) -> int:
        return int(self.layer_input.shape[0])


@dataclass
class LayerOperands:
    """What a layer run under a setting would hand the kernels, without running it: the operands its
    modelled latency depends on once the FP16 rows are priced by their count (``n_fp16_rows``), not by
    which rows they are (see ``dste.gnn.latency.SHARE_PRICED_NODES``)."""

    layer: int
    setting: LayerSetting
    adjacency: object  # the DSTEMatrix propagated over
    weights: list  # per linear map: (CompressedWeight or None, effective float32 [in, out])
    num_nodes: int
    spmm_width: int
    n_fp16_rows: int | None  # FP16 rows of the SpMM's hybrid X (None unless x_mode is int8-hybrid)


def _sparse_times(csr, dense: np.ndarray) -> np.ndarray:
    """``csr @ dense`` of a float32 SciPy CSR and a float32 array, SciPy's bits (each value summed in stored order,
    ``dste.bindings.csr_kernel``) in less than half its time: at ogbn-arxiv's size SciPy's product was a tenth of
    the main job. Other dtypes go to SciPy."""
    if csr.data.dtype != np.float32 or dense.dtype != np.float32 or dense.ndim != 2:
        return csr @ dense
    out, _ = csr_product(csr.indptr, csr.indices, csr.data, np.ascontiguousarray(dense))
    return out


def _pruning_policy(pruning):
    """An edge-pruning policy object from itself, its class, its name (``PRUNING_POLICIES``) or None (default)."""
    from .pruning import PRUNING_POLICIES

    if pruning is None:
        return GatherAwarePruning()
    if isinstance(pruning, str):
        if pruning not in PRUNING_POLICIES:
            raise ValueError(f"pruning must be one of {sorted(PRUNING_POLICIES)} or a policy object, got {pruning!r}")
        return PRUNING_POLICIES[pruning]()
    if isinstance(pruning, type):
        pruning = pruning()
    if not callable(getattr(pruning, "prune", None)):
        raise TypeError(f"pruning must be a policy with a .prune method (dste.gnn.pruning) or one of "
                        f"{sorted(PRUNING_POLICIES)}, got {type(pruning).__name__}")
    return pruning


def check_graph_fits(model: CompressedModel, graph, what: str = "the graph") -> None:
    """Refuse a graph the model was not built for: another feature width, or another number of classes (whose
    logits would be scored against labels they do not name)."""
    for name in ("adj", "x"):
        if not hasattr(graph, name):
            raise TypeError(f"graph must be a dste.data.Graph (missing .{name}), got {type(graph).__name__}")
    in_features = model.linears(0)[0].in_features
    if graph.x.ndim != 2 or graph.x.shape[1] != in_features:
        raise ValueError(f"the model's first layer takes {in_features} input features; {what}'s x has shape "
                         f"{tuple(graph.x.shape)}")
    classes = model.linears(model.num_layers - 1)[0].out_features
    graph_classes = getattr(graph, "num_classes", None)
    if graph_classes is not None and int(graph_classes) != classes:
        raise ValueError(f"the model predicts {classes} classes; {what}'s labels have {graph_classes} (train a model "
                         "on this graph's classes)")


class GraphInference:
    """``model`` (a :class:`CompressedModel`) on one graph (``adj`` SciPy binary ``[n, n]``, ``x [n, F]``).

    ``pruning``: an edge-pruning policy (:mod:`dste.gnn.pruning`; default :class:`GatherAwarePruning`).
    """

    def __init__(self, model: CompressedModel, graph, pruning=None, channel_fit: bool = True):
        check_graph_fits(model, graph)
        self.model = model
        self.graph = graph
        self.pruning = _pruning_policy(pruning)
        self._plan: PropagationPlan | None = None
        self._fp32_inputs: list[np.ndarray] | None = None
        self._fp32_messages: list[np.ndarray] | None = None
        self._pruned: dict[tuple[int, float], object] = {}
        self._channels: dict[tuple[int, float], np.ndarray] = {}
        self.channel_fit = bool(channel_fit)
        self._input_digests: dict[tuple[int, int], str] = {}  # (layer, map) -> digest of the map's FP32 input
        self._fitted_weights: dict[tuple, tuple[CompressedWeight, np.ndarray]] = {}
        self._effective: dict[int, tuple[object, object]] = {}  # id(matrix) -> (matrix, CSR): holds the matrix
        self._tensors: dict[int, DSTETensor] = {}  # id(matrix) -> its op wrapper (which holds the matrix)
        self._features: np.ndarray | None = None
        self._stored_features = StoredRows(STORED_FEATURE_BYTES)  # (kept channels, FP16 share) -> HybridRows
        self._work = threading.local()  # .buffers: the forward pass's WorkBuffers, one per thread

    # ------------------------------------------------------------------ what the graph fixes
    @property
    def plan(self) -> PropagationPlan:
        if self._plan is None:
            self._plan = PropagationPlan.build(self.graph.adj, self.model.norm)
        return self._plan

    def features(self) -> np.ndarray:
        """The graph's node features, float32 (one array per graph, so callers can tell it apart)."""
        if self._features is None:
            self._features = np.ascontiguousarray(self.graph.x, dtype=np.float32)
        return self._features

    def stored_features(self, kept: np.ndarray | None, fraction: float):
        """``(kept columns of the features, their HybridRows, dequantized)`` at FP16 share ``fraction``.

        The node features are stored quantized (the footprint counts them as hybrid rows), so they are
        quantized once per (kept channels, FP16 share) and not on every inference. Only the ``HybridRows`` are
        kept: the column selection and the dequantization are redone per call (on a PubMed-sized graph 5-30 ms
        against 20-65 ms for the quantization), so every version of a graph fits ``STORED_FEATURE_BYTES``.
        """
        x = self.features() if kept is None else np.ascontiguousarray(self.features()[:, kept])
        rows = self.stored_feature_rows(kept, fraction, x)
        return x, rows, rows.dequantize()

    def stored_feature_rows(self, kept: np.ndarray | None, fraction: float, selected: np.ndarray | None = None):
        """The stored ``HybridRows`` of the ``kept`` feature columns at FP16 share ``fraction`` (quantized on
        first use; ``selected``: those columns, if the caller has them already)."""
        key = (None if kept is None else kept.tobytes(), float(fraction))

        def quantize():
            columns = selected
            if columns is None:
                columns = self.features() if kept is None else np.ascontiguousarray(self.features()[:, kept])
            return quantize_rows_by_fraction(columns, fraction)

        return self._stored_features.get(key, quantize)

    def fp32_inputs(self) -> list[np.ndarray]:
        """Per layer, the layer's input under the FP32 model (ranks the input channels)."""
        if self._fp32_inputs is None:
            inputs, h = [], self.features()
            for layer in range(self.model.num_layers):
                inputs.append(h)
                h = self.run_layer(layer, h, FP32_SETTING).output
            self._fp32_inputs = inputs
        return self._fp32_inputs

    def fp32_messages(self) -> list[np.ndarray]:
        """Per layer, the FP32 message the layer aggregates (ranks the edges): ``h W`` (GCN) or ``h`` (SAGE)."""
        if self._fp32_messages is None:
            messages = []
            for layer, h in enumerate(self.fp32_inputs()):
                linears = self.model.linears(layer)
                messages.append(h @ linears[0].weight.detach().numpy().T if self.model.kind == "gcn" else h)
            self._fp32_messages = messages
        return self._fp32_messages

    def kept_channels(self, layer: int, channel_sparsity: float) -> np.ndarray | None:
        """Sorted input channels ``layer`` keeps at ``channel_sparsity`` (None: all); see the module docstring."""
        if not 0.0 <= channel_sparsity < 1.0:
            raise ValueError(f"channel_sparsity must lie in [0, 1), got {channel_sparsity}")
        if channel_sparsity == 0.0:
            return None
        key = (layer, channel_sparsity)
        if key not in self._channels:
            h = self.fp32_inputs()[layer]
            linears = self.model.linears(layer)
            weight_norm = np.sqrt(sum(np.square(lin.weight.detach().numpy()).sum(axis=0) for lin in linears))
            rms = np.sqrt(np.mean(np.square(h, dtype=np.float64), axis=0))
            score = weight_norm * rms
            n_drop = min(int(math.floor(channel_sparsity * score.size)), score.size - 1)
            order = np.argsort(score, kind="stable")
            self._channels[key] = np.sort(order[n_drop:])
        return self._channels[key]

    def weight(self, layer: int, index: int, setting: LayerSetting, kept: np.ndarray | None):
        """``(CompressedWeight or None, effective float32 [kept, out])`` of linear map ``index`` of ``layer`` over
        the ``kept`` input channels. With ``channel_fit`` the kept rows are re-fitted to carry the dropped channels'
        share of the map's product on this graph's FP32 layer input (:mod:`dste.gnn.channel_fit`, label-free);
        without it, with every channel kept, or past ``CHANNEL_FIT_MAX_CHANNELS`` inputs, they are the trained rows
        (:meth:`CompressedModel.weight`)."""
        wide = self.model.linears(layer)[index].in_features > CHANNEL_FIT_MAX_CHANNELS
        if setting.fp32 or kept is None or not self.channel_fit or wide:
            return self.model.weight(layer, index, setting, kept)
        key = (layer, index, kept.tobytes(), setting.weight_threshold, setting.weight_sparsity)
        if key not in self._fitted_weights:
            digest = self._input_digests.get((layer, index))
            if digest is None:
                digest = self._input_digests[(layer, index)] = _digest(self._map_input(layer, index))
            rows = self.model.fitted_rows(layer, index, kept, digest, lambda: self._map_input(layer, index))
            self._fitted_weights[key] = self.model.compress_rows(rows, setting)
        return self._fitted_weights[key]

    def _map_input(self, layer: int, index: int) -> np.ndarray:
        """The FP32 input linear map ``index`` of ``layer`` multiplies on this graph: the layer input, or for
        SAGE's neighbour map (index 0) its mean over the unpruned neighbourhoods."""
        h = self.fp32_inputs()[layer]
        if self.model.kind == "sage" and index == 0:
            return _sparse_times(self._effective_csr(self.plan.base), h)
        return h

    def adjacency(self, layer: int, edge_sparsity: float):
        """The propagation matrix ``layer`` runs over at ``edge_sparsity`` (the unpruned one at 0)."""
        if edge_sparsity == 0.0:
            return self.plan.base
        key = (layer, edge_sparsity)
        if key not in self._pruned:
            self._pruned[key] = self.pruning.prune(self.plan, edge_sparsity, self.fp32_messages()[layer])
        return self._pruned[key]

    def _effective_csr(self, matrix):
        held = self._effective.get(id(matrix))
        if held is None or held[0] is not matrix:
            held = (matrix, matrix.decode(effective=True, dtype=np.float32))
            self._effective[id(matrix)] = held
        return held[1]

    def tensor(self, matrix) -> DSTETensor:
        """The op wrapper of one of this graph's propagation matrices, built once (its CSR operands are the
        expensive part of a ``dste.spmm`` call)."""
        held = self._tensors.get(id(matrix))
        if held is None or held.matrix is not matrix:
            held = self._tensors[id(matrix)] = DSTETensor(matrix)
        return held

    def input_rows(self, layer: int, h: np.ndarray, setting: LayerSetting):
        """The stored ``HybridRows`` of ``layer``'s input ``h`` under a compressed ``setting``: its kept channels
        at the setting's FP16 share (what :meth:`run_layer` quantizes; they depend on the channel level and the
        FP16 share only, not on the rest of the action)."""
        if setting.fp32:
            raise ValueError("an uncompressed layer reads its input in FP32: it has no stored rows")
        kept = self.kept_channels(layer, setting.channel_sparsity)
        return quantize_rows_by_fraction(h if kept is None else np.ascontiguousarray(h[:, kept]), setting.fp16_fraction)

    @_one_parameter_check
    def layer_operands(self, layer: int, setting: LayerSetting) -> LayerOperands:
        """The operands of ``run_layer(layer, ., setting)`` that fix its modelled latency, without quantizing
        or multiplying anything: the pruned matrix, the weights, the SpMM's width and its FP16-row count
        (``round(fp16_fraction * n)``, as ``quantize_rows`` takes them)."""
        kept = self.kept_channels(layer, setting.channel_sparsity)
        weights = [self.weight(layer, index, setting, kept) for index in range(len(self.model.linears(layer)))]
        n = int(self.graph.adj.shape[0])
        in_width, out_width = weights[0][1].shape
        spmm_width = out_width if self.model.kind == "gcn" else in_width
        hybrid = setting.x_mode == "int8-hybrid"
        return LayerOperands(
            layer=layer, setting=setting, adjacency=self.adjacency(layer, setting.edge_sparsity), weights=weights,
            num_nodes=n, spmm_width=int(spmm_width),
            n_fp16_rows=int(round(setting.fp16_fraction * n)) if hybrid else None,
        )

    # ------------------------------------------------------------------ NumPy execution
    @_one_parameter_check
    def run_layer(self, layer: int, h: np.ndarray, setting: LayerSetting, input_rows=None) -> LayerRun:
        """Run ``layer`` on its input ``h`` (float32 ``[n, in]``) under ``setting`` (NumPy, dequantized values).

        ``input_rows``: :meth:`input_rows` of ``h`` for this layer and setting, if the caller keeps them (a
        controller trying many actions on one input quantizes each of its versions once).
        """
        model = self.model
        kept = self.kept_channels(layer, setting.channel_sparsity)
        fraction = setting.fp16_fraction
        spmm_rows = None
        if not setting.fp32 and h is self._features:
            h, input_rows, h_used = self.stored_features(kept, fraction)
        elif kept is not None:
            h = np.ascontiguousarray(h[:, kept])
        adjacency = self.adjacency(layer, setting.edge_sparsity)
        a_eff = self._effective_csr(adjacency)
        weights = [self.weight(layer, index, setting, kept) for index in range(len(model.linears(layer)))]
        if setting.fp32:
            h_used, input_rows = h, None
        else:
            if input_rows is None:
                input_rows = quantize_rows_by_fraction(h, fraction)
            elif input_rows.q.shape != h.shape:
                raise ValueError(f"input_rows hold {input_rows.q.shape}, the layer's kept input is {h.shape}")
            h_used = input_rows.dequantize()
        if model.kind == "gcn":
            message = h_used @ weights[0][1]
            if not setting.fp32:
                quantized = quantize_rows_by_fraction(message, fraction)
                message = quantized.dequantize()
                spmm_rows = quantized if setting.x_mode == "int8-hybrid" else None
            out = _sparse_times(a_eff, message)
            spmm_width = message.shape[1]
        else:  # SAGE mean: lin_l(A h) + lin_r(h), the SpMM reads the (hybrid) layer input
            spmm_rows = input_rows if setting.x_mode == "int8-hybrid" else None
            out = _sparse_times(a_eff, h_used) @ weights[0][1] + h_used @ weights[1][1]
            spmm_width = h_used.shape[1]
        bias = model.bias(layer)
        if bias is not None:
            out = out + bias
        if layer < model.num_layers - 1:
            out = np.maximum(out, 0.0)
        return LayerRun(
            layer=layer,
            setting=setting,
            output=np.ascontiguousarray(out, dtype=np.float32),
            adjacency=adjacency,
            base=self.plan.base,
            weights=weights,
            bias=bias,
            layer_input=h,
            input_rows=input_rows,
            spmm_rows=spmm_rows,
            spmm_width=int(spmm_width),
        )

    @_one_parameter_check
    def run(self, settings: Sequence[LayerSetting]) -> list[LayerRun]:
        """Every layer under ``settings`` (one per layer), NumPy execution."""
        settings = settings_for(self.model, settings)
        runs, h = [], self.features()
        for layer, setting in enumerate(settings):
            runs.append(self.run_layer(layer, h, setting))
            h = runs[-1].output
        return runs

    # ------------------------------------------------------------------ the torch-op execution
    @_one_parameter_check
    def forward(self, settings: Sequence[LayerSetting], backend: str | None = "cpu") -> torch.Tensor:
        """Logits ``[n, classes]`` under ``settings`` through ``dste.spmm`` and ``CompressedWeight`` (the ops).

        The kernel backends get every quantized operand as ``HybridRows``. The cpu backend multiplies by the
        dequantized values of those rows, so it gets them directly as float32 tensors
        (:func:`fake_quantized_rows`, :func:`dequantized_hybrid_rows`: the same bits without building and
        validating the int8 arrays only to dequantize them again).
        """
        model = self.model
        settings = settings_for(model, settings)
        backend = resolve_backend(backend)
        on_host = backend == "cpu"
        h = torch.from_numpy(self.features())
        work = getattr(self._work, "buffers", None)
        if work is None:
            work = self._work.buffers = WorkBuffers()
        with torch.no_grad():
            for layer, setting in enumerate(settings):
                a = self.tensor(self.adjacency(layer, setting.edge_sparsity))
                kept = self.kept_channels(layer, setting.channel_sparsity)
                fraction = setting.fp16_fraction
                input_rows = None
                message = None
                if layer == 0 and not setting.fp32:
                    input_rows = self.stored_feature_rows(kept, fraction)
                    weight = self.weight(layer, 0, setting, kept)[0]
                    if on_host and model.kind == "gcn":  # the features are only ever multiplied by the weight
                        message = hybrid_rows_product(input_rows, weight.dense_effective(torch.float32), work)
                    else:
                        x_used = dequantized_hybrid_rows(input_rows)
                else:
                    if kept is not None:  # index_select: 10k x 64 -> 32 columns 0.12 ms, advanced indexing 0.70 ms
                        h = h.index_select(1, torch.from_numpy(kept.astype(np.int64, copy=False)))
                    if setting.fp32:
                        x_used = h
                    elif on_host:
                        # x_used is read before the message's quantization reuses `work`
                        x_used = fake_quantized_rows(h, fraction, work=work)
                    else:
                        input_rows = quantize_rows_by_fraction(h.numpy(), fraction)
                        x_used = torch.from_numpy(input_rows.dequantize())
                linears = model.linears(layer)
                weights = [self.weight(layer, index, setting, kept)[0] for index in range(len(linears))]

                def linear(x, index):
                    if weights[index] is None:
                        return x @ linears[index].weight.detach().t()
                    if on_host:
                        # the dequantized weight in nn.Linear's [out, in] layout, as FP32's product: this host's
                        # GEMM runs it faster for narrow outputs (see CompressedWeight.dense_effective_transposed)
                        return x @ weights[index].dense_effective_transposed(x.dtype).t()
                    return weights[index](x, backend=backend)

                if model.kind == "gcn":
                    if message is None:
                        message = linear(x_used, 0)
                    if setting.fp32:
                        operand = message
                    elif on_host:
                        operand = fake_quantized_rows(message, fraction, work=work)
                    else:
                        operand = quantize_rows_by_fraction(message.numpy(), fraction)
                    out = spmm(a, operand, backend=backend)
                else:
                    operand = x_used if setting.fp32 or on_host else input_rows
                    out = linear(spmm(a, operand, backend=backend), 0) + linear(x_used, 1)
                bias = model.bias(layer)
                if bias is not None:
                    out.add_(torch.from_numpy(bias))
                h = out.relu_() if layer < model.num_layers - 1 else out
        return h


def settings_for(model, settings) -> list[LayerSetting]:
    """``settings`` as one :class:`LayerSetting` per layer (a single setting applies to every layer)."""
    if isinstance(settings, LayerSetting):
        settings = [settings] * model.num_layers
    if isinstance(settings, (str, bytes)) or not hasattr(settings, "__iter__"):
        raise TypeError(f"settings must be one LayerSetting or a list of {model.num_layers} of them (FP32_SETTING for "
                        f"the uncompressed layer), got {type(settings).__name__}")
    settings = list(settings)
    if len(settings) != model.num_layers or not all(isinstance(s, LayerSetting) for s in settings):
        raise ValueError(f"settings must be one LayerSetting or a list of {model.num_layers} of them")
    return settings


def compressed_forward(model, graph, settings, *, pruning=None, backend: str | None = "cpu") -> torch.Tensor:
    """Eval-mode logits ``[n, classes]`` of a trained ``dste.gnn`` model on ``graph`` under per-layer
    ``settings``, through the DSTE torch ops. ``pruning``: the edge-pruning policy (default gather-aware).

    One-off use: for repeated calls keep a :class:`GraphInference`, which keeps its encodings."""
    return GraphInference(CompressedModel(model), graph, pruning).forward(settings, backend=backend)
