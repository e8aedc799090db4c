"""Two-layer GCN / GraphSAGE node classifiers: dropout -> conv -> relu -> dropout -> conv."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dste.checks import integer, real_number

from .layers import GCNConv, SAGEConv

__all__ = ["TwoLayerGNN", "GCN", "SAGE", "make_model", "input_dropout", "CONV_KINDS", "SEED_RANGE"]

CONV_KINDS = {"gcn": GCNConv, "sage": SAGEConv}

SEED_RANGE = (-(1 << 63), (1 << 64) - 1)
"""The seeds ``torch.manual_seed`` takes."""


class TwoLayerGNN(nn.Module):
    """``conv2(dropout(relu(conv1(dropout(x), adj))), adj)`` returning logits ``[n, out]``."""

    def __init__(self, in_features: int, hidden: int, out_features: int, conv: str = "gcn", dropout: float = 0.5):
        super().__init__()
        if not isinstance(conv, str) or conv not in CONV_KINDS:
            raise ValueError(f"conv must be one of {sorted(CONV_KINDS)}, got {conv!r}")
        real_number(dropout, "dropout")  # a bool or a string is not a probability
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.conv_kind = conv
        self.dropout = float(dropout)
        self.conv1 = CONV_KINDS[conv](in_features, hidden)
        self.conv2 = CONV_KINDS[conv](hidden, out_features)

    @property
    def convs(self) -> tuple[nn.Module, nn.Module]:
        return (self.conv1, self.conv2)

    def forward(self, x, adj, backend: str | None = None):
        h = input_dropout(x, self.dropout, self.training)
        h = F.relu(self.conv1(h, adj, backend=backend))
        h = F.dropout(h, self.dropout, self.training)
        return self.conv2(h, adj, backend=backend)


def input_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout`` of the node features; on a sparse COO ``x`` it draws over the stored values only, as Kipf and
    Welling's own GCN does (a dropped zero is zero either way), and returns a sparse tensor."""
    if not x.is_sparse:
        return F.dropout(x, p, training)
    x = x.coalesce()
    return torch.sparse_coo_tensor(x.indices(), F.dropout(x.values(), p, training), x.shape, is_coalesced=True,
                                   check_invariants=False)  # the indices are x's own, already checked


class GCN(TwoLayerGNN):
    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.5):
        super().__init__(in_features, hidden, out_features, conv="gcn", dropout=dropout)


class SAGE(TwoLayerGNN):
    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.5):
        super().__init__(in_features, hidden, out_features, conv="sage", dropout=dropout)


def make_model(graph, conv: str = "gcn", hidden: int = 64, dropout: float = 0.5, seed: int = 0) -> TwoLayerGNN:
    """A model sized for ``graph`` (a ``dste.data.Graph``) with weights drawn from ``seed`` (an integer: 1.5 ran as
    seed 1)."""
    for name in ("x", "num_classes"):
        if not hasattr(graph, name):
            raise TypeError(f"graph must be a dste.data.Graph (missing .{name}), got {type(graph).__name__}")
    integer(seed, "seed", low=SEED_RANGE[0], high=SEED_RANGE[1])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TwoLayerGNN(graph.x.shape[1], hidden, graph.num_classes, conv=conv, dropout=dropout)
