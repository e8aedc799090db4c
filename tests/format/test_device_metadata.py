"""The device form of the per-layout metadata in ``nbytes()`` (``dste.format.matrix.device_metadata_bytes``)."""

import numpy as np

from dste.format import encode, gcn_normalized
from dste.format.constants import TileKind


def test_entry_only_metadata_is_its_pointer_kinds_and_one_byte_counts():
    from dste.data import load_dataset

    adj = load_dataset("cora-like").adj  # low degree: at weight 0 every window's columns go to entry tiles
    floor = gcn_normalized(adj, gather_transfer_bytes=0, x_row_bytes=0)  # entry tiles alone, all BIN
    assert floor.n_tiles == 0 and floor.n_ltiles == 0 and floor.n_etiles > 0
    nb = floor.nbytes()
    E = floor.n_etiles
    # ewindow_ptr (int64) + etile_kind (1 B) + etile_nentries (1 B); no window of a tile, no BIN slot, no empty pointer
    assert nb["device"]["metadata"] == floor.ewindow_ptr.nbytes + E + E
    for name in ("etile_window", "etile_slot", "etile_nentries", "window_ptr", "lwindow_ptr"):
        assert nb["host_only"][name] == getattr(floor, name).nbytes  # the host keeps its int32/int64 arrays
    assert nb["device_total"] == sum(nb["device"].values())


def test_valued_tiles_carry_their_slots_and_every_layout_its_pointer():
    rng = np.random.default_rng(4)
    import scipy.sparse as sp

    A = sp.random(300, 300, density=0.05, random_state=rng, format="csr")
    A.data = rng.standard_normal(A.nnz)
    M = encode(A, kinds="auto", bitmap_min_entries=3)
    assert M.n_tiles and M.n_etiles
    valued = int((M.tile_kind != TileKind.BIN).sum() + (M.etile_kind != TileKind.BIN).sum())
    expected = (M.window_ptr.nbytes + M.ewindow_ptr.nbytes  # both layouts hold tiles; no list tiles: no lwindow_ptr
                + M.n_tiles * 2 + M.n_etiles * 2  # kind and count, 1 B each
                + 4 * valued)
    assert M.nbytes()["device"]["metadata"] == expected
