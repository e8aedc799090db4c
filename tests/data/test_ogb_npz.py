"""OGB folders and .npz bundles round-trip; load_dataset dispatches and refuses unknown names."""

import gzip

import numpy as np
import pytest
import scipy.sparse as sp

from dste.data import load_dataset, load_npz, load_ogb_folder, locate_dataset, make_graph, save_npz


def _write_gz(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("".join(",".join(str(v) for v in row) + "\n" for row in rows))


def write_tiny_ogb(folder, edges=((0, 1), (1, 2), (2, 0), (3, 4), (1, 0), (4, 4))):
    features = np.arange(15, dtype=np.float32).reshape(5, 3) / 4
    labels = [[2], [0], [1], [2], [0]]
    _write_gz(folder / "raw" / "edge.csv.gz", edges)
    _write_gz(folder / "raw" / "node-feat.csv.gz", features.tolist())
    _write_gz(folder / "raw" / "node-label.csv.gz", labels)
    _write_gz(folder / "split" / "time" / "train.csv.gz", [[0], [3]])
    _write_gz(folder / "split" / "time" / "valid.csv.gz", [[1]])
    _write_gz(folder / "split" / "time" / "test.csv.gz", [[2], [4]])
    return features


def test_ogb_folder_loads_symmetrised_without_loops(tmp_path):
    features = write_tiny_ogb(tmp_path / "ogbn_tiny")
    g = load_ogb_folder(tmp_path / "ogbn_tiny")
    np.testing.assert_array_equal(g.x, features)
    np.testing.assert_array_equal(g.y, [2, 0, 1, 2, 0])
    assert g.num_classes == 3
    expected = np.zeros((5, 5))
    for a, b in [(0, 1), (1, 2), (2, 0), (3, 4)]:
        expected[a, b] = expected[b, a] = 1
    np.testing.assert_array_equal(g.adj.toarray(), expected)
    np.testing.assert_array_equal(np.flatnonzero(g.train_mask), [0, 3])
    np.testing.assert_array_equal(np.flatnonzero(g.val_mask), [1])
    np.testing.assert_array_equal(np.flatnonzero(g.test_mask), [2, 4])
    assert load_dataset("ogbn-tiny", root=tmp_path).num_edges == 8


def test_ogb_bad_folders_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="raw/"):
        load_ogb_folder(tmp_path)
    write_tiny_ogb(tmp_path / "a", edges=((0, 9),))
    with pytest.raises(ValueError, match=r"node ids must lie in \[0, 5\)"):
        load_ogb_folder(tmp_path / "a")
    write_tiny_ogb(tmp_path / "b")
    (tmp_path / "b" / "raw" / "node-feat.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="gzip"):
        load_ogb_folder(tmp_path / "b")
    write_tiny_ogb(tmp_path / "c")
    _write_gz(tmp_path / "c" / "raw" / "node-feat.csv.gz", [[1, 2, 3], [4, "x", 6], [1, 1, 1], [0, 0, 0], [2, 2, 2]])
    with pytest.raises(ValueError, match="not a number"):
        load_ogb_folder(tmp_path / "c")
    write_tiny_ogb(tmp_path / "d")
    _write_gz(tmp_path / "d" / "raw" / "node-label.csv.gz", [[0], [1.5], [0], [1], [0]])
    with pytest.raises(ValueError, match="integers"):
        load_ogb_folder(tmp_path / "d")
    write_tiny_ogb(tmp_path / "e")
    (tmp_path / "e" / "split" / "time" / "valid.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="valid.csv.gz"):
        load_ogb_folder(tmp_path / "e")
    write_tiny_ogb(tmp_path / "f")
    _write_gz(tmp_path / "f" / "split" / "time" / "test.csv.gz", [[0]])
    with pytest.raises(ValueError, match="disjoint"):
        load_ogb_folder(tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="no OGB folder"):
        load_dataset("ogbn-arxiv", root=tmp_path / "nowhere")


def test_npz_round_trip_keeps_every_field(tmp_path):
    g = make_graph("cora-like", seed=2)
    path = save_npz(g, tmp_path / "graph.npz")
    h = load_npz(path)
    assert (h.adj != g.adj).nnz == 0 and h.adj.dtype == np.float32
    np.testing.assert_array_equal(h.x, g.x)
    np.testing.assert_array_equal(h.y, g.y)
    for mask in ("train_mask", "val_mask", "test_mask"):
        np.testing.assert_array_equal(getattr(h, mask), getattr(g, mask))
    np.testing.assert_array_equal(h.communities, g.communities)
    assert h.num_classes == g.num_classes and h.name == "cora-like"
    assert load_dataset(str(path)).num_edges == g.num_edges
    assert load_dataset("graph.npz", root=tmp_path).num_nodes == g.num_nodes


def test_npz_bundle_with_a_directed_adjacency_is_symmetrised(tmp_path):
    adj = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float64))
    np.savez(tmp_path / "d.npz", adj_data=adj.data, adj_indices=adj.indices, adj_indptr=adj.indptr,
             adj_shape=np.array(adj.shape), x=np.ones((3, 2)), y=np.array([0, 1, 1]),
             train_mask=np.array([1, 0, 0], bool), val_mask=np.array([0, 1, 0], bool), test_mask=np.array([0, 0, 1], bool))
    g = load_npz(tmp_path / "d.npz")
    assert g.num_edges == 4 and g.num_classes == 2 and g.x.dtype == np.float32


