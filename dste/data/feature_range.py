"""Node features brought into the magnitude range the job's models and storage formats work in.

``dste run`` trains an FP32 model on a graph's features and stores them, and the layer inputs they lead to, as INT8
rows with some rows in FP16. Two things fail on features of an unusual magnitude, both measured on a 1,500-node graph
with Gaussian features (largest |x| 5.2) scaled by powers of ten:

- **Too large:** FP16 saturates above 65,504, so a row chosen for FP16 cannot be stored; at 1e4 times the scale
  (largest |x| 8e4) the job stopped at the first FP16 action.
- **Too small:** at 1e-3 times the scale (largest |x| 5e-3) and below, FP32 training (GCN or GraphSAGE, the job's
  settings: Adam, weight decay 5e-4) stayed at chance, 26 % on 7 classes, where 1e-2 and every larger scale up to 1e4
  scored 96-98 %: the first layer's weights cannot grow fast enough against the decay.

Features whose largest magnitude lies outside ``FEATURE_MAGNITUDE_RANGE`` are therefore scaled by a power of two (exact
in floating point, so nothing but the scale changes) so that it lies in [1, 2). Inside the range they are left as
they are; every dataset the project ships or reads in its usual form lies inside it (0/1 bag-of-words and
row-normalized features: at most 1; the generated graphs: about 5). The bounds are an assumption with margin, not a
derived limit: 2^8 leaves 2^8 of FP16's range for a layer's products to grow in, 2^-4 is eight times the smallest
scale seen to train.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .graph import Graph

__all__ = ["FEATURE_MAGNITUDE_RANGE", "feature_scale_exponent", "features_in_range"]

FEATURE_MAGNITUDE_RANGE = (2.0 ** -4, 2.0 ** 8)
"""Largest |x| of the node features the job uses as they are; outside it they are scaled by a power of two."""


def feature_scale_exponent(x: np.ndarray) -> int:
    """The power of two ``k`` such that ``x * 2**k`` has its largest magnitude in [1, 2), or 0 where ``x``'s already
    lies in ``FEATURE_MAGNITUDE_RANGE`` (or ``x`` is all zeros: there is nothing to scale)."""
    largest = float(np.max(np.abs(x))) if x.size else 0.0
    if not math.isfinite(largest):
        raise ValueError(f"node features hold NaN or Inf (largest |x| = {largest}); they must be finite")
    low, high = FEATURE_MAGNITUDE_RANGE
    if largest == 0.0 or low <= largest <= high:
        return 0
    return -math.frexp(largest)[1] + 1  # frexp: largest = m * 2**e with m in [0.5, 1)


def features_in_range(graph: Graph) -> tuple[Graph, int]:
    """``(graph, k)``: ``graph`` with its features times ``2**k`` (see the module docstring), the same object when
    ``k == 0``; the new graph's ``meta["feature_scale_exponent"]`` records ``k``."""
    exponent = feature_scale_exponent(graph.x)
    if exponent == 0:
        return graph, 0
    scaled = np.ldexp(graph.x, exponent).astype(np.float32, copy=False)
    return dataclasses.replace(graph, x=scaled, meta={**graph.meta, "feature_scale_exponent": exponent}), exponent
