"""The modelled profile against hand calculations from the documented rules (docs/COST_MODEL.md)."""

import json

import ml_dtypes
import numpy as np
import pytest

import dste.nkisim as sim
from dste.nkisim import cost
from dste.nkisim.dtypes import tfloat32
from tests.nkisim import nki_kernels as K

# Documented figures, written out by hand: clocks in GHz (the architecture guides' frequency tables), DMA peak
# per NC in GB/s (nki-dma-bandwidth-guide.rst).
DOC = {
    "trn1": {"tensor_ghz": 2.8, "vector_ghz": 1.12, "dma_peak": 272.0},
    "trn2": {"tensor_ghz": 2.4, "vector_ghz": 0.96, "dma_peak": 368.0},
}


def hand_efficiency(run_bytes):
    """The descriptor-bound DMA curve written out by hand (docs/COST_MODEL.md): knee 2400 B, sharpness 6."""
    x = run_bytes / 2400.0
    return x / (1 + x**6) ** (1 / 6)


def hand_profile_512_matmul(target, model="descriptor"):
    """matmul_kernel on 512^3 bf16: 4 m-tiles x 1 n-tile x 4 k-tiles of 128 x 128 x 512."""
    doc = DOC[target]
    matmuls = 4 * 4
    tensor_cycles = matmuls * max(512, 64)  # bf16: max(N, 64) cycles each
    # one PSUM (fp32) -> SBUF (bf16) copy per output tile; mixed dtypes get no 16-bit speed-up:
    vector_cycles = 4 * (100 + 512)
    lhs_bytes, rhs_bytes, store_bytes = 128 * 128 * 2, 128 * 512 * 2, 128 * 512 * 2
    transfers = ([lhs_bytes, rhs_bytes] * 4 + [store_bytes]) * 4
    queue_bw = doc["dma_peak"] / 16  # bytes per ns per queue
    # every transfer spans 128 partitions with one contiguous row each: its run is bytes / 128
    slowdown = [1.0 if model == "optimistic" else 1 / hand_efficiency(b / 128) for b in transfers]
    data_ns = [b / queue_bw * s for b, s in zip(transfers, slowdown)]
    transfer_ns = [1300 + d for d in data_ns]
    # Every transfer spans 128 SBUF partitions, so its bytes are split over all 16 DMA engines (8
    # partitions each): each engine moves total_bytes / 16 at queue_bw. The 1300 ns fixed cost of each
    # transfer goes to the least busy engine: 36 transfers = 2 per engine + 4, so the busiest engines
    # pay 3 fixed costs.
    busiest_queue_ns = 3 * 1300 + sum(data_ns) / 16
    tensor_ns = tensor_cycles / doc["tensor_ghz"]
    vector_ns = vector_cycles / doc["vector_ghz"]
    return {
        "transfers": len(transfers),
        "bytes": sum(transfers),
        "tensor_cycles": tensor_cycles,
        "vector_cycles": vector_cycles,
        "overlapped_us": max(tensor_ns, vector_ns, busiest_queue_ns) / 1000,
        "serial_us": (tensor_ns + vector_ns + sum(transfer_ns)) / 1000,
    }


@pytest.mark.parametrize("target", ["trn1", "trn2"])
def test_512_bf16_matmul_profile_matches_hand_calculation(target):
    rng = np.random.default_rng(0)
    lhs_t = rng.standard_normal((512, 512)).astype(ml_dtypes.bfloat16)
    rhs = rng.standard_normal((512, 512)).astype(ml_dtypes.bfloat16)
    out, prof = sim.profile(K.matmul_kernel, lhs_t, rhs, target=target)
    hand = hand_profile_512_matmul(target)
    assert out.shape == (512, 512)
    assert prof.target == target
    assert prof.instructions == {"tensor": 16, "vector": 4, "scalar": 0, "gpsimd": 0, "dma": 36}
    assert prof.dma_transfers == hand["transfers"]
    assert prof.dma_bytes == hand["bytes"]
    assert prof.engine_cycles["tensor"] == hand["tensor_cycles"]
    assert prof.engine_cycles["vector"] == hand["vector_cycles"]
    assert prof.latency_overlapped_us == pytest.approx(hand["overlapped_us"], rel=1e-9)
    assert prof.latency_serial_us == pytest.approx(hand["serial_us"], rel=1e-9)
    optimistic = hand_profile_512_matmul(target, "optimistic")
    assert prof.latency_us("optimistic") == pytest.approx(optimistic["overlapped_us"], rel=1e-9)
    assert prof.latency_us("optimistic", "serial") == pytest.approx(optimistic["serial_us"], rel=1e-9)
    # 256 B and 1 KiB rows are below the knee: the descriptor-bound figure is the slower one
    assert prof.latency_us("descriptor") > prof.latency_us("optimistic")


def test_inf2_is_trn1():
    assert cost.normalize_target("inf2") == "trn1"
    with pytest.raises(ValueError, match="unknown target"):
        cost.normalize_target("trn3")


