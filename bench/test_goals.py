"""The performance goals of the project, checked on the arxiv-scale graph (kept apart from the benchmarks so a
missed goal does not hide the other figures).

- CPU: dste.spmm at F=128 at least as fast as torch.sparse.mm on fp32 CSR (same threads, interleaved runs);
- encoding the arxiv-scale graph takes <= 10 s;
- modelled trn2 latency of spmm_hybrid at F=128 with hybrid-row INT8 X <= 1.0 ms, and >= 3x below the fixed
  block-column layout (both modelled, compared under the optimistic DMA model, the only one the analytic
  block-column estimate has). The 1.0 ms goal was set under the optimistic DMA model and is met there; the
  default descriptor-bound model misses it, which a strict xfail records (see bench/README.md).
"""

import pytest

from dste.experiments import bench

GOAL_GRAPH = "arxiv-scale"
GOAL_FEATURES = 128
CPU_RATIO_GOAL = 1.0
ENCODE_SECONDS_GOAL = 10.0
MODELLED_TRN2_US_GOAL = 1000.0
BLOCK_RATIO_GOAL = 3.0


@pytest.fixture(scope="module")
def arxiv(workloads_of):
    return workloads_of(GOAL_GRAPH)["random"]


def test_cpu_spmm_at_least_as_fast_as_torch_sparse(arxiv):
    row = bench.cpu_spmm(arxiv, GOAL_FEATURES, repeats=7, warmup=1, proposals=False)
    speedup = row["contenders"]["torch-sparse-csr"]["dste_speedup_min"]
    assert speedup >= CPU_RATIO_GOAL, (
        f"dste.spmm is {speedup:.2f}x torch.sparse.mm (min of 7); goal >= {CPU_RATIO_GOAL}")


def test_encode_within_ten_seconds(arxiv):
    encode = bench.encode_throughput(arxiv, repeats=2)
    assert encode["encode_min_s"] <= ENCODE_SECONDS_GOAL


def _modelled(arxiv, hi_fraction):
    (row,) = bench.modelled_latencies(arxiv, [GOAL_FEATURES], ["trn2"], ["int8-hybrid"], [hi_fraction])
    return row


@pytest.mark.parametrize("hi_fraction", bench.DEFAULT_HI_FRACTIONS)
def test_modelled_trn2_latency_under_the_optimistic_dma_model_and_block_ratio(arxiv, hi_fraction):
    # the model the goal was set in, and the only one the analytic block-column baseline has
    row = _modelled(arxiv, hi_fraction)
    latency = row["dste"]["latency_optimistic_us"]
    assert latency <= MODELLED_TRN2_US_GOAL, f"modelled trn2 latency {latency:.0f} us > {MODELLED_TRN2_US_GOAL} us"
    assert row["block_over_dste"] >= BLOCK_RATIO_GOAL


@pytest.mark.xfail(strict=True, reason="goal missed under the default descriptor-bound DMA model (about 2,700-2,900 us "
                   "modelled: every gathered row pays a descriptor; bench/README.md, Goals); strict, so meeting it "
                   "fails this test and asks for the table to be updated")
@pytest.mark.parametrize("hi_fraction", bench.DEFAULT_HI_FRACTIONS)
def test_modelled_trn2_latency_under_the_descriptor_bound_dma_model(arxiv, hi_fraction):
    latency = _modelled(arxiv, hi_fraction)["dste"]["latency_us"]
    assert latency <= MODELLED_TRN2_US_GOAL, f"modelled trn2 latency {latency:.0f} us > {MODELLED_TRN2_US_GOAL} us"