def test_bad_npz_bundles_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", x=np.ones((2, 2)))
    with pytest.raises(ValueError, match="missing keys"):
        load_npz(tmp_path / "partial.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="object arrays"):
        load_npz(tmp_path / "objects.npz")
    g = make_graph("cora-like", seed=0)
    save_npz(g, tmp_path / "ok.npz")
    arrays = dict(np.load(tmp_path / "ok.npz"))
    arrays["adj_indptr"] = arrays["adj_indptr"][:-5]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="inconsistent"):
        load_npz(tmp_path / "broken.npz")


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """The arrays of a saved 600-node graph (read back, so they are what a bundle holds)."""
    path = tmp_path_factory.mktemp("npz") / "ok.npz"
    save_npz(make_graph("cora-like", seed=0, num_nodes=600, num_edges=1200, num_features=16, num_val=100,
                        num_test=150), path)
    with np.load(path) as bundle:
        return {key: bundle[key] for key in bundle.files}


@pytest.mark.parametrize("change, message", [
    (lambda a: a["adj_data"].__setitem__(slice(0, 3), [np.nan, np.inf, -np.inf]), "NaN or Inf"),  # NaN != 0 made edges
    (lambda a: a.__setitem__("adj_shape", np.array([600.9, 600.9])), "adj_shape must hold integers"),
    (lambda a: a.__setitem__("num_classes", np.array(7.9)), "num_classes must hold integers"),
    (lambda a: a.__setitem__("num_classes", np.array([7, 7])), "num_classes must be one integer"),
    (lambda a: a.__setitem__("communities", np.full(600, 1.7)), "communities must hold integers"),
    # whole numbers int64 cannot hold would wrap (2^63 read as -2^63), not be refused by the later range checks
    (lambda a: a.__setitem__("y", np.r_[a["y"][:-1].astype(np.uint64), np.uint64(2**63)]),
     r"y must hold integers within int64's range, got range \[0, 9223372036854775808\]"),
    (lambda a: a.__setitem__("communities", np.full(600, 1e30)), "communities must hold integers within int64's range"),
    # SciPy casts float ids to int: column 1.7 loaded as an edge to node 1
    (lambda a: a.__setitem__("adj_indices", a["adj_indices"] + 0.7), "adj_indices must hold integers, got float64"),
    (lambda a: a.__setitem__("adj_indptr", a["adj_indptr"] + 0.5), "adj_indptr must hold integers, got float64"),
    # str() of a string array named the graph "['a' 'b']"
    (lambda a: a.__setitem__("name", np.array(["a", "b"])), "name must be one string"),
    # loaded, it failed only in make_model, inside torch's allocator, naming no file
    (lambda a: a.__setitem__("num_classes", np.array(2**40)), "num_classes is 1099511627776, more than the bundle"),
])
def test_npz_values_that_would_be_read_wrongly_are_refused(tmp_path, small_bundle, change, message):
    """Values a cast would silently change (a NaN adjacency value read as an edge, 7.9 classes as 7) are refused."""
    arrays = {key: np.array(value) for key, value in small_bundle.items()}
    np.savez(tmp_path / "ok.npz", **arrays)
    assert load_npz(tmp_path / "ok.npz").num_nodes == 600  # the unchanged bundle loads
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(tmp_path / "bad.npz")