def test_cost_functions_follow_documented_rules():
    assert cost.matmul_cycles(512, ml_dtypes.bfloat16, "trn2") == 512
    assert cost.matmul_cycles(16, np.float16, "trn1") == 64
    assert cost.matmul_cycles(512, np.float32, "trn2") == 2048
    assert cost.vector_cycles(512, 2, np.float32, "trn1") == 100 + 1024
    assert cost.vector_cycles(512, 2, ml_dtypes.bfloat16, "trn2") == 100 + 512
    assert cost.vector_cycles(512, 1, ml_dtypes.bfloat16, "trn2", op="copy") == 100 + 128
    assert cost.scalar_cycles(10, "trn2") == 64
    assert cost.dma_cost_ns(23 * 1000, "trn2") == pytest.approx(1300 + 1000)
    assert cost.engine_clock_ghz("vector", "trn1") == 1.12


def test_fp32_matmul_flagged_onezero_runs_twice_as_fast():
    # nc_matmul, :param is_stationary_onezero: / is_moving_onezero: "could lead to 2x better performance"
    # (nki/api/nki/isa/__init__.py L665-669): an fp32 matmul of 128 columns is 128 x 4 cycles, halved to 256
    assert cost.matmul_cycles(128, np.float32, "trn2") == 512
    assert cost.matmul_cycles(128, np.float32, "trn2", onezero=True) == 256
    assert cost.matmul_cycles(128, np.float32, "trn1", onezero=True) == 256


def test_tfloat32_matmul_streams_at_the_bf16_rate():
    # "79 BF16/FP16/TF32 and 20 FP32 dense TFLOPS" (nki/guides/architecture/trainium2_arch.rst L71): tfloat32 runs
    # at the BF16 rate, max(N, 64) cycles, not fp32's 4x
    assert cost.matmul_cycles(128, tfloat32, "trn2") == 128
    assert cost.matmul_cycles(128, ml_dtypes.bfloat16, "trn2") == 128
    assert cost.matmul_cycles(16, tfloat32, "trn2") == 64


# Doc pages of aws-neuron/aws-neuron-sdk (Neuron 2.32) the constants are read from.
SDK_PAGES = (
    "nki/guides/architecture/trainium_inferentia2_arch.rst", "nki/guides/architecture/trainium2_arch.rst",
    "nki/get-started/about/nki-dma-overview.rst", "nki/deep-dives/nki-dma-bandwidth-guide.rst",
    "nki/api/nki/isa/__init__.py", "nki/api/nki.language.tile_size.rst",
)


@pytest.mark.parametrize("name", sorted(cost.CONSTANTS))
def test_every_constant_names_a_doc_page_or_says_it_is_assumed(name):
    # docs/COST_MODEL.md: each constant's source is a doc page and section, or 'assumption: ...'; a bare key of a
    # notes file the tree does not hold can be checked by no one
    source = cost.CONSTANTS[name].source
    assert source.startswith("assumption:") or any(page in source for page in SDK_PAGES), source


def test_profile_dict_table_and_merge():
    a = np.ones((128, 32), np.float32)
    _, p = sim.profile(K.tensor_add_kernel, a, a, target="trn2")
    d = p.to_dict()
    json.dumps(d)
    assert d["modelled"] is True and d["target"] == "trn2"
    assert d["instructions"]["gpsimd"] == 0 and d["instructions"]["vector"] == 1 and d["instructions"]["dma"] == 3
    text = p.table()
    assert "modelled" in text and "trn2" in text
    for line in text.splitlines():
        if " us" in line:
            assert "modelled" in line or line.startswith(("TensorE", "VectorE", "ScalarE", "GpSimd", "DMA "))
    both = p.merge(p)
    assert both.launches == 2
    assert both.dma_bytes == 2 * p.dma_bytes
    assert both.latency_overlapped_us == pytest.approx(2 * p.latency_overlapped_us)
    assert both.latency_serial_us == pytest.approx(2 * p.latency_serial_us)
    for model in ("descriptor", "optimistic"):
        assert both.latency_us(model) == pytest.approx(2 * p.latency_us(model))
        side_by_side = p.merge(p, parallel=True)
        assert side_by_side.latency_us(model) == pytest.approx(p.latency_us(model))
    assert set(d["latency_us_modelled_by_dma_model"]) == {"descriptor", "optimistic"}
    assert "dma_efficiency_knee_bytes" in d["dma_model_assumptions"]
    assert "assumption" in d["dma_model_assumptions"]["swdge_cycles_per_descriptor"]
    _, p1 = sim.profile(K.tensor_add_kernel, a, a, target="trn1")
    with pytest.raises(ValueError, match="different targets"):
        p.merge(p1)


def test_the_dict_counts_gpsimd_cycles_as_its_busy_time_does():
    """to_dict()'s engine cycles left out software-DGE descriptor generation, which table() and the busy times
    count: GpSimd's cycles over its clock gave 2.05 us where its busy time said 16.05."""
    table = np.arange(512 * 16, dtype=np.float32).reshape(512, 16)
    ids = np.random.default_rng(0).integers(0, 512, (128, 1)).astype(np.int32)
    _, p = sim.profile(K.gather_rows_kernel, table, ids, target="trn2")
    d = p.to_dict()
    assert d["swdge_gpsimd_cycles_modelled"] > 0
    for engine, cycles in d["engine_cycles_modelled"].items():
        busy_ns = cost.cycles_to_ns(cycles, engine, "trn2")
        assert d["engine_busy_us_modelled"][engine] == pytest.approx(busy_ns / 1000.0, rel=1e-6, abs=1e-6)
