"""The descriptor-bound DMA model: the efficiency curve against the documented anchor points, and
``Profile.record_dma``'s run length, descriptor count and software-DGE time on GpSimd."""

import numpy as np
import pytest

from dste.nkisim import cost
from dste.nkisim.profile import Profile

# Relative throughput read off the DMA overview's figure (nki/get-started/about/nki-dma-overview.rst,
# 'Performance Considerations', nki-dma-intro-1): bytes per partition -> throughput / throughput at 32 KiB.
FIGURE_POINTS = {
    32: 0.014, 64: 0.026, 128: 0.050, 256: 0.103, 512: 0.209, 1024: 0.424,
    2048: 0.813, 4096: 0.966, 8192: 0.983, 16384: 0.990, 32768: 1.0,
}


def test_efficiency_is_monotone_and_bounded():
    sizes = np.geomspace(1, 1 << 20, 200)
    eff = np.array([cost.dma_efficiency(c) for c in sizes])
    assert np.all(np.diff(eff) >= 0)
    assert np.all(np.diff(eff[sizes < 16384]) > 0)   # strictly rising until it rounds to 1.0
    assert np.all((eff > 0) & (eff <= 1))
    assert cost.dma_efficiency(0) == 0.0


def test_efficiency_meets_the_bandwidth_guide_anchor_points():
    # nki/deep-dives/nki-dma-bandwidth-guide.rst 'Bandwidth vs. Payload Size'
    assert cost.dma_efficiency(255) < 0.15          # "< 256 B: severely overhead-bound, a small fraction of peak"
    assert 0.1 < cost.dma_efficiency(1024) < 0.9    # "256 B - 2 KiB: improving but still below peak"
    assert cost.dma_efficiency(2048) >= 0.75        # ">= 2 KiB: approaches peak"
    assert cost.dma_efficiency(4096) >= 0.95        # ">= 4 KiB: saturates the DMA engines"


@pytest.mark.parametrize("size, relative", sorted(FIGURE_POINTS.items()))
def test_efficiency_follows_the_overview_figure(size, relative):
    # Reading a plotted point off the figure is good to about a pixel: 3 % of full scale, and the
    # fitted two-parameter curve may miss the plotted shoulder (4 KiB) by as much again.
    assert cost.dma_efficiency(size) == pytest.approx(relative, rel=0.12, abs=0.03)


def test_transfer_shape_defaults():
    assert cost.dma_transfer_shape(16384, 128) == (128.0, 128)
    assert cost.dma_transfer_shape(16384, 128, contiguous_bytes=64) == (64.0, 128)
    # a run never exceeds one descriptor element
    assert cost.dma_transfer_shape(16384, 128, contiguous_bytes=1 << 20) == (128.0, 128)
    assert cost.dma_transfer_shape(4096, 128, descriptors=32) == (128.0, 32)
    assert cost.dma_transfer_shape(1600, None) == (100.0, 16)


def test_record_dma_keeps_old_positional_call_and_both_models():
    p = Profile("trn2")
    p.record_dma("dma_copy", 128 * 4096, 0, 128)     # the pre-existing positional form
    bw = 368 / 16
    assert p.dma_serial_ns_by_model["optimistic"] == pytest.approx(1300 + 128 * 4096 / bw)
    assert p.dma_serial_ns_by_model["descriptor"] == pytest.approx(
        1300 + 128 * 4096 / bw / cost.dma_efficiency(4096))
    assert p.swdge_cycles == 0 and p.dma_descriptors == 128


def test_small_runs_cost_more_under_the_descriptor_model():
    whole_rows, short_runs = Profile("trn2"), Profile("trn2")
    whole_rows.record_dma("dma_copy", 128 * 4096, 0, 128)
    short_runs.record_dma("dma_copy", 128 * 4096, 0, 128, contiguous_bytes=128)
    assert short_runs.latency_us("optimistic") == pytest.approx(whole_rows.latency_us("optimistic"))
    ratio = cost.dma_efficiency(4096) / cost.dma_efficiency(128)
    data_whole = max(whole_rows.dma_queue_ns_by_model["descriptor"]) - 1300
    data_short = max(short_runs.dma_queue_ns_by_model["descriptor"]) - 1300
    assert data_short / data_whole == pytest.approx(ratio, rel=1e-9)


