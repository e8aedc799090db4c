"""The gnn-benchmark `.npz` layout (Amazon, Coauthor, CitationFull files): read as written, split Planetoid-style,
bad files refused with the reason."""

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data import load_dataset, load_npz, load_planetoid
from dste.data.gnn_benchmark import NUM_TEST, NUM_VAL, TRAIN_PER_CLASS


def _file_arrays(adj, x, labels, dense_features=False, one_hot_labels=False):
    """The arrays of a gnn-benchmark file, with the extra keys the real files carry (a pickled name map among them)."""
    adj = sp.csr_matrix(adj)
    arrays = dict(adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr, adj_shape=np.array(adj.shape),
                  idx_to_node=np.array([{"paper": 0}], dtype=object),
                  class_names=np.array(["a", "b"], dtype=object))
    if dense_features:
        arrays["attr_matrix"] = np.asarray(x, dtype=np.float32)
    else:
        attr = sp.csr_matrix(x)
        arrays.update(attr_data=attr.data, attr_indices=attr.indices, attr_indptr=attr.indptr,
                      attr_shape=np.array(attr.shape))
    if one_hot_labels:
        one_hot = sp.csr_matrix((np.ones(labels.size), (np.arange(labels.size), labels)))
        arrays.update(labels_data=one_hot.data, labels_indices=one_hot.indices, labels_indptr=one_hot.indptr,
                      labels_shape=np.array(one_hot.shape))
    else:
        arrays["labels"] = labels
    return arrays


def _write(path, **arrays):
    np.savez(path, **arrays)  # object arrays are pickled on save, as the real files' name maps are
    return path


@pytest.fixture(scope="module")
def graph_parts():
    rng = np.random.default_rng(7)
    n, f, classes = 3000, 120, 6
    rows, cols = rng.integers(0, n, 9000), rng.integers(0, n, 9000)
    weights = rng.uniform(0.5, 3.0, rows.size)  # directed, weighted, with a few self loops: as some files are
    adj = sp.coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    x = sp.random(n, f, density=0.05, random_state=3, format="csr")
    x.data = np.round(x.data * 4) + 1  # word counts
    labels = rng.integers(0, classes, n)
    return adj, x, labels


def test_a_file_loads_as_written(tmp_path, graph_parts):
    adj, x, labels = graph_parts
    g = load_npz(_write(tmp_path / "amazon_like.npz", **_file_arrays(adj, x, labels)))
    symmetric = ((adj + adj.T) != 0).astype(np.float32).tolil()
    symmetric.setdiag(0)
    expected = sp.csr_matrix(symmetric)
    expected.eliminate_zeros()
    assert (g.adj != expected).nnz == 0 and set(np.unique(g.adj.data)) == {1.0}
    np.testing.assert_array_equal(g.x, x.toarray().astype(np.float32))  # counts kept, not binarised
    np.testing.assert_array_equal(g.y, labels)
    assert g.num_classes == 6 and g.name == "amazon_like"
    assert g.meta["source"] == "gnn-benchmark npz"


def test_the_split_is_planetoids_and_seeded(tmp_path, graph_parts):
    adj, x, labels = graph_parts
    path = _write(tmp_path / "g.npz", **_file_arrays(adj, x, labels))
    g = load_dataset(str(path), seed=0)
    np.testing.assert_array_equal(np.bincount(g.y[g.train_mask], minlength=6), np.full(6, TRAIN_PER_CLASS))
    assert (g.val_mask.sum(), g.test_mask.sum()) == (NUM_VAL, NUM_TEST)
    assert not (g.train_mask & g.val_mask).any() and not (g.val_mask & g.test_mask).any()
    assert not (g.train_mask & g.test_mask).any()
    again, other = load_dataset(str(path), seed=0), load_dataset(str(path), seed=1)
    np.testing.assert_array_equal(again.test_mask, g.test_mask)
    assert (other.test_mask != g.test_mask).any()


def test_dense_features_and_one_hot_labels_read_the_same(tmp_path, graph_parts):
    adj, x, labels = graph_parts
    plain = load_npz(_write(tmp_path / "a.npz", **_file_arrays(adj, x, labels)))
    other = load_npz(_write(tmp_path / "b.npz", **_file_arrays(adj, x.toarray(), labels, dense_features=True,
                                                               one_hot_labels=True)))
    np.testing.assert_array_equal(other.x, plain.x)
    np.testing.assert_array_equal(other.y, plain.y)
    np.testing.assert_array_equal(other.train_mask, plain.train_mask)


