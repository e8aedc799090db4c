"""GNN layers over DSTE propagation matrices: GCN and GraphSAGE (mean), two-layer models, FP32 training and
compressed inference through the DSTE torch ops."""

from .adjacency import CACHE_SIZE, clear_cache, propagation_matrix, to_scipy_adjacency
from .compressed import CompressionConfig, compressed_forward, edge_keep_mask, memory_footprint
from .layers import GCNConv, SAGEConv
from .models import GCN, SAGE, TwoLayerGNN, make_model
from .train import accuracy, train_fp32
from .weights import CompressedWeight, magnitude_keep_mask

__all__ = [
    "CACHE_SIZE",
    "CompressedWeight",
    "CompressionConfig",
    "GCN",
    "GCNConv",
    "SAGE",
    "SAGEConv",
    "TwoLayerGNN",
    "accuracy",
    "clear_cache",
    "compressed_forward",
    "edge_keep_mask",
    "magnitude_keep_mask",
    "make_model",
    "memory_footprint",
    "propagation_matrix",
    "to_scipy_adjacency",
    "train_fp32",
]
