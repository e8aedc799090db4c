"""``gcn_normalized(max_bytes_per_edge=...)``: the encode that stores at most a ceiling of device bytes per entry."""

import functools

import numpy as np
import pytest

from dste.format import gcn_normalized
from dste.format.errors import DSTEFormatError
from dste.format.gcn import csr_structure_bytes_per_edge
from dste.format.policy import DEFAULT_GATHER_TRANSFER_BYTES, DEFAULT_X_ROW_BYTES

from .graphs import community_graph


@functools.lru_cache(maxsize=None)
def _graph():
    # communities of 400-900 nodes with 80 % of the edges inside: most window columns hold 1-3 entries, so the
    # default split stores ~6 B per entry, above this graph's int32 CSR (4.27)
    adj, _ = community_graph(3000, min_size=400, max_size=900, p_intra=0.8, seed=1)
    return adj, gcn_normalized(adj)


def _bytes(matrix):
    return matrix.nbytes()["bytes_per_stored_edge"]


def test_the_csr_ceiling_is_met_with_list_tiles_and_the_same_matrix():
    adj, default = _graph()
    csr = csr_structure_bytes_per_edge(default.shape[0], default.nnz_stored)
    assert _bytes(default) > csr + 1.0  # the case the ceiling is for
    capped = gcn_normalized(adj, max_bytes_per_edge="csr")
    assert _bytes(capped) <= csr and capped.n_ltiles > 0
    # the same operator, in the same order: only the tiles that hold it differ
    assert np.array_equal(capped.row_perm, default.row_perm)
    assert abs(capped.decode() - default.decode()).max() == 0
    policy = capped.encode_policy
    assert policy["list_tiles"] and 0 < policy["gather_transfer_bytes"] < DEFAULT_GATHER_TRANSFER_BYTES
    # one weight scales both prices
    weight = policy["gather_transfer_bytes"] / DEFAULT_GATHER_TRANSFER_BYTES
    assert policy["x_row_bytes"] == round(DEFAULT_X_ROW_BYTES * weight)


def test_a_numeric_ceiling_and_the_largest_weight_that_meets_it():
    adj, default = _graph()
    loose = gcn_normalized(adj, max_bytes_per_edge=5.0)
    tight = gcn_normalized(adj, max_bytes_per_edge=4.2)
    assert _bytes(tight) <= 4.2 and _bytes(loose) <= 5.0
    # a looser ceiling keeps prices closer to the policy's (more bitmap columns, fewer gathers)
    assert loose.encode_policy["gather_transfer_bytes"] >= tight.encode_policy["gather_transfer_bytes"]


def test_a_ceiling_already_met_leaves_the_encoding_as_it_is():
    adj, default = _graph()
    same = gcn_normalized(adj, max_bytes_per_edge=_bytes(default))
    assert same.n_ltiles == 0 and same.encode_policy == default.encode_policy
    assert np.array_equal(same.tile_cols, default.tile_cols) and np.array_equal(same.etile_cols, default.etile_cols)


def test_an_unreachable_ceiling_says_what_the_graph_stores_at_least():
    adj, _ = _graph()
    with pytest.raises(DSTEFormatError, match=r"below what this graph stores .* [0-9.]+ B per stored entry"):
        gcn_normalized(adj, max_bytes_per_edge=1.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "cheap", True, [4.0]])
def test_bad_ceilings_are_refused(bad):
    adj, _ = _graph()
    with pytest.raises(DSTEFormatError, match="max_bytes_per_edge must be"):
        gcn_normalized(adj, max_bytes_per_edge=bad)


def test_the_ceiling_needs_the_cost_split():
    adj, _ = _graph()
    with pytest.raises(DSTEFormatError, match="needs layout='condensed' and bitmap_split='cost'"):
        gcn_normalized(adj, max_bytes_per_edge="csr", bitmap_split="count")


@functools.lru_cache(maxsize=None)
def _low_degree_graph():
    # cora-like: 2,708 nodes of mean degree ~4 in small communities; a window's leftover columns hold one entry
    # each, so list tiles (a column list plus a column slot per entry) store more than entry tiles alone
    from dste.data import load_dataset

    return load_dataset("cora-like").adj


def _weight_zero(adj, list_tiles, unit_diagonal=False):
    return gcn_normalized(adj, list_tiles=list_tiles, gather_transfer_bytes=0, x_row_bytes=0,
                          unit_diagonal=unit_diagonal)


