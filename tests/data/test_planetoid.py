"""Planetoid loader: the real Cora files, a tiny CiteSeer-style fixture, and refused pickles."""

import os
import pickle
from collections import defaultdict

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data import UnsafePickleError, load_dataset, load_planetoid
from dste.data.safe_pickle import safe_load


@pytest.mark.shared
def test_cora_matches_the_published_statistics(planetoid_root):
    g = load_planetoid("cora", planetoid_root)
    assert g.num_nodes == 2708
    assert g.num_edges == 10556  # directed count after symmetrising, loops and duplicates removed
    assert g.num_features == 1433 and g.num_classes == 7
    assert (g.train_mask.sum(), g.val_mask.sum(), g.test_mask.sum()) == (140, 500, 1000)
    np.testing.assert_array_equal(np.bincount(g.y[g.train_mask]), np.full(7, 20))
    np.testing.assert_array_equal(np.flatnonzero(g.val_mask), np.arange(140, 640))
    assert np.flatnonzero(g.test_mask).min() == 1708
    assert set(np.unique(g.x)) <= {0.0, 1.0}  # Cora features are binary bag-of-words
    # Cora's published edge homophily is 0.81.
    assert g.edge_homophily() == pytest.approx(0.81, abs=0.005)


@pytest.mark.shared
def test_cora_test_rows_are_reordered_by_the_index_file(planetoid_root):
    g = load_planetoid("cora", planetoid_root, normalize_features=True)
    test_index = np.loadtxt(planetoid_root / "ind.cora.test.index", dtype=np.int64)
    with open(planetoid_root / "ind.cora.ty", "rb") as handle:
        ty = safe_load(handle.read())
    # Row i of ty belongs to node test_index[i].
    np.testing.assert_array_equal(g.y[test_index], ty.argmax(1))
    row_sums = g.x.sum(1)
    np.testing.assert_allclose(row_sums[row_sums > 0], 1.0, rtol=1e-5)


