"""bench/odd_graphs.py: four small graphs stored as raw files hold them (one-way edges, loops, duplicates), which
``dste run`` reads as gnn-benchmark files."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dste.data import load_dataset

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("odd_graphs", ROOT / "bench" / "odd_graphs.py")
odd_graphs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(odd_graphs)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("odd")
    assert odd_graphs.main([str(out)]) == 0
    return out


def test_the_raw_files_hold_one_way_edges_loops_and_duplicates(written):
    with np.load(written / "directed.npz") as raw:
        rows = np.repeat(np.arange(odd_graphs.NODES), np.diff(raw["adj_indptr"]))
        pairs = set(zip(rows.tolist(), raw["adj_indices"].tolist()))
        assert any(r == c for r, c in pairs), "self loops"
        assert len(pairs) < rows.size, "duplicate entries"
        assert sum((c, r) not in pairs for r, c in pairs) > len(pairs) // 2, "most edges stored one way"


@pytest.mark.parametrize("name, classes, features, isolated_at_least", [
    ("directed", 7, 500, 0), ("isolated", 7, 500, 0.3 * 1500), ("forty_classes", 40, 1000, 0), ("shuffled", 7, 100, 0)])
def test_each_graph_loads_as_described(written, name, classes, features, isolated_at_least):
    graph = load_dataset(str(written / f"{name}.npz"), seed=0)
    assert graph.num_nodes == 1500 and graph.num_classes == classes and graph.num_features == features
    assert graph.summary()["isolated_nodes"] >= isolated_at_least
    assert graph.edge_homophily() > 0.7  # 80 % of the drawn edges stay inside a class


def test_shuffled_ids_break_the_class_order(written):
    labels = load_dataset(str(written / "shuffled.npz"), seed=0).y
    assert (np.diff(labels) != 0).sum() > 1000  # sorted labels change class 6 times
    assert (np.diff(load_dataset(str(written / "directed.npz"), seed=0).y) != 0).sum() == 6


def test_forty_classes_has_classes_smaller_than_a_planetoid_split_asks(written):
    counts = np.bincount(load_dataset(str(written / "forty_classes.npz"), seed=0).y)
    assert counts.size == 40 and counts.min() == 3


def test_an_unknown_name_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        odd_graphs.main([str(tmp_path), "nope"])
    assert exit_info.value.code == 2 and "allowed: directed" in capsys.readouterr().err