def test_entry_tiles_alone_meet_a_ceiling_that_list_tiles_cannot():
    from dste.format.gcn import largest_price_weight_within
    from dste.format.policy import EncodePolicy

    adj = _low_degree_graph()
    with_lists, entries_only = _bytes(_weight_zero(adj, True)), _bytes(_weight_zero(adj, False))
    assert entries_only < with_lists  # the case: list tiles cost bytes on this graph
    ceiling = (entries_only + with_lists) / 2
    default = gcn_normalized(adj)
    assert _bytes(default) > ceiling
    weight, _ = largest_price_weight_within(adj, ceiling, EncodePolicy(), row_perm=default.row_perm,
                                            col_perm=default.col_perm, list_tiles=True)
    assert weight is None  # the list-tile search alone refuses
    capped = gcn_normalized(adj, max_bytes_per_edge=ceiling, scale_dtypes=("float32",))
    assert _bytes(capped) <= ceiling
    assert capped.n_ltiles == 0 and not capped.encode_policy["list_tiles"]
    assert abs(capped.decode() - default.decode()).max() == 0


def test_the_refusal_quotes_the_least_bytes_of_the_settings_tried():
    import re

    adj = _low_degree_graph()
    stored = min(_bytes(_weight_zero(adj, lists)) for lists in (True, False))
    unit = min(_bytes(_weight_zero(adj, lists, unit_diagonal=True)) for lists in (True, False))
    assert unit < stored - 0.5  # a mean degree of ~4: a fifth of the entries are the diagonal (4.68 -> 4.04 B)
    # float16 scale vectors: D^-1/2 (one vector, shared by rows and columns) at 2 B per node instead of 4
    fp16_saving = 2 * adj.shape[0] / _weight_zero(adj, False).nnz_stored
    with pytest.raises(DSTEFormatError) as refusal:
        gcn_normalized(adj, max_bytes_per_edge=unit - fp16_saving - 0.01)
    message = str(refusal.value)

    def quoted(setting):
        return float(re.search(rf"([0-9.]+) B per stored entry at least with {setting}(,|$| \()", message).group(1))

    assert quoted("float32 scale vectors") == pytest.approx(stored, abs=5e-4)
    assert quoted("float16 scale vectors") == pytest.approx(stored - fp16_saving, abs=5e-4)
    assert quoted("float32 scale vectors and a unit diagonal") == pytest.approx(unit, abs=5e-4)
    assert quoted("float16 scale vectors and a unit diagonal") == pytest.approx(unit - fp16_saving, abs=5e-4)


def test_a_unit_diagonal_only_where_the_stored_one_cannot_meet_the_ceiling():
    adj = _low_degree_graph()
    stored_floor = min(_bytes(_weight_zero(adj, lists)) for lists in (True, False))
    fp16_saving = 2 * adj.shape[0] / _weight_zero(adj, False).nnz_stored
    met_stored = gcn_normalized(adj, max_bytes_per_edge=stored_floor - fp16_saving + 0.01)
    assert not met_stored.unit_diagonal and met_stored.scale_dtype == "float16"
    ceiling = stored_floor - fp16_saving - 0.05
    implicit = gcn_normalized(adj, max_bytes_per_edge=ceiling)
    assert implicit.unit_diagonal and _bytes(implicit) <= ceiling
    assert abs(implicit.decode() - met_stored.decode()).max() <= 2.0**-10 * abs(met_stored.decode()).max()
    # asked for, the unit diagonal is the only setting searched
    asked = gcn_normalized(adj, max_bytes_per_edge="csr", unit_diagonal=True)
    assert asked.unit_diagonal and asked.encode_policy["unit_diagonal"]
    with pytest.raises(DSTEFormatError, match="unit diagonal") as refusal:
        gcn_normalized(adj, max_bytes_per_edge=1.0, unit_diagonal=True)
    assert "with float32 scale vectors," not in str(refusal.value)


def test_a_later_setting_is_kept_only_for_a_larger_weight():
    # on the large-community graph list tiles meet the CSR ceiling at a weight entry tiles alone do not exceed
    adj, default = _graph()
    capped = gcn_normalized(adj, max_bytes_per_edge="csr")
    entries_only = gcn_normalized(adj, row_perm=default.row_perm, col_perm=default.col_perm, list_tiles=False,
                                  gather_transfer_bytes=capped.encode_policy["gather_transfer_bytes"],
                                  x_row_bytes=capped.encode_policy["x_row_bytes"])
    assert capped.encode_policy["list_tiles"]
    assert _bytes(entries_only) > csr_structure_bytes_per_edge(default.shape[0], default.nnz_stored)


def test_the_csr_ceiling_is_met_on_cora_like():
    # with the window slot map at 2 B per slot, entry tiles alone store 4.80 B per entry against cora-like's 4.82
    adj = _low_degree_graph()
    capped = gcn_normalized(adj, max_bytes_per_edge="csr", scale_dtypes=("float32",))
    assert _bytes(capped) <= csr_structure_bytes_per_edge(capped.shape[0], capped.nnz_stored)
    assert capped.n_ltiles == 0
