"""What one layer runs with under compression, and the hybrid-row quantization by FP16 share it uses.

A :class:`LayerSetting` is the whole per-layer choice of the compressed forward pass
(:mod:`dste.gnn.execution`):

* ``fp32`` -- the uncompressed layer: FP32 weights, FP32 activations, the unpruned propagation matrix (on the
  ``cpu`` backend the model's own output: bit for bit for GCN, within float32 rounding for GraphSAGE, whose
  compressed pass adds its two products and the bias in another order (~5e-7 apart); on ``nkisim`` and
  ``neuron`` the SpMM kernel's operands are bf16 (X gathered as bf16, A's values times their column factors
  rounded to bf16), so each SpMM output is within about 2^-7 (|A| |X|) of the fp32 product, relative to its
  terms' magnitudes, not to the output itself);
* ``edge_sparsity`` -- the fraction of off-diagonal propagation entries dropped by the pruning policy
  (:mod:`dste.gnn.pruning`); self loops are kept;
* ``channel_sparsity`` -- the fraction of the layer's input channels dropped, least important first;
* ``weight_sparsity`` -- the fraction of the (kept) weights dropped by magnitude through the weight's keep-mask;
* ``fp16_fraction`` -- the share f of the most sensitive rows of the layer input and of the SpMM's dense
  operand kept in FP16 (the rest INT8 with a per-row scale); weight tiles are all INT8 for f = 0, all FP16
  for f = 1 and chosen by the encoder's sensitivity rule (S >= T) in between.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from dste.checks import flag, real_number
from dste.format import quantize_rows
from dste.format.quant import row_blocks

__all__ = ["ALL_INT8_THRESHOLD", "LayerSetting", "FP32_SETTING", "row_sensitivity", "quantize_rows_by_fraction"]

ALL_INT8_THRESHOLD = 1e30
"""Weight-tile sensitivity threshold meaning "all INT8": far above any sensitivity S (a few units at most: about 1.5
for one 1e4 outlier in a Gaussian tile, ``dste.format.hybrid_rows``)."""


@dataclass(frozen=True)
class LayerSetting:
    fp32: bool = False
    edge_sparsity: float = 0.0
    channel_sparsity: float = 0.0
    weight_sparsity: float = 0.0
    fp16_fraction: float = 0.0

    def __post_init__(self):
        # a truthy string ("no") ran the layer in FP32, and True passed as a fraction ran as 1
        object.__setattr__(self, "fp32", flag(self.fp32, "LayerSetting.fp32"))
        for name in ("edge_sparsity", "channel_sparsity", "weight_sparsity", "fp16_fraction"):
            value = getattr(self, name)
            every_row = name == "fp16_fraction"  # every row in FP16 is a setting; dropping everything is not
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
                if not (0.0 <= value <= 1.0 if every_row else 0.0 <= value < 1.0):
                    raise ValueError(f"LayerSetting.{name} must lie in [0, 1{']' if every_row else ')'}, "
                                     f"got {value!r}")
            # the kind (TypeError for a bool or a string); a NumPy scalar keys caches as the float it equals
            object.__setattr__(self, name, real_number(value, f"LayerSetting.{name}"))
        if self.fp32 and (self.edge_sparsity or self.channel_sparsity or self.weight_sparsity or self.fp16_fraction):
            raise ValueError("LayerSetting(fp32=True) runs the uncompressed layer: leave the other fields at 0")

    @property
    def x_mode(self) -> str:
        """The SpMM's dense operand: FP32 for the uncompressed layer, plain FP16 rows for f = 1 (no INT8 rows,
        so no per-row scales or second gather), INT8 rows + FP16 outliers otherwise."""
        return "fp32" if self.fp32 else "fp16" if self.fp16_fraction == 1.0 else "int8-hybrid"

    @property
    def weight_threshold(self) -> float | None:
        """The weight tiles' sensitivity threshold: all INT8 at f = 0, all FP16 at f = 1, the encoder's
        default rule (None) in between."""
        return ALL_INT8_THRESHOLD if self.fp16_fraction == 0.0 else 0.0 if self.fp16_fraction == 1.0 else None


FP32_SETTING = LayerSetting(fp32=True)


def row_sensitivity(x: np.ndarray) -> np.ndarray:
    """Per-row sensitivity S that ranks a layer's activation rows for FP16 (``quantize_rows_by_fraction``): the rms
    INT8 error over every entry of the row divided by its mean |x| (scale max|x| / 127, round half to even, float32
    values), computed on the 2-D array at once.

    This is the format's earlier score, not ``dste.format.hybrid_rows.row_sensitivity`` (rms over the nonzeros
    divided by their lower median), which replaced it there because the mean grows with an outlier: a row holding
    one entry of 2e4 among N(0, 1) values scores below ordinary rows here and stays INT8, its ordinary entries
    rounding to 0. The controller's fractions, and every table of the main job, were measured with this score; a
    switch to the format's would need them measured again.

    ``x`` is a 2-D array of real, finite numbers (integer or float; taken as float32): a NaN row scored 0, as if
    all zero, and a value past float32's range became Inf.
    """
    x = _activation_rows(x, "row_sensitivity")
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):  # min and max propagate NaN
        raise ValueError("row_sensitivity: x contains NaN or Inf (or values beyond float32's range); every value "
                         "must be finite")
    return _row_sensitivity(x)


def _activation_rows(x, what: str) -> np.ndarray:
    """``x`` as a float32 ``[rows, features]`` array, refusing other kinds and dimensions in words."""
    array = np.asarray(x)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{what}: x must hold real numbers (an integer or float array), got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{what}: x must be a 2-D array [rows, features], got shape {array.shape}")
    return array.astype(np.float32, copy=False)


def _row_sensitivity(x: np.ndarray) -> np.ndarray:
    """:func:`row_sensitivity` of a float32 2-D ``x``, unchecked (NaN rows score 0)."""
    if x.shape[1] == 0:  # rows without values score 0, as all-zero rows do
        return np.zeros(x.shape[0], dtype=np.float64)
    scores = np.empty(x.shape[0], dtype=np.float64)
    for rows in row_blocks(x.shape[0], x.shape[1]):  # a few hundred rows at a time (see row_blocks)
        scores[rows] = _block_sensitivity(x[rows])
    return scores


def _block_sensitivity(x: np.ndarray) -> np.ndarray:
    amax = np.abs(x).max(axis=1, keepdims=True)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    # In place where the formula allows, the same operations in the same order.
    deq = np.divide(x, scale)
    np.rint(deq, out=deq)
    np.clip(deq, -128, 127, out=deq)
    deq *= scale
    magnitude = x.astype(np.float64)
    error = np.subtract(magnitude, deq)
    np.square(error, out=error)
    rms = np.sqrt(np.mean(error, axis=1))
    np.abs(magnitude, out=magnitude)
    mean_abs = np.mean(magnitude, axis=1)
    return np.where(mean_abs > 0, rms / np.where(mean_abs > 0, mean_abs, 1.0), 0.0)


def quantize_rows_by_fraction(x: np.ndarray, fraction: float):
    """``HybridRows`` of ``x`` with the ``fraction`` most sensitive rows in FP16. A non-finite ``x`` is refused by
    the quantizer (``dste.format.quantize_rows``), in its words."""
    if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real):
        real_number(fraction, "fraction")  # True ran as 1 (every row FP16); a string failed in math's words
    if math.isnan(fraction):
        raise ValueError("fraction must be a number in [0, 1], got nan")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [rows, features], got shape {x.shape}")
    if fraction in (0.0, 1.0):
        # No row or every row is FP16 whatever the scores: skip the sensitivity (the costliest step).
        sensitivity = np.zeros(x.shape[0], dtype=np.float64)
    else:
        sensitivity = _row_sensitivity(x)
    return quantize_rows(x, sensitivity=sensitivity, fp16_fraction=fraction)
