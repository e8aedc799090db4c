"""Node features brought into the magnitude range the job's models and storage formats work in.

``dste run`` trains an FP32 model on a graph's features and stores them, and the layer inputs they lead to, as INT8
rows with some rows in FP16. Features of an unusual magnitude break both, as measured on a 1,500-node graph with
Gaussian features (largest |x| 5.2) scaled by powers of ten:

- **Too large:** FP16 saturates above 65,504, so a row chosen for FP16 cannot be stored; at 1e4 times the scale
  (largest |x| 8e4) the job stopped at the first FP16 action.
- **Too small:** at 1e-3 times the scale (largest |x| 5e-3) and below, FP32 training (GCN or GraphSAGE, the job's
  settings: Adam, weight decay 5e-4) stayed at chance, 26 % on 7 classes, where 1e-2 and every larger scale up to 1e4
  scored 96-98 %.

Features whose largest magnitude lies outside ``FEATURE_MAGNITUDE_RANGE`` are therefore scaled by a power of two (exact
in floating point, so nothing but the scale changes): tiny ones up until it lies in [1, 2), large ones down just into
(2^7, 2^8], so the typical row keeps as much magnitude as it can. Inside the range they are left as they
are; every dataset the project ships or reads in its usual form lies inside it (0/1 bag-of-words and row-normalized
features: at most 1; the generated graphs: about 5). The bounds are an assumption with margin, not a derived limit:
2^8 leaves 2^8 of FP16's range for a layer's products to grow in, 2^-4 is eight times the smallest scale seen to train.

One scale serves all rows, so features it cannot serve are refused before any work, with what to do instead:

- rows of very different magnitudes: a few rows beyond the range while the typical row (the median of the rows'
  largest |x|) would fall below 2^-4 once they fit (one row 1e6 times the others put FP32 at chance, 20 %);
- a row whose largest |x| is nonzero but below 1.5e-36 (INT8 storage gives it a subnormal scale; ``quantize_rows``
  refuses it, which stopped the job after FP32 training).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dste.data import Graph
from dste.format.quant import MIN_INT8_AMAX, row_abs_max

__all__ = ["FEATURE_MAGNITUDE_RANGE", "feature_scale_exponent", "features_in_range"]

FEATURE_MAGNITUDE_RANGE = (2.0 ** -4, 2.0 ** 8)
"""Largest |x| of the node features the job uses as they are; outside it they are scaled by a power of two."""


def feature_scale_exponent(x: np.ndarray) -> int:
    """The power of two ``k`` by which ``x`` is scaled: 0 where its largest magnitude lies in
    ``FEATURE_MAGNITUDE_RANGE`` (or ``x`` is all zeros), else such that ``x * 2**k``'s lies in [1, 2) (from below) or
    (2^7, 2^8] (from above). ``ValueError`` for features no one scale serves
    (see the module docstring)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"node features must be 2-D [nodes, features], got shape {x.shape}")
    row_max = row_abs_max(x) if x.size else np.zeros(x.shape[0], np.float32)  # in row blocks: no |x| copy
    largest = float(row_max.max()) if row_max.size else 0.0
    if not math.isfinite(largest):
        raise ValueError(f"node features hold NaN or Inf (node {int(np.flatnonzero(~np.isfinite(row_max))[0])}); "
                         "they must be finite")
    low, high = FEATURE_MAGNITUDE_RANGE
    if largest == 0.0 or low <= largest <= high:
        exponent = 0
    elif largest < low:  # up into [1, 2)
        exponent = -math.frexp(largest)[1] + 1
    else:  # down just into (high / 2, high]: the typical row loses as little magnitude as it can
        exponent = -math.ceil(math.log2(largest / high))
        if math.ldexp(largest, exponent) > high:  # log2 rounded just below an integer
            exponent -= 1
    nonzero = np.flatnonzero(row_max > 0)
    if nonzero.size == 0:
        return 0
    scaled = np.ldexp(row_max[nonzero].astype(np.float64), exponent)
    if exponent < 0:
        typical = float(np.median(scaled))
        if typical < low:
            node = int(np.argmax(row_max))
            raise ValueError(
                f"the node features span magnitudes no one scale serves: node {node} holds |x| = {largest:.4g}, "
                f"beyond the {high:g} the job stores in FP16 with headroom, while the median node's largest |x| is "
                f"{float(np.median(row_max[nonzero])):.4g}; scaled by 2^{exponent} to fit, that would be "
                f"{typical:.3g}, below the {low:g} FP32 training needs. Normalize each node's features (divide a row "
                "by its sum or largest |x|) or clip the outlying values"
            )
    tiny = scaled < MIN_INT8_AMAX
    if tiny.any():
        node = int(nonzero[np.flatnonzero(tiny)[0]])
        raise ValueError(
            f"node {node}'s features are nonzero but their largest |x| is {float(row_max[node]):.3g}"
            + (f" (times 2^{exponent})" if exponent else "")
            + f", below {MIN_INT8_AMAX:.3g}, where its INT8 row scale would be subnormal: zero such rows or "
            "normalize each node's features"
        )
    return exponent


def features_in_range(graph: Graph) -> tuple[Graph, int]:
    """``(graph, k)``: ``graph`` with its features times ``2**k`` (see the module docstring), the same object when
    ``k == 0``; the new graph's ``meta["feature_scale_exponent"]`` records ``k``."""
    if not isinstance(graph, Graph):
        raise TypeError(f"features_in_range takes a dste.data.Graph, got {type(graph).__name__}")
    exponent = feature_scale_exponent(graph.x)
    if exponent == 0:
        return graph, 0
    scaled = np.ldexp(graph.x, exponent).astype(np.float32, copy=False)
    return dataclasses.replace(graph, x=scaled, meta={**graph.meta, "feature_scale_exponent": exponent}), exponent
