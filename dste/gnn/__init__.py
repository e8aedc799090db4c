"""GNN layers over DSTE propagation matrices: GCN and GraphSAGE (mean), two-layer models, FP32 training, and
the one compressed forward pass (per-layer settings, a pruning policy, NumPy or torch-op execution) with its
memory footprint and modelled latency."""

from .adjacency import encode_propagation, propagation_matrix, to_scipy_adjacency
from .execution import CompressedModel, GraphInference, LayerOperands, LayerRun, compressed_forward
from .footprint import layer_bytes, memory_footprint
from .latency import LatencyModel
from .layers import GCNConv, SAGEConv
from .models import GCN, SAGE, TwoLayerGNN, make_model
from .pruning import (
    PRUNING_POLICIES,
    GatherAwarePruning,
    MagnitudeMaskPruning,
    PropagationPlan,
    gather_aware_keep,
    magnitude_keep,
)
from .settings import ALL_INT8_THRESHOLD, FP32_SETTING, LayerSetting, quantize_rows_by_fraction, row_sensitivity
from .train import (
    accuracy,
    teacher_seeds,
    train_fp32,
    train_fp32_distilled,
    train_fp32_on_snapshots,
    train_new_fp32_model,
)
from .weights import CompressedWeight, magnitude_keep_mask

__all__ = [
    "ALL_INT8_THRESHOLD",
    "CompressedModel",
    "CompressedWeight",
    "FP32_SETTING",
    "GCN",
    "GCNConv",
    "GatherAwarePruning",
    "GraphInference",
    "LatencyModel",
    "LayerOperands",
    "LayerRun",
    "LayerSetting",
    "MagnitudeMaskPruning",
    "PRUNING_POLICIES",
    "PropagationPlan",
    "SAGE",
    "SAGEConv",
    "TwoLayerGNN",
    "accuracy",
    "compressed_forward",
    "encode_propagation",
    "gather_aware_keep",
    "layer_bytes",
    "magnitude_keep",
    "magnitude_keep_mask",
    "make_model",
    "memory_footprint",
    "propagation_matrix",
    "quantize_rows_by_fraction",
    "row_sensitivity",
    "to_scipy_adjacency",
    "train_fp32",
    "train_fp32_distilled",
    "train_fp32_on_snapshots",
    "train_new_fp32_model",
    "teacher_seeds",
]
