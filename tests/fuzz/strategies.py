"""Hypothesis strategies of the fuzz suite: small matrices whose values span the ranges users send."""

import os

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st

# The default run draws a quarter of each test's examples (derandomized: the same cases every run), which keeps the
# developer's loop short; CI, and anyone chasing a fuzz failure, sets DSTE_FUZZ=thorough for the full counts.
FUZZ_LEVELS = ("default", "thorough")
FUZZ_LEVEL = os.environ.get("DSTE_FUZZ", "default")
if FUZZ_LEVEL not in FUZZ_LEVELS:
    raise ValueError(f"DSTE_FUZZ={FUZZ_LEVEL!r}; allowed: {', '.join(FUZZ_LEVELS)}")


def examples(full: int) -> int:
    """The number of examples a fuzz test draws: ``full`` when thorough, else a quarter of it (at least 5)."""
    return full if FUZZ_LEVEL == "thorough" else max(5, full // 4)

MAGNITUDES = st.sampled_from([1e-40, 1e-8, 1e-5, 1e-3, 0.1, 1.0, 3.0, 1e3, 6e4, 1e5, 1e12])


@st.composite
def sparse_values(draw, max_n=70, max_m=70):
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, max_m))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]))
    kind = draw(st.sampled_from(["binary", "gaussian", "wide", "outlier", "integer"]))
    rng = np.random.default_rng(seed)
    mask = rng.random((n, m)) < density
    if kind == "binary":
        values = np.ones((n, m))
    elif kind == "gaussian":
        values = rng.standard_normal((n, m)) * draw(MAGNITUDES)
    elif kind == "wide":
        values = rng.standard_normal((n, m)) * 10.0 ** rng.uniform(-6, 6, (n, m))
    elif kind == "outlier":
        values = rng.standard_normal((n, m))
        values.flat[rng.integers(0, n * m)] = draw(MAGNITUDES)
    else:
        values = rng.integers(-5, 6, (n, m)).astype(np.float64)
    return sp.csr_matrix(np.where(mask, values, 0.0))


@st.composite
def features(draw, max_m=60, max_f=40):
    m = draw(st.integers(0, max_m))
    f = draw(st.integers(0, max_f))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, f)) * draw(MAGNITUDES)
    if m and f and draw(st.booleans()):
        x[rng.integers(0, m), rng.integers(0, f)] = draw(MAGNITUDES) * draw(st.sampled_from([1, -1]))
    if draw(st.booleans()):
        x[rng.random((m, f)) < 0.5] = 0.0
    return x.astype(np.float32)