def test_npz_ids_written_as_whole_floats_and_a_bytes_name_load_as_written(tmp_path, small_bundle):
    arrays = {key: np.array(value) for key, value in small_bundle.items()}
    expected = load_npz(_saved(tmp_path / "ok.npz", arrays))
    arrays.update(adj_indices=arrays["adj_indices"].astype(np.float64), adj_indptr=arrays["adj_indptr"].astype(np.float64),
                  name=np.array(b"bytes-name"))
    loaded = load_npz(_saved(tmp_path / "floats.npz", arrays))
    assert (loaded.adj != expected.adj).nnz == 0 and loaded.name == "bytes-name"


def _saved(path, arrays):
    np.savez(path, **arrays)
    return path


def test_an_npz_bundle_without_nodes_or_num_classes_says_so(tmp_path):
    empty = dict(adj_data=np.zeros(0, np.float32), adj_indices=np.zeros(0, np.int32), adj_indptr=np.zeros(1, np.int32),
                 adj_shape=np.array([0, 0]), x=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64),
                 train_mask=np.zeros(0, bool), val_mask=np.zeros(0, bool), test_mask=np.zeros(0, bool))
    np.savez(tmp_path / "empty.npz", **empty)
    with pytest.raises(ValueError, match="no nodes"):
        load_npz(tmp_path / "empty.npz")


def test_load_dataset_dispatch_and_errors(tmp_path, monkeypatch):
    assert load_dataset("cora-like", seed=1).num_nodes == 2708
    assert (load_dataset("cora-like", seed=1).adj != make_graph("cora-like", seed=1).adj).nnz == 0
    with pytest.raises(ValueError, match="allowed: presets"):
        load_dataset("reddit")
    monkeypatch.delenv("DSTE_DATA_ROOT", raising=False)
    with pytest.raises(ValueError, match="root"):
        load_dataset("cora")
    with pytest.raises(TypeError, match="non-empty string"):
        load_dataset(None)


@pytest.mark.shared
def test_load_dataset_reads_planetoid_from_the_environment_root(planetoid_root, monkeypatch):
    monkeypatch.setenv("DSTE_DATA_ROOT", str(planetoid_root))
    assert load_dataset("Cora").num_edges == 10556