@pytest.mark.parametrize("target", ["trn1", "trn2"])
def test_indirect_gather_charges_descriptor_generation_to_gpsimd(target):
    rows, row_bytes = 128, 128                       # an INT8 F=128 row gather
    p = Profile(target)
    p.record("gpsimd", "iota", 500)                  # GpSimd compute already queued
    p.record_dma("dma_copy", rows * row_bytes, 0, 128, contiguous_bytes=row_bytes, descriptors=rows, indirect=True)
    dge = cost.constant("swdge_fixed_cycles", target) + rows * cost.constant("swdge_cycles_per_descriptor", target)
    assert p.swdge_cycles == pytest.approx(dge)
    assert p.engine_cycles_for("descriptor")["gpsimd"] == pytest.approx(500 + dge)
    assert p.engine_cycles_for("optimistic")["gpsimd"] == pytest.approx(500)
    assert p.instructions["gpsimd"] == 1 and p.instructions["dma"] == 1   # descriptor generation is no instruction
    ghz = cost.engine_clock_ghz("gpsimd", target)
    assert p.engine_busy_ns("descriptor")["gpsimd"] == pytest.approx((500 + dge) / ghz)
    assert p.dma_indirect_transfers == 1 and p.dma_descriptors == rows
    # a gather whose padding rows are skipped still builds a descriptor per index row
    q = Profile(target)
    q.record_dma("dma_copy", 10 * row_bytes, 0, 128, contiguous_bytes=row_bytes, descriptors=rows, indirect=True)
    assert q.swdge_cycles == pytest.approx(dge)


def test_a_gather_whose_rows_are_all_skipped_builds_no_descriptor():
    # docs/COST_MODEL.md: a row that oob_mode.skip skips gets no descriptor; the trigger's fixed cycles remain
    p = Profile("trn2")
    p.record_dma("dma_copy", 0, 0, 128, contiguous_bytes=256, descriptors=0, indirect=True)
    assert p.dma_descriptors == 0
    assert p.swdge_cycles == cost.constant("swdge_fixed_cycles", "trn2")
    assert p.dma_serial_ns_by_model["descriptor"] == pytest.approx(1300)
    with pytest.raises(ValueError, match="needs at least one descriptor"):
        p.record_dma("dma_copy", 512, 0, 128, contiguous_bytes=256, descriptors=0, indirect=True)


def test_gpsimd_bound_kernel_is_slowed_by_descriptor_generation():
    p = Profile("trn2")
    for _ in range(64):
        p.record_dma("dma_copy", 128 * 128, 0, 128, contiguous_bytes=128, descriptors=128, indirect=True)
    busy = p.engine_busy_ns("descriptor")
    assert busy["gpsimd"] > 0
    assert p.latency_us("descriptor") >= busy["gpsimd"] / 1000
    assert p.latency_us("optimistic") < p.latency_us("descriptor")


def test_unknown_model_is_refused():
    p = Profile("trn2")
    with pytest.raises(ValueError, match="unknown DMA cost model 'fast'.*descriptor, optimistic"):
        p.latency_us("fast")
    with pytest.raises(ValueError, match="unknown bound"):
        p.latency_us("descriptor", "mean")


def test_each_dma_engine_serves_eight_partitions():
    # nki-dma-overview.rst L34, L97, L164 ("each DMA engine corresponds to 8 partition lanes"): A[4, 4096] runs on one
    # engine, A[128, 128] on all 16; partitions 0-7 are engine 0's, 8-15 engine 1's, and 4-11 straddle both
    assert cost.dma_engine_span(0, 4, "trn2") == (0, 1)
    assert cost.dma_engine_span(0, 8, "trn2") == (0, 1)
    assert cost.dma_engine_span(8, 8, "trn2") == (1, 1)
    assert cost.dma_engine_span(4, 8, "trn2") == (0, 2)
    assert cost.dma_engine_span(120, 8, "trn2") == (15, 1)
    assert cost.dma_engine_span(0, 128, "trn2") == (0, 16)
    assert cost.dma_engine_span(0, 9, "trn1") == (0, 2)


def test_one_engine_transfer_pays_its_fixed_cost_on_its_own_lane():
    # docs/COST_MODEL.md: the 1300 ns goes to "the least busy of 16 DMA queues" (lowest index on ties, cost.
    # dma_pick_queue), the bytes to the engines of the SBUF-side partitions. All lanes idle: lane 0 takes the fixed
    # cost, and partitions 0-7 are lane 0's too, so one lane carries 1300 ns + 32 KiB at 368 / 16 = 23 B/ns
    assert cost.dma_pick_queue([0.0] * 16) == 0
    assert cost.dma_pick_queue([5.0, 1.0, 1.0, 3.0]) == 1
    p = Profile("trn2")
    p.record_dma("dma_copy", 8 * 4096, 0, 8, contiguous_bytes=4096, descriptors=8)
    lanes = p.dma_queue_ns_by_model["optimistic"]
    assert lanes[0] == pytest.approx(1300 + 32768 / 23)
    assert sum(lanes[1:]) == 0


def test_software_dge_costs_two_gpsimd_cycles_per_descriptor_on_both_targets():
    # docs/COST_MODEL.md, "Software descriptor generation": swdge cycles = 10 + 2 x descriptors (an assumption, the
    # same on trn1 and trn2); "A 128-row gather costs 266 cycles = 222 ns on trn2" (GpSimd at 1.2 GHz)
    for target in ("trn1", "trn2"):
        assert cost.swdge_descriptor_cycles(128, target) == 266
        assert cost.swdge_descriptor_cycles(0, target) == 10
    assert cost.cycles_to_ns(cost.swdge_descriptor_cycles(128, "trn2"), "gpsimd", "trn2") == pytest.approx(222, abs=0.5)
