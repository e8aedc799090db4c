"""bench/bag_of_words_graph.py: a graph with wide 0/1 word features that ``dste run`` reads as a gnn-benchmark file."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dste.data import load_dataset

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bag_of_words_graph", ROOT / "bench" / "bag_of_words_graph.py")
bag_of_words_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bag_of_words_graph)


def test_the_written_file_loads_with_the_asked_shape_and_word_counts(tmp_path):
    path = tmp_path / "words.npz"
    assert bag_of_words_graph.main([str(path), "--nodes", "900", "--edges", "3000", "--classes", "5",
                                    "--features", "1200", "--words", "12", "--seed", "2"]) == 0
    graph = load_dataset(str(path), seed=0)
    assert graph.x.shape == (900, 1200) and graph.num_classes == 5
    assert graph.adj.nnz == 2 * 3000, "3,000 undirected edges, stored both ways"
    assert set(np.unique(graph.x)) == {0.0, 1.0}
    words = (graph.x != 0).sum(axis=1)
    assert words.min() >= 1 and abs(words.mean() - 12) < 1.0  # Poisson(12) draws, a few collide
    # The class-favoured words make the features informative: each class's mean word vector is closest to its own.
    means = np.stack([graph.x[graph.y == c].mean(axis=0) for c in range(5)])
    assert (np.argmax(graph.x @ means.T, axis=1) == graph.y).mean() > 0.9


@pytest.mark.parametrize("argv, message", [
    (["--features", "100"], "--features must be >= 400"),
    (["--nodes", "50", "--edges", "5000"], "too dense"),
    (["--words", "0"], "--words must be >= 1"),
])
def test_impossible_shapes_are_refused(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        bag_of_words_graph.main([str(tmp_path / "x.npz"), *argv])