def test_ogb_rows_of_different_lengths_are_refused_even_when_the_total_fits(tmp_path):
    # a short row followed by a long one held the right number of values, so values shifted into the next node
    write_tiny_ogb(tmp_path / "t")
    _write_gz(tmp_path / "t" / "raw" / "node-feat.csv.gz", [[1, 2, 3], [4, 5], [6, 7, 8, 9], [1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="ragged or malformed rows .* line 2 has 2"):
        load_ogb_folder(tmp_path / "t")


def test_a_root_that_is_another_ogb_datasets_folder_is_not_loaded_under_the_name_asked_for(tmp_path):
    # root = ogbn_tiny itself: asking for ogbn-arxiv loaded ogbn_tiny's graph, named "ogbn-arxiv"
    write_tiny_ogb(tmp_path / "ogbn_tiny")
    with pytest.raises(FileNotFoundError, match="is itself the folder of 'ogbn_tiny'"):
        load_dataset("ogbn-arxiv", root=tmp_path / "ogbn_tiny")
    assert load_dataset("ogbn-tiny", root=tmp_path / "ogbn_tiny").num_nodes == 5
    write_tiny_ogb(tmp_path / "my-copy")  # a folder named otherwise is still taken as the dataset asked for
    assert load_dataset("ogbn-arxiv", root=tmp_path / "my-copy").name == "ogbn-arxiv"


def test_refusals_name_the_file_and_the_first_offending_value(tmp_path, small_bundle):
    """"labels must hold integers, got float64 values such as 0.0" showed the first label, not the 1.5 at node 4; a NaN
    feature was reported as "x contains NaN or Inf", naming neither the file nor where."""
    from dste.data import load_dataset

    from dste.data.npz import whole_numbers

    labels = np.zeros(10)
    labels[4] = 1.5
    with pytest.raises(ValueError, match=r"f.npz: labels must hold integers, .* such as 1.5 \(entry 4, 1 such\)"):
        whole_numbers("f.npz", "labels", labels)
    arrays = {key: np.array(value) for key, value in small_bundle.items()}
    features = arrays["x"].copy()
    features[7, 3] = np.nan
    path = _saved(tmp_path / "nan_features.npz", {**arrays, "x": features})
    with pytest.raises(ValueError, match=r"nan_features.npz: node features \(x\) hold 1 NaN or Inf values, the first "
                                         r"nan at node 7, feature 3"):
        load_dataset(str(path))


def test_a_relative_npz_path_found_under_the_root_and_here_is_refused_as_ambiguous(tmp_path, monkeypatch):
    from dste.data import load_dataset, make_graph, save_npz

    small = dict(num_nodes=600, num_edges=1200, num_val=100, num_test=150)
    root, here = tmp_path / "root", tmp_path / "here"
    (root / "d").mkdir(parents=True)
    (here / "d").mkdir(parents=True)
    save_npz(make_graph("cora-like", seed=0, num_features=8, **small), root / "d" / "g.npz")
    monkeypatch.chdir(here)
    assert load_dataset("d/g.npz", root=root).x.shape[1] == 8  # only under the root: read from there
    save_npz(make_graph("cora-like", seed=0, num_features=16, **small), here / "d" / "g.npz")
    for given_root, env in ((root, None), (None, str(root))):
        if env is None:
            monkeypatch.delenv("DSTE_DATA_ROOT", raising=False)
        else:
            monkeypatch.setenv("DSTE_DATA_ROOT", env)
        with pytest.raises(ValueError, match="names two files"):
            load_dataset("d/g.npz", root=given_root)
    monkeypatch.delenv("DSTE_DATA_ROOT", raising=False)
    assert load_dataset("d/g.npz").x.shape[1] == 16  # no root: the working directory's


def test_an_ogb_label_file_with_more_rows_than_nodes_is_refused_by_name(tmp_path):
    # load_ogb_folder refuses a node-label.csv.gz whose row count is not the node count (here 7 labels for 5 nodes)
    # with a ValueError naming the file.
    write_tiny_ogb(tmp_path / "ogbn_tiny")
    _write_gz(tmp_path / "ogbn_tiny" / "raw" / "node-label.csv.gz", [[2], [0], [1], [2], [0], [1], [1]])
    with pytest.raises(ValueError, match=r"node-label\.csv\.gz: 7 labels for 5 nodes"):
        load_ogb_folder(tmp_path / "ogbn_tiny")


def test_an_ogb_class_id_past_the_node_count_is_refused_by_name(tmp_path):
    """A class id of 10^12 sized num_classes by it: the loader tried to allocate terabytes."""
    write_tiny_ogb(tmp_path / "ogbn_tiny")
    _write_gz(tmp_path / "ogbn_tiny" / "raw" / "node-label.csv.gz", [[2], [0], [1], [10**12], [0]])
    with pytest.raises(ValueError, match=r"node-label\.csv\.gz: class id 1000000000000 for 5 nodes"):
        load_ogb_folder(tmp_path / "ogbn_tiny")


def test_ogb_split_errors_name_the_split_files(tmp_path):
    write_tiny_ogb(tmp_path / "range")
    _write_gz(tmp_path / "range" / "split" / "time" / "valid.csv.gz", [[7]])
    with pytest.raises(ValueError, match=r"valid\.csv\.gz: split indices must lie in \[0, 5\), got \[7, 7\]"):
        load_ogb_folder(tmp_path / "range")
    write_tiny_ogb(tmp_path / "overlap")
    _write_gz(tmp_path / "overlap" / "split" / "time" / "test.csv.gz", [[2], [3]])
    with pytest.raises(ValueError, match=r"train\.csv\.gz and .*test\.csv\.gz both list node 3 \(1 nodes in all\)"):
        load_ogb_folder(tmp_path / "overlap")


def test_locate_dataset_finds_what_load_dataset_reads_without_reading_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DSTE_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert locate_dataset("cora-like") is None
    write_tiny_ogb(tmp_path / "ogbn_tiny")
    assert locate_dataset("ogbn-tiny", root=tmp_path) == tmp_path / "ogbn_tiny"
    assert load_dataset("ogbn-tiny", root=tmp_path).meta["folder"] == str(tmp_path / "ogbn_tiny")
    (tmp_path / "data").mkdir()
    save_npz(make_graph("cora-like", seed=0), tmp_path / "data" / "g.npz")
    assert locate_dataset("g.npz", root=tmp_path / "data") == tmp_path / "data" / "g.npz"
    with pytest.raises(FileNotFoundError, match=r"no \.npz file at g\.npz \(a relative path is looked up under"):
        locate_dataset("g.npz")  # not in the working directory, no data root
    with pytest.raises(FileNotFoundError, match=r"no \.npz file at .*missing\.npz$"):
        locate_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match=r"'cora' is read from disk: give its data root \(root=\.\.\., --root DIR"):
        locate_dataset("cora")
    with pytest.raises(FileNotFoundError, match=r"Planetoid files \['ind\.cora\.x'.* not all found"):
        locate_dataset("cora", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no OGB folder for 'ogbn-arxiv'"):
        locate_dataset("ogbn-arxiv", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'no-such-graph'; allowed: presets"):
        locate_dataset("no-such-graph")
    with pytest.raises(TypeError, match="dataset name must be a non-empty string"):
        locate_dataset("")


def test_save_npz_keeps_the_previous_bundle_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "graph.npz"
    graph = load_npz(save_npz(make_graph("cora-like", seed=0, num_nodes=300, num_edges=600, num_features=20,
                                         num_val=40, num_test=60, community_size=(16, 32)), path))
    before = path.read_bytes()

    def disk_full(handle, **arrays):
        handle.write(b"PK\x03\x04 half a bundle")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_npz(graph, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["graph.npz"]


@pytest.mark.parametrize("name", [None, {"a": 1}, 7])
def test_save_npz_refuses_a_name_load_npz_could_not_read(tmp_path, name):
    import dataclasses

    graph = make_graph("cora-like", seed=0, num_nodes=300, num_edges=600, num_features=20, num_val=40, num_test=60,
                       community_size=(16, 32))
    with pytest.raises(TypeError, match="graph.name must be a string"):
        save_npz(dataclasses.replace(graph, name=name), tmp_path / "g.npz")
    assert not (tmp_path / "g.npz").exists()


def test_a_corrupted_array_header_is_reported_as_corruption_not_as_pickle(tmp_path, small_bundle):
    np.savez(tmp_path / "bad.npz", **{key: np.array(value) for key, value in small_bundle.items()})
    raw = (tmp_path / "bad.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(raw.replace(b"'fortran_order'", b"'fortran_oxder'", 1))
    with pytest.raises(ValueError, match="the header or data of .* is corrupted") as refused:
        load_npz(tmp_path / "bad.npz")
    assert "object arrays" not in str(refused.value)


def test_ogb_values_past_what_the_parse_holds_are_named(tmp_path):
    write_tiny_ogb(tmp_path / "id")
    _write_gz(tmp_path / "id" / "raw" / "node-label.csv.gz", [[9223372036854775807], [0], [1], [2], [0]])
    # read through float64 it wrapped to a "negative class id -9223372036854775808"
    with pytest.raises(ValueError, match=r"node-label.csv.gz: integer 9223372036854775808 is beyond 2\^53"):
        load_ogb_folder(tmp_path / "id")
    write_tiny_ogb(tmp_path / "feature")
    _write_gz(tmp_path / "feature" / "raw" / "node-feat.csv.gz", [[1e39, 1, 1]] + [[1, 1, 1]] * 4)
    # a finite value past float32 was reported as "features contain NaN or Inf"
    with pytest.raises(ValueError, match=r"node-feat.csv.gz: value 1e\+39 is beyond float32's range"):
        load_ogb_folder(tmp_path / "feature")
