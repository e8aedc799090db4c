"""Whole-graph modelled figures on the arxiv-scale generated graph (slow: generation and encoding)."""

import pytest


@pytest.mark.slow
def test_arxiv_scale_modelled_figures():
    from dste.data import load_dataset
    from dste.format import gcn_normalized
    from dste.kernels.cost import estimate_block_layout, estimate_spmm
    from dste.kernels.plan import MAX_INSTRUCTIONS_PER_LAUNCH

    graph = load_dataset("arxiv-scale")
    A = gcn_normalized(graph.adj, reorder="community")
    ours = estimate_spmm(A, 128, "int8-hybrid")
    block = estimate_block_layout(A, 128, "int8-hybrid")
    print(ours, block, sep="\n")
    assert ours.max_instructions_per_launch <= MAX_INSTRUCTIONS_PER_LAUNCH
    # the block-column baseline is analytic under the optimistic DMA model: compare under that model
    assert block.latency_us >= 3 * ours.latency_optimistic_us
    # the roofline is a lower bound on the launch's two cores together (it was one core's, above the latency)
    assert ours.latency_us >= ours.latency_optimistic_us >= ours.roofline_us
    # the goal (<= 1.0 ms) was set under the optimistic DMA model and holds there; the descriptor-bound model (every
    # gathered row pays a ~2.4 KB descriptor element) misses it. "Within 2x of the roofline" is missed on both
    # (about 3.2x of the two-core roofline under the optimistic model)
    assert ours.latency_optimistic_us <= 1000.0


@pytest.mark.slow
def test_arxiv_scale_fp16_rows_cost_a_correction_pass_only():
    """1 % FP16 rows: the correction pass adds at most 10 % to the all-INT8 modelled latency (it was
    +46 % with a per-slot FP16 gather) and keeps the transfer count within 15 %."""
    import numpy as np

    from dste.data import load_dataset
    from dste.format import gcn_normalized, quantize_rows
    from dste.kernels.cost import estimate_spmm
    from dste.kernels.plan import MAX_INSTRUCTIONS_PER_LAUNCH

    A = gcn_normalized(load_dataset("arxiv-scale").adj, reorder="community")
    X = quantize_rows(np.random.default_rng(0).standard_normal((A.shape[1], 128)).astype(np.float32), fp16_fraction=0.01)
    base = estimate_spmm(A, 128, "int8-hybrid")
    with_hi = estimate_spmm(A, 128, "int8-hybrid", X=X)
    print(base, with_hi, sep="\n")
    assert with_hi.max_instructions_per_launch <= MAX_INSTRUCTIONS_PER_LAUNCH
    assert with_hi.launches == base.launches
    assert with_hi.latency_us <= 1.10 * base.latency_us
    assert with_hi.dma_transfers <= 1.15 * base.dma_transfers


def _distinct_window_columns(A):
    """(distinct (128-row window, column) pairs, those holding a single entry) of A's kept entries in its
    encoded row order: every distinct pair needs at least one gathered X row, whatever the tile layout."""
    import numpy as np

    csr = A.decode()
    n_rows, n_cols = A.shape
    position = np.empty(n_rows, dtype=np.int64)
    position[A.row_perm if A.row_perm is not None else np.arange(n_rows)] = np.arange(n_rows)
    rows = np.repeat(np.arange(n_rows), np.diff(csr.indptr))
    _, counts = np.unique((position[rows] // 128) * n_cols + csr.indices, return_counts=True)
    return counts.size, int((counts == 1).sum())


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["arxiv-scale", "arxiv-scale-local"])
def test_arxiv_scale_format_acceptance(preset):
    """The format's acceptance figures at ogbn-arxiv scale (community order, F=128, hybrid-row INT8 X).

    Stretch (X rows gathered / nodes) cannot fall below the distinct (window, column) pairs per node, and an
    edge that leaves its community is almost always alone in its window's column, so it costs one gathered
    row on its own: the stretch goal (<= 2.5) holds on the 95 %-local preset and not on the 85 % one, where
    the lone entries alone exceed 2 rows per node.
    """
    from dste.data import load_dataset
    from dste.format import gcn_normalized
    from dste.kernels.cost import estimate_spmm

    graph = load_dataset(preset)
    assert graph.num_nodes == 169_343 and abs(graph.adj.nnz / 2 - 1_166_243) / 1_166_243 < 0.01
    A = gcn_normalized(graph.adj, reorder="community")
    stats = A.stats()
    estimate = estimate_spmm(A, 128, "int8-hybrid")
    distinct, lone = _distinct_window_columns(A)
    n = graph.num_nodes
    print(preset, f"B/edge {stats['bytes_per_stored_edge']:.3f} stretch {stats['stretch']:.3f} "
          f"floor {distinct / n:.3f} lone {lone / n:.3f} tiles {stats['n_tiles']}+{stats['n_entry_tiles']} "
          f"latency {estimate.latency_us:.0f} us (descriptor-bound), {estimate.latency_optimistic_us:.0f} us "
          f"(optimistic), roofline {estimate.roofline_us:.0f} us")
    assert stats["bytes_per_stored_edge"] <= 4.27  # structure-only int32 CSR
    assert estimate.roofline_us <= estimate.latency_optimistic_us <= 1000.0
    assert stats["x_rows_gathered"] >= distinct  # the floor holds for any layout
    assert stats["stretch"] <= 1.1 * distinct / n  # the encoder gathers within 10 % of its order's floor
    if preset == "arxiv-scale-local":
        assert stats["stretch"] <= 2.5
    else:
        assert lone / n > 1.5  # the floor is set by edges leaving their community, not by the encoder
