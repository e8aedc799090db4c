"""Per-run simulator state lives on the run's RunContext: nothing passes from one run to the next."""

import numpy as np
import pytest

import dste.nkisim as sim
from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from dste.nkisim import runtime
from dste.nkisim.errors import ConstraintError

SHAPE = (128, 64)


def _rand_kernel():
    out = nl.ndarray(SHAPE, nl.float32, buffer=nl.shared_hbm)
    nl.store(out, nl.rand(SHAPE, nl.float32))
    return out


def _seeded_rand_kernel():
    out = nl.ndarray(SHAPE, nl.float32, buffer=nl.shared_hbm)
    nl.random_seed(nl.full((1, 1), 1234, nl.int32))
    nl.store(out, nl.rand(SHAPE, nl.float32))
    return out


def test_every_run_starts_from_the_default_seed():
    first, _ = sim.run_kernel(_rand_kernel, (), {})
    sim.run_kernel(_seeded_rand_kernel, (), {})
    after_a_reseeding_run, _ = sim.run_kernel(_rand_kernel, (), {})
    np.testing.assert_array_equal(after_a_reseeding_run, first)
    # The documented seed is the same generator NumPy builds from it (float32 uniform draws).
    expected = np.random.default_rng(runtime.DEFAULT_RANDOM_SEED).random(SHAPE, dtype=np.float32)
    np.testing.assert_array_equal(first, expected)


def test_random_seed_reseeds_only_its_own_run():
    seeded, _ = sim.run_kernel(_seeded_rand_kernel, (), {})
    np.testing.assert_array_equal(seeded, np.random.default_rng(1234).random(SHAPE, dtype=np.float32))
    assert not np.array_equal(seeded, sim.run_kernel(_rand_kernel, (), {})[0])


def test_no_reorder_depth_is_per_run_and_unwinds_on_error():
    def raises_inside_no_reorder():
        with nl.no_reorder():
            nl.fori_loop(0, 2, lambda i: None)

    with pytest.raises(ConstraintError, match="no_reorder"):
        sim.run_kernel(raises_inside_no_reorder, (), {})

    calls = []
    sim.run_kernel(lambda: nl.fori_loop(0, 3, calls.append), (), {})
    assert [index.value for index in calls] == [0, 1, 2]  # read-only registers; Python cannot compare them


def test_calls_outside_a_run_leave_no_context_behind():
    assert runtime._stack() == []
    assert nisa.get_nc_version() in (nisa.nc_version.gen2, nisa.nc_version.gen3)
    a = nl.rand(SHAPE, nl.float32).numpy()
    b = nl.rand(SHAPE, nl.float32).numpy()
    assert runtime._stack() == []
    # Each top-level call has a fresh context, so both draws start from the default seed.
    np.testing.assert_array_equal(a, b)
