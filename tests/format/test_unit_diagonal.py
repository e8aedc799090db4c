"""A matrix whose diagonal is implicit (``EncodePolicy.unit_diagonal`` / ``DSTEMatrix.unit_diagonal``): what it
decodes to, what it counts and stores, how it is saved, and the inputs it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import dste
from dste.format import DSTEFileError, DSTEFormatError, encode, gcn_normalized, gcn_update, load, save
from dste.format.encoder import take_tiles
from tests.format.graphs import gcn_reference, uniform_graph
from tests.format.test_io_safety import _rewrite


@pytest.fixture(scope="module")
def graph():
    return uniform_graph(2000, 1.0)


@pytest.fixture(scope="module")
def pair(graph):
    """The same graph encoded with its diagonal stored and with it implicit, in one order."""
    stored = gcn_normalized(graph)
    implicit = gcn_normalized(graph, row_perm=stored.row_perm, col_perm=stored.col_perm, unit_diagonal=True)
    return stored, implicit


def test_it_decodes_to_gcn_normalization_and_counts_the_diagonal(graph, pair):
    stored, implicit = pair
    assert implicit.unit_diagonal and not stored.unit_diagonal
    reference = gcn_reference(graph)
    # the scales are float32 D^-1/2: each value within two float32 roundings of the float64 one
    assert abs(implicit.decode() - reference).max() <= 4 * 2.0**-24 * abs(reference).max()
    assert (implicit.decode() != stored.decode()).nnz == 0
    assert implicit.nnz_stored == implicit.nnz_kept == stored.nnz_stored == reference.nnz
    assert implicit.stats()["nnz_in_unit_diagonal"] == 2000
    assert implicit.stats()["nnz_stored"] == reference.nnz
    # no tile holds a diagonal entry, and the tiles hold every other one
    tiles_only = implicit.replace(unit_diagonal=False)
    assert tiles_only.nnz_stored == reference.nnz - 2000
    assert tiles_only.decode().diagonal().max() == 0


def test_it_stores_fewer_bytes_per_entry(pair):
    stored, implicit = pair
    per_entry = [m.nbytes()["bytes_per_stored_edge"] for m in pair]
    assert per_entry[1] < per_entry[0] - 1.0, per_entry  # at mean degree 1, half the entries are the diagonal


def test_dste_spmm_multiplies_by_the_diagonal_too(graph, pair):
    _, implicit = pair
    X = torch.from_numpy(np.random.default_rng(1).standard_normal((2000, 12)).astype(np.float32))
    Y = dste.spmm(implicit, X)
    expected = gcn_reference(graph) @ X.numpy().astype(np.float64)
    np.testing.assert_allclose(Y.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_writes_version_3(tmp_path, pair):
    stored, implicit = pair
    save(implicit, tmp_path / "u.npz")
    save(stored, tmp_path / "s.npz")
    loaded = load(tmp_path / "u.npz")
    assert loaded.unit_diagonal and (loaded.decode() != implicit.decode()).nnz == 0
    assert not load(tmp_path / "s.npz").unit_diagonal

    def version(path):
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(bytes(archive["__meta__"]).decode())["format_version"]

    assert (version(tmp_path / "u.npz"), version(tmp_path / "s.npz")) == (3, 2)  # older builds read the second


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=2), "cannot hold unit_diagonal"),  # an older build's version: refused
    (lambda m: m.pop("unit_diagonal"), "must hold"),  # version 3 without the flag would lose the diagonal
    (lambda m: m.update(unit_diagonal=1), "must hold"),
])
def test_a_header_that_misstates_the_diagonal_is_refused(tmp_path, pair, edit, message):
    save(pair[1], tmp_path / "u.npz")
    with pytest.raises(DSTEFileError, match=message):
        load(_rewrite(tmp_path / "u.npz", tmp_path / "bad.npz", edit))


def test_a_flag_dropped_without_resealing_fails_the_header_checksum(tmp_path, pair):
    save(pair[1], tmp_path / "u.npz")
    with pytest.raises(DSTEFileError, match="header checksum"):
        load(_rewrite(tmp_path / "u.npz", tmp_path / "bad.npz", lambda m: m.update(unit_diagonal=False),
                      reseal=False))


def test_the_encoder_refuses_what_a_unit_diagonal_cannot_hold(graph):
    with pytest.raises(DSTEFormatError, match="every diagonal entry stored: 2000 of 2000"):
        gcn_normalized(graph, add_self_loops=False, unit_diagonal=True)
    weighted = (graph + 2.0 * sp.identity(2000, format="csr", dtype=np.float32)).tocsr()
    with pytest.raises(DSTEFormatError, match="store the value 1"):
        encode(weighted, unit_diagonal=True)
    with pytest.raises(DSTEFormatError, match="square"):
        encode(sp.identity(4, format="csr", dtype=np.float32)[:, :3], unit_diagonal=True)
    with pytest.raises(DSTEFormatError, match="layout='condensed'"):
        encode(sp.identity(4, format="csr", dtype=np.float32), layout="block", unit_diagonal=True)
    with pytest.raises(DSTEFormatError, match="True or False"):
        encode(sp.identity(4, format="csr", dtype=np.float32), unit_diagonal="yes")


def test_a_tile_storing_the_diagonal_under_the_flag_fails_deep_validation(pair):
    stored, _ = pair
    with pytest.raises(DSTEFormatError, match="unit diagonal"):
        stored.replace(unit_diagonal=True).validate(deep=True)


def test_a_mask_may_not_drop_the_diagonal_and_keeps_it_otherwise(graph, pair):
    _, implicit = pair
    off_diagonal = graph.copy()  # every edge, no diagonal
    with pytest.raises(DSTEFormatError, match="unit diagonal, which is always kept"):
        implicit.with_mask(off_diagonal)
    keep = (off_diagonal + sp.identity(2000, format="csr", dtype=np.float32)).tocsr()
    keep = keep.tolil()
    dropped = (int(graph.nonzero()[0][0]), int(graph.nonzero()[1][0]))
    keep[dropped] = 0
    masked = implicit.with_mask(keep.tocsr())
    assert masked.nnz_kept == implicit.nnz_kept - 1
    assert masked.decode()[dropped] == 0 and masked.decode().diagonal().min() > 0
    # tile bits leave the diagonal alone
    nothing = implicit.with_mask((np.zeros_like(implicit.keep_bits), np.zeros_like(implicit.etile_keep_bits),
                                  np.zeros_like(implicit.ltile_keep_bits)))
    assert nothing.nnz_kept == 2000
    assert abs(nothing.decode() - sp.diags(gcn_reference(graph).diagonal())).max() <= 4 * 2.0**-24


def test_an_update_keeps_the_diagonal_implicit_and_equals_a_full_encode(graph, pair):
    _, implicit = pair
    changed = graph.tolil()
    changed[3, 1700] = changed[1700, 3] = 1.0
    changed[10, 11] = changed[11, 10] = 1.0
    changed = changed.tocsr()
    updated = gcn_update(implicit, changed)
    full = gcn_normalized(changed, row_perm=implicit.row_perm, col_perm=implicit.col_perm, unit_diagonal=True)
    assert updated.unit_diagonal
    assert abs(updated.decode() - full.decode()).max() == 0
    assert abs(updated.decode() - gcn_reference(changed)).max() <= 4 * 2.0**-24
    with pytest.raises(DSTEFormatError, match="every diagonal entry stored"):
        gcn_update(implicit, changed, add_self_loops=False)


def test_tiles_of_the_two_kinds_do_not_merge(pair):
    stored, implicit = pair
    with pytest.raises(DSTEFormatError, match="cannot merge"):
        take_tiles([stored], [np.arange(stored.n_tiles)], [np.arange(stored.n_etiles)], like=implicit)
