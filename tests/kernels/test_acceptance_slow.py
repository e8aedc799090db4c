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
    assert block.latency_us >= 3 * ours.latency_us
    assert ours.latency_us >= ours.roofline_us
    # acceptance: modelled trn2 latency <= 1.0 ms and within 2x of the format's own roofline
    assert ours.latency_us <= 1000.0
    assert ours.latency_us <= 2.0 * ours.roofline_us
