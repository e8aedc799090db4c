"""dste run's guards before any work: the switches are True or False, counts may be NumPy integers, an --out
directory holding any of an earlier (or interrupted) run's outputs is kept, one that cannot be written to is
refused, and a graph of one class is no classification task."""

import os
import re

import numpy as np
import pytest

from dste.data import make_graph
from dste.data.npz import save_npz
from dste.experiments.pipeline import RUN_OUTPUTS, run
from dste.experiments.run_config import RunConfig, csbm_spec


@pytest.mark.parametrize("switch", ["overwrite", "quick", "fallback", "oracle"])
def test_a_switch_must_be_true_or_false(switch):
    with pytest.raises(TypeError, match=f"{switch} must be True or False, got str 'no'"):
        RunConfig(**{switch: "no"})  # 'no' is truthy: overwrite='no' replaced an earlier run


def test_counts_may_be_numpy_integers_and_the_model_seed_has_a_ceiling():
    config = RunConfig(hidden=np.int64(32), seeds=np.int32(2))
    assert config.hidden == 32 and type(config.hidden) is int and type(config.seeds) is int
    with pytest.raises(ValueError, match=r"--model-seed must be at most 4,294,967,295"):
        RunConfig(model_seed=2**32)  # its teachers' seeds overflowed torch's after the graph had loaded


@pytest.mark.parametrize("earlier", [name for name in RUN_OUTPUTS if name != "results.json"])
def test_an_interrupted_runs_outputs_are_kept(tmp_path, earlier):
    (tmp_path / earlier).write_text("earlier")
    with pytest.raises(ValueError, match=f"already holds a run's {earlier}; give a new directory, or --overwrite"):
        run(RunConfig(out=str(tmp_path), progress=False))
    assert (tmp_path / earlier).read_text() == "earlier"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a directory no file can be written to")
def test_an_out_directory_that_cannot_be_written_is_refused_before_the_job():
    with pytest.raises(ValueError, match="a file cannot be written there"):
        run(RunConfig(out="/proc/self", progress=False))  # the first write came after every seed's run


def test_a_graph_of_one_class_is_refused(tmp_path):
    graph = make_graph("cora-like", seed=0, num_nodes=300, num_edges=600, num_features=20, num_val=40, num_test=60,
                       community_size=(16, 32), num_classes=2)
    graph.y[:] = 0
    graph.num_classes = 1
    bundle = save_npz(graph, tmp_path / "one_class.npz")
    with pytest.raises(ValueError, match="1 class.*node classification needs at least two"):
        run(RunConfig(dataset=str(bundle), out=str(tmp_path / "run"), progress=False))
    assert not (tmp_path / "run").exists()


def test_csbm_specs_name_what_is_wrong_with_them(tmp_path):
    with pytest.raises(ValueError, match="community_size must be MIN-MAX in whole nodes"):
        csbm_spec("csbm:community_size=²-3")  # isdigit took '²', then int() refused it in its own words
    with pytest.raises(ValueError, match="starts with 'csbm:' in lower case"):
        RunConfig(dataset="CSBM:num_nodes=500")
    with pytest.raises(ValueError, match=r"unknown dataset 'no-such-graph'.*or 'csbm:key=value,...'"):
        run(RunConfig(dataset="no-such-graph", out=str(tmp_path / "run"), progress=False))


def test_the_memory_hint_counts_the_snapshots_that_fit_every_worker(monkeypatch):
    """With two workers the hint named the snapshot count that fits one ("--snapshots 13 fits", 13 x 2 did not)."""
    from dste.experiments import env_layers, sizing

    available = 20 << 30
    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: available)
    size = sizing.GraphSize(18_333, 6_805, 163_788)
    line = sizing.memory_check(size, 8, 2)
    one, two = (int(text) for text in
                re.search(r"--snapshots (\d+) fits one worker \(--jobs 1\), (\d+) fit 2", line).groups())
    assert sizing.worker_peak_bytes(size, one) <= available < sizing.worker_peak_bytes(size, one + 1)
    assert 2 * sizing.worker_peak_bytes(size, two) <= available < 2 * sizing.worker_peak_bytes(size, two + 1)