def test_unused_class_ids_are_dropped_and_kept_in_meta(tmp_path, graph_parts):
    adj, x, labels = graph_parts
    g = load_npz(_write(tmp_path / "gaps.npz", **_file_arrays(adj, x, labels * 3 + 2)))  # ids 2, 5, ..., 17
    assert g.num_classes == 6 and g.meta["class_ids"] == [2, 5, 8, 11, 14, 17]
    np.testing.assert_array_equal(g.y, labels)


def test_a_small_graph_and_small_classes_still_split(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    labels = np.concatenate([np.zeros(370, dtype=np.int64), np.ones(25, dtype=np.int64), np.full(5, 2)])
    adj = sp.random(n, n, density=0.02, random_state=4, format="csr")
    g = load_npz(_write(tmp_path / "small.npz", **_file_arrays(adj, rng.random((n, 8)), labels, dense_features=True)))
    np.testing.assert_array_equal(np.bincount(g.y[g.train_mask]), [20, 12, 2])  # at most half of a small class
    left = n - 34
    assert g.val_mask.sum() + g.test_mask.sum() == int(np.floor(left * 1500 / 2568))
    assert g.test_mask.sum() == pytest.approx(2 * g.val_mask.sum(), abs=1)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(labels=np.where(np.arange(a["labels"].size) == 5, -1, a["labels"])), "unlabelled"),
    (lambda a: a.update(labels=a["labels"][:-1]), "labels"),
    (lambda a: a.update(labels=np.stack([a["labels"], a["labels"]], axis=1)), "multi-label"),
    (lambda a: a.update(labels=a["labels"] + 0.5), "integers"),
    (lambda a: a.update(attr_indptr=a["attr_indptr"][:-3]), "feature CSR arrays are inconsistent"),
    (lambda a: a.update(adj_indices=a["adj_indices"] + 10_000), "adjacency CSR arrays are inconsistent"),
    (lambda a: a.update(attr_data=np.where(np.arange(a["attr_data"].size) == 0, np.nan, a["attr_data"])), "finite"),
    (lambda a: a.update(labels=np.array([{"x": 1}] * a["labels"].size, dtype=object)), "object arrays"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, graph_parts, change, message):
    adj, x, labels = graph_parts
    arrays = _file_arrays(adj, x, labels)
    change(arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(_write(tmp_path / "bad.npz", **arrays))


def test_multi_label_csr_labels_are_refused(tmp_path, graph_parts):
    adj, x, labels = graph_parts
    arrays = _file_arrays(adj, x, labels, one_hot_labels=True)
    one_hot = sp.csr_matrix((arrays["labels_data"], arrays["labels_indices"], arrays["labels_indptr"]),
                            shape=arrays["labels_shape"]).tolil()
    one_hot[3, (labels[3] + 1) % 6] = 1
    one_hot = one_hot.tocsr()
    arrays.update(labels_data=one_hot.data, labels_indices=one_hot.indices, labels_indptr=one_hot.indptr)
    with pytest.raises(ValueError, match="node 3 2 classes"):
        load_npz(_write(tmp_path / "multi.npz", **arrays))


def test_a_file_of_neither_layout_names_both(tmp_path):
    with pytest.raises(ValueError, match="gnn-benchmark file"):
        load_npz(_write(tmp_path / "half.npz", adj_data=np.ones(1), adj_indices=np.zeros(1),
                        adj_indptr=np.array([0, 1]), adj_shape=np.array([1, 1]), labels=np.zeros(1)))


@pytest.mark.shared
def test_cora_written_in_the_layout_reads_back_as_the_planetoid_loader_reads_it(tmp_path, planetoid_root):
    cora = load_planetoid("cora", planetoid_root)
    directed = sp.triu(cora.adj, k=1).tocsr()  # one direction of each edge, as a citation list gives it
    g = load_npz(_write(tmp_path / "cora_full_like.npz", **_file_arrays(directed, cora.x, cora.y)))
    assert (g.adj != cora.adj).nnz == 0
    np.testing.assert_array_equal(g.x, cora.x)
    np.testing.assert_array_equal(g.y, cora.y)
    assert g.edge_homophily() == pytest.approx(0.81, abs=0.005)
