"""Run a kernel body written inline in a test: ``run(body)`` calls ``body(out)`` inside a simulated launch and returns
the dict it filled; ``tile`` and ``empty`` make the on-chip tensors such a body starts from."""

import numpy as np

import dste.nkisim as sim
from dste.nkisim import language as nl


def run(body, target="trn2"):
    out = {}
    sim.run_kernel(lambda: body(out), (), {}, target=target)
    return out


def tile(values, dtype=nl.float32, buffer=nl.sbuf):
    values = np.asarray(values)
    t = nl.ndarray(values.shape, dtype, buffer=buffer)
    t.array()[...] = values.astype(t.dtype)
    return t


def empty(shape, dtype=nl.float32, buffer=nl.sbuf):
    return nl.ndarray(shape, dtype, buffer=buffer)