def _dump(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_tiny_planetoid(folder, name="citeseer"):
    """8 nodes, 2 classes: train 0-1, allx 0-3, test ids 4, 7, 6 listed (5 is missing, as in CiteSeer)."""
    features = np.eye(8, 3, dtype=np.float32) + 0.5
    labels = np.eye(2, dtype=np.int32)[[0, 1, 0, 1, 0, 1, 1, 0]]
    test_listed = np.array([4, 7, 6])
    _dump(folder / f"ind.{name}.x", sp.csr_matrix(features[:2]))
    _dump(folder / f"ind.{name}.y", labels[:2])
    _dump(folder / f"ind.{name}.allx", sp.csr_matrix(features[:4]))
    _dump(folder / f"ind.{name}.ally", labels[:4])
    _dump(folder / f"ind.{name}.tx", sp.csr_matrix(features[test_listed]))
    _dump(folder / f"ind.{name}.ty", labels[test_listed])
    graph = defaultdict(list, {0: [1, 1, 0], 1: [2], 2: [3], 4: [6], 7: [6, 3]})
    _dump(folder / f"ind.{name}.graph", graph)
    (folder / f"ind.{name}.test.index").write_text("\n".join(map(str, test_listed)) + "\n")
    return features, labels


def test_tiny_citeseer_style_files_are_padded_and_reordered(tmp_path):
    features, labels = write_tiny_planetoid(tmp_path)
    g = load_planetoid("citeseer", tmp_path)
    assert g.num_nodes == 8
    present = [0, 1, 2, 3, 4, 6, 7]
    np.testing.assert_array_equal(g.x[present], features[present])
    np.testing.assert_array_equal(g.y[present], labels[present].argmax(1))
    np.testing.assert_array_equal(g.x[5], 0.0)  # the missing test id is a padded zero row
    np.testing.assert_array_equal(np.flatnonzero(g.train_mask), [0, 1])
    np.testing.assert_array_equal(np.flatnonzero(g.val_mask), [2, 3])
    np.testing.assert_array_equal(np.flatnonzero(g.test_mask), [4, 6, 7])
    expected_edges = {(0, 1), (1, 2), (2, 3), (4, 6), (6, 7), (3, 7)}
    src, dst = g.edge_index()
    assert {(min(a, b), max(a, b)) for a, b in zip(src, dst)} == expected_edges
    assert g.num_edges == 2 * len(expected_edges)


def test_test_rows_listed_in_a_cycle_take_their_own_features_and_labels(tmp_path):
    # the index file lists node ids in the order of tx/ty's rows; listed as a 3-cycle (5, 6, 4) the reorder is not
    # its own inverse, so applying it backwards would give each test node another node's features
    features = np.arange(7 * 3, dtype=np.float32).reshape(7, 3) + 1.0
    labels = np.eye(3, dtype=np.int32)[[0, 1, 2, 0, 1, 2, 0]]
    test_listed = np.array([5, 6, 4])
    _dump(tmp_path / "ind.cora.x", sp.csr_matrix(features[:2]))
    _dump(tmp_path / "ind.cora.y", labels[:2])
    _dump(tmp_path / "ind.cora.allx", sp.csr_matrix(features[:4]))
    _dump(tmp_path / "ind.cora.ally", labels[:4])
    _dump(tmp_path / "ind.cora.tx", sp.csr_matrix(features[test_listed]))
    _dump(tmp_path / "ind.cora.ty", labels[test_listed])
    _dump(tmp_path / "ind.cora.graph", defaultdict(list, {0: [1], 2: [3], 4: [5, 6]}))
    (tmp_path / "ind.cora.test.index").write_text("\n".join(map(str, test_listed)) + "\n")
    g = load_planetoid("cora", tmp_path, normalize_features=False)
    np.testing.assert_array_equal(g.x, features)
    np.testing.assert_array_equal(g.y, labels.argmax(1))


def test_pyg_style_raw_folder_is_found(tmp_path):
    raw = tmp_path / "CiteSeer" / "raw"
    raw.mkdir(parents=True)
    write_tiny_planetoid(raw)
    assert load_dataset("citeseer", root=tmp_path).num_nodes == 8


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "was_run"
    payload = pickle.dumps(RunsAShellCommand(marker), protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing to load global .*system"):
        safe_load(payload)
    assert not marker.exists()


def test_a_planetoid_file_replaced_by_a_malicious_pickle_is_refused(tmp_path):
    write_tiny_planetoid(tmp_path, name="cora")
    marker = tmp_path / "was_run"
    _dump(tmp_path / "ind.cora.graph", {0: RunsAShellCommand(marker)})
    with pytest.raises(UnsafePickleError, match="ind.cora.graph"):
        load_planetoid("cora", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(np.ma.masked_array([1, 2]), protocol=2),  # ndarray subclass via an unlisted global
        pickle.dumps({"f": eval}, protocol=2),
        pickle.dumps(sp.coo_matrix(np.eye(2)), protocol=2),
    ],
)
def test_globals_outside_the_allow_list_are_refused(payload):
    with pytest.raises(UnsafePickleError, match="only these are allowed"):
        safe_load(payload)


def test_corrupt_and_missing_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not all found"):
        load_planetoid("cora", tmp_path)
    write_tiny_planetoid(tmp_path, name="cora")
    (tmp_path / "ind.cora.tx").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_planetoid("cora", tmp_path)
    write_tiny_planetoid(tmp_path, name="cora")
    (tmp_path / "ind.cora.test.index").write_text("4\nseven\n6\n")
    with pytest.raises(ValueError, match="integer"):
        load_planetoid("cora", tmp_path)
    write_tiny_planetoid(tmp_path, name="cora")
    _dump(tmp_path / "ind.cora.ty", np.eye(3, dtype=np.int32))
    with pytest.raises(ValueError, match="label columns"):
        load_planetoid("cora", tmp_path)
    with pytest.raises(FileNotFoundError, match="ind.reddit.x"):  # a name of one's own: its files are looked for
        load_planetoid("reddit", tmp_path)
    with pytest.raises(ValueError, match="letters, digits"):
        load_planetoid("../cora", tmp_path)


def test_codecs_encode_is_limited_to_latin1():
    import codecs

    class Rot13Bytes:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    with pytest.raises(UnsafePickleError, match="latin1"):
        safe_load(pickle.dumps(Rot13Bytes(), protocol=2))
