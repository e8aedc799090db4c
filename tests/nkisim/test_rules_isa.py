"""Each documented nki.isa rule: one illegal use refused with its rule id, one legal use matching NumPy."""

import re
from pathlib import Path

import numpy as np
import pytest

import dste.nkisim as sim
from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from dste.nkisim import isa_rules, rules, version
from dste.nkisim.errors import NkiValidationError

from .kernel_bodies import run, tile

DOCS = Path(__file__).parents[2] / "docs"
RNG = np.random.default_rng(7)


def refused(rule_id, body, target="trn2"):
    with pytest.raises(NkiValidationError, match=re.escape(f"[rule {rule_id};")):
        run(body, target)


X = RNG.standard_normal((128, 8)).astype(np.float32)
COL = RNG.standard_normal((128, 1)).astype(np.float32)


def test_every_isa_rule_is_documented():
    text = (DOCS / "NKI_RULES.md").read_text()
    missing = [r for r in isa_rules.RULE_IDS if f"`{r}`" not in text]
    assert missing == [], f"regenerate docs/NKI_RULES.md: {missing}"


def test_every_registered_rule_is_documented():
    language = DOCS / "NKI_RULES_LANGUAGE.md"
    if not language.exists():
        pytest.skip("docs/NKI_RULES_LANGUAGE.md (the nki.language rule table) is not written yet")
    text = (DOCS / "NKI_RULES.md").read_text() + language.read_text()
    missing = [r for r in rules.RULES if f"`{r}`" not in text]
    assert missing == [], f"rules missing from docs/NKI_RULES.md and docs/NKI_RULES_LANGUAGE.md: {missing}"


def test_tensor_scalar_gpsimd_only_for_rsqrt():
    def illegal(o):
        t = tile(X)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=2.0, engine=nisa.engine.gpsimd)

    def legal(o):
        t = tile(np.abs(X) + 0.5)
        o["y"] = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=o["y"], data=t, op0=nl.rsqrt, operand0=0.0, engine=nisa.engine.gpsimd)
        o["y"] = o["y"].numpy()

    refused("tensor_scalar.gpsimd_rsqrt", illegal)
    # fp32 1/sqrt: a few ulp apart from NumPy's float64 reference rounded to fp32.
    np.testing.assert_allclose(run(legal)["y"], 1 / np.sqrt(np.abs(X) + 0.5), rtol=1e-6)


def test_tensor_scalar_tile_operand_must_be_fp32():
    def illegal(o):
        t = tile(X)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.add, operand0=tile(COL, nl.bfloat16))

    def legal(o):
        y = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=y, data=tile(X), op0=nl.subtract, operand0=tile(COL), reverse0=True, op1=nl.multiply,
                           operand1=3.0)
        o["y"] = y.numpy()

    refused("tensor_scalar.fp32_operand", illegal)
    np.testing.assert_allclose(run(legal)["y"], (COL - X) * 3.0, rtol=1e-6)  # two fp32 roundings


def test_tensor_scalar_bitvec_and_kinds():
    def mixed(o):
        t = tile(np.zeros((128, 4)), nl.uint32)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.right_shift, operand0=1, op1=nl.add, operand1=1.0)

    def on_scalar(o):
        t = tile(np.zeros((128, 4)), nl.uint32)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.right_shift, operand0=1, engine=nisa.engine.scalar)

    def legal(o):
        v = np.arange(512, dtype=np.uint32).reshape(128, 4) * 7
        y = nl.ndarray((128, 4), nl.uint32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=y, data=tile(v, nl.uint32), op0=nl.right_shift, operand0=2, op1=nl.bitwise_and,
                           operand1=5)
        o["y"], o["v"] = y.numpy(), v

    refused("tensor_scalar.same_kind", mixed)
    refused("tensor_scalar.bitvec_vector", on_scalar)
    out = run(legal)
    np.testing.assert_array_equal(out["y"], (out["v"] >> 2) & 5)


def test_tensor_scalar_scalar_engine_combinations():
    def illegal(o):
        t = tile(X)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.add, operand0=1.0, op1=nl.multiply, operand1=2.0,
                           engine=nisa.engine.scalar)

    def legal(o):
        y = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=y, data=tile(X), op0=nl.multiply, operand0=2.0, op1=nl.add, operand1=1.0,
                           engine=nisa.engine.scalar)
        o["y"] = y.numpy()

    refused("tensor_scalar.scalar_combos", illegal)
    refused("tensor_scalar.scalar_combos_v2", illegal, target="trn1")
    np.testing.assert_allclose(run(legal)["y"], X * 2 + 1, rtol=1e-6)


def test_alu_table_refuses_divide_and_trn3_only_ops():
    def divide(o):
        t = tile(X)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.divide, operand0=2.0)

    def abs_max(o):
        t = tile(X)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.abs_max, operand0=0.0)

    refused("alu.in_table", divide)
    refused("alu.target", abs_max)
    refused("alu.target", abs_max, target="trn1")


def test_tensor_tensor_rules():
    def two_psum(o):
        a = tile(X, buffer=nl.psum)
        b = tile(X, buffer=nl.psum)
        nisa.tensor_tensor(dst=tile(X), data1=a, data2=b, op=nl.add)

    def power_on_vector(o):
        t = tile(X)
        nisa.tensor_tensor(dst=t, data1=t, data2=t, op=nl.power, engine=nisa.engine.vector)

    def bitvec_float(o):
        t = tile(X)
        nisa.tensor_tensor(dst=t, data1=t, data2=t, op=nl.bitwise_and)

    def legal(o):
        a = np.abs(X) + 0.5
        y = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=y, data1=tile(a), data2=tile(X), op=nl.power)
        big = np.full((128, 4), 2**30 + 1, dtype=np.int32)
        z = nl.ndarray((128, 4), nl.int32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=z, data1=tile(big, nl.int32), data2=tile(big, nl.int32), op=nl.subtract)
        o.update(y=y.numpy(), z=z.numpy(), a=a)

    refused("tensor_tensor.two_psum", two_psum)
    refused("tensor_tensor.power_gpsimd", power_on_vector)
    refused("alu.bitvec_int", bitvec_float)
    out = run(legal)
    np.testing.assert_allclose(out["y"], out["a"] ** X, rtol=1e-5)  # fp32 pow vs float64 pow
    np.testing.assert_array_equal(out["z"], 0)  # int32 defaults to GpSimd: exact integer math


def test_tensor_copy_predicated_dtypes():
    def mixed(o):
        nisa.tensor_copy_predicated(dst=tile(X), src=tile(X, nl.bfloat16), predicate=tile(X > 0, nl.uint8))

    def bad_predicate(o):
        nisa.tensor_copy_predicated(dst=tile(X), src=tile(X), predicate=tile(X > 0, nl.int32))

    def legal(o):
        dst = tile(np.zeros_like(X))
        nisa.tensor_copy_predicated(dst=dst, src=tile(X), predicate=tile(X > 0, nl.uint8))
        o["y"] = dst.numpy()

    refused("tensor_copy_predicated.same_dtype", mixed)
    refused("tensor_copy_predicated.predicate_dtype", bad_predicate)
    np.testing.assert_array_equal(run(legal)["y"], np.where(X > 0, X, 0))


def test_tensor_reduce_legal_reduction_ops():
    def nl_max(o):
        nisa.tensor_reduce(dst=tile(COL), op=nl.max, data=tile(X), axis=1)

    def not_reducible(o):
        nisa.tensor_reduce(dst=tile(COL), op=nl.equal, data=tile(X), axis=1)

    def bad_axis(o):
        nisa.tensor_reduce(dst=tile(COL), op=nl.add, data=tile(X), axis=0)

    def legal(o):
        y = nl.ndarray((128, 1), nl.float32, buffer=nl.sbuf)
        nisa.tensor_reduce(dst=y, op=nl.maximum, data=tile(X), axis=1, negate=True)
        o["y"] = y.numpy()

    refused("alu.in_table", nl_max)
    refused("alu.legal_reduction", not_reducible)
    refused("tensor_reduce.axis", bad_axis)
    np.testing.assert_array_equal(run(legal)["y"], -X.max(axis=1, keepdims=True))


def test_activation_bias_and_table():
    def scalar_bias_v2(o):
        t = tile(X)
        nisa.activation(dst=t, op=nl.exp, data=t, bias=1.0)

    def legal(o):
        y = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf)
        r = nl.ndarray((128, 1), nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=y, op=nl.tanh, data=tile(X), bias=tile(COL), scale=0.5, reduce_op=nl.add, reduce_res=r,
                        reduce_cmd=nisa.reduce_cmd.reset_reduce)
        o.update(y=y.numpy(), r=r.numpy())

    refused("activation.bias", scalar_bias_v2, target="trn1")
    out = run(legal)
    expected = np.tanh(X * 0.5 + COL)
    np.testing.assert_allclose(out["y"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["r"], expected.sum(axis=1, keepdims=True), rtol=1e-5)  # 8-term fp32 sum


def test_activation_reciprocal_takes_no_bias_on_neuroncore_v2():
    # "nki.isa.activation(op=nl.reciprocal) doesn't support setting bias on NeuronCore-v2" (nki/api/nki.api.shared.rst
    # L256); NeuronCore-v3 has no such note
    x = np.abs(X) + 1.0

    def body(o):
        y = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=y, op=nl.reciprocal, data=tile(x), bias=tile(COL))
        o["y"] = y.numpy()

    refused("activation.reciprocal_bias", body, target="trn1")
    np.testing.assert_allclose(run(body)["y"], 1 / (x + COL), rtol=1e-6)


def test_dma_copy_priority_and_hwdge():
    def priority(o):
        a = tile(X)
        b = nl.ndarray((128, 8), nl.float32, buffer=nl.hbm)
        nisa.dma_copy(dst=b, src=a, priority=1)

    def hwdge_v2(o):
        a = tile(X)
        b = nl.ndarray((128, 8), nl.float32, buffer=nl.hbm)
        nisa.dma_copy(dst=b, src=a, dge_mode=nisa.dge_mode.hwdge)

    refused("isa.target_only", priority)
    refused("dma_copy.hwdge", hwdge_v2, target="trn1")


def test_memset_value_type_and_engine():
    refused("memset.value_type", lambda o: nisa.memset(dst=tile(np.zeros((128, 2)), nl.int32), value=1.0))
    refused("memset.engine", lambda o: nisa.memset(dst=tile(X), value=1.0, engine=nisa.engine.scalar))


def test_target_only_instructions_are_refused():
    refused("isa.target_only", lambda o: nisa.exponential(dst=tile(X), src=tile(X)))
    refused("isa.target_only", lambda o: nisa.nonzero_with_count(dst=tile(np.zeros((128, 9)), nl.int32),
                                                                 src=tile(X)), target="trn1")
    refused("isa.target_only", lambda o: nisa.quantize_mx(dst=tile(X), src=tile(X), dst_scale=tile(X)))


def test_version_gate_for_topk():
    previous = version.set_version("0.5")
    try:
        with pytest.raises(sim.ConstraintError, match="introduced in NKI 0.6"):
            run(lambda o: nisa.topk(val_dst=tile(np.zeros((16, 8)), nl.bfloat16), idx_dst=tile(np.zeros((16, 8)),
                                    nl.uint32), src=tile(np.zeros((16, 4)), nl.bfloat16), n=64))
    finally:
        version.set_version(previous)


def test_nc_stream_shuffle_starts_follow_the_active_partitions():
    # constraint 3 (nki/api/nki/isa/__init__.py L2065-2082): 20 source and 40 destination partitions make 64 active
    # partitions, so both must start at 0 or 64; a source at 32 is refused though 32 suits 20 partitions alone
    x = RNG.standard_normal((128, 8)).astype(np.float32)
    mask = [31 - i for i in range(32)]

    def body(o, src_rows):
        d = tile(np.zeros((128, 8)))
        nisa.nc_stream_shuffle(dst=d[0:40, :], src=tile(x)[src_rows, :], shuffle_mask=mask)
        o["d"] = d.numpy()

    refused("nc_stream_shuffle.start_partition", lambda o: body(o, slice(32, 52)))
    d = run(lambda o: body(o, slice(64, 84)))["d"]
    np.testing.assert_array_equal(d[12:32], x[64:84][::-1])  # dst[i] = src[31 - i] where src has partition 31 - i
    np.testing.assert_array_equal(d[np.r_[0:12, 32:128]], 0)


def test_max8_reads_up_to_three_dims_and_writes_two():
    # "The source tile can be up to 3-dimensional, while the output tile is always 2-dimensional" (max8,
    # nki/api/nki/isa/__init__.py L2422); nc_find_index8 says the same of data and dst (L3176-3188)
    x = RNG.standard_normal((128, 2, 2, 4)).astype(np.float32)

    def body(o, src_shape, dst_shape):
        top = nl.ndarray(dst_shape, nl.float32, buffer=nl.sbuf)
        nisa.max8(dst=top, src=tile(x.reshape(src_shape)))
        o["top"] = top.numpy()

    refused("max8.size", lambda o: body(o, (128, 2, 2, 4), (128, 8)))
    refused("max8.size", lambda o: body(o, (128, 16), (128, 2, 4)))
    top = run(lambda o: body(o, (128, 4, 4), (128, 8)))["top"]
    np.testing.assert_array_equal(top, -np.sort(-x.reshape(128, 16), axis=1)[:, :8])


def test_tensor_engine_transposes_only_float32_on_neuroncore_v2():
    # v2 has no transpose mode, so TensorE transposes by a matmul whose dst is float32 (nki/api/nki/isa/__init__.py
    # L566-567, L588), while nc_transpose's dst has data's dtype (L851): a bf16 transpose has no valid dst on trn1;
    # FP16/BF16 PSUM output is a NeuronCore-v3 transpose-mode benefit (trainium2_arch.rst L199-202)
    x = RNG.standard_normal((128, 64)).astype(np.float32)

    def body(o, dtype, lang=False):
        if lang:  # nl.transpose of a bf16 tile stays valid: an fp32 transpose in between
            o["y"] = nl.transpose(tile(x, dtype)).numpy()
            return
        y = nl.ndarray((64, 128), dtype, buffer=nl.psum)
        nisa.nc_transpose(dst=y, data=tile(x, dtype), engine=nisa.engine.tensor)
        o["y"] = y.numpy()

    refused("nc_transpose.tensor_v2", lambda o: body(o, nl.bfloat16), target="trn1")
    np.testing.assert_array_equal(run(lambda o: body(o, nl.float32), target="trn1")["y"], x.T)
    bf16 = x.astype(nl.bfloat16)
    np.testing.assert_array_equal(run(lambda o: body(o, nl.bfloat16), target="trn2")["y"], bf16.T)
    out = run(lambda o: body(o, nl.bfloat16, lang=True), target="trn1")["y"]
    assert out.dtype == bf16.dtype
    np.testing.assert_array_equal(out, bf16.T)


def test_tensor_scalar_cumulative_refuses_tfloat32():
    # "Input / output dtypes are restricted to BF16, FP16, FP32, FP8, UINT8, UINT16, INT8, INT16"
    # (nki/api/nki/isa/__init__.py L1290): tfloat32 is not among them
    def body(o, dtype):
        y = nl.ndarray((128, 8), dtype, buffer=nl.sbuf)
        nisa.tensor_scalar_cumulative(dst=y, src=tile(X, dtype), op0=nl.multiply, op1=nl.add, imm0=1.0)
        o["y"] = y.numpy()

    refused("tensor_scalar_cumulative.dtype", lambda o: body(o, nl.tfloat32))
    np.testing.assert_allclose(run(lambda o: body(o, nl.float32))["y"], np.cumsum(X, axis=1), rtol=1e-5, atol=1e-5)


def test_range_select_range_start_is_an_integer():
    # ":param range_start: ... must be a compile-time integer" (nki/api/nki/isa/__init__.py L2895-2896); 2.5 was
    # truncated to 2
    def body(o, start):
        y, r = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf), nl.ndarray((128, 1), nl.float32, buffer=nl.sbuf)
        nisa.range_select(dst=y, on_true_tile=tile(X), comp_op0=nl.greater_equal, comp_op1=nl.less,
                          bound0=tile(np.full((128, 1), 4.0)), bound1=tile(np.full((128, 1), 8.0)), reduce_res=r,
                          range_start=start)
        o["y"] = y.numpy()

    refused("range_select.operands", lambda o: body(o, 2.5))
    kept = (np.arange(8) + 2 >= 4) & (np.arange(8) + 2 < 8)  # free index i + range_start in [4, 8)
    np.testing.assert_array_equal(run(lambda o: body(o, 2))["y"], np.where(kept, X, np.float32(-3.4028235e38)))



def test_tensor_scalar_reduce_refuses_reverse0_unary_operand_and_bf16_reduce_init():
    # nki/api/nki/isa/__init__.py L2579-2582: operand0 "Must be None or 0 when op0 is a unary operator"; reverse0
    # "(not supported yet)"; L2595-2596: reduce_init "Supported dtypes: float32"
    def body(o, reverse0=False, op0=nl.add, operand0=1.0, init_dtype=nl.float32):
        y, r = nl.ndarray((128, 8), nl.float32, buffer=nl.sbuf), nl.ndarray((128, 1), nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar_reduce(dst=y, data=tile(X), op0=op0, operand0=operand0, reduce_op=nl.add, reduce_res=r,
                                  reverse0=reverse0, reduce_cmd=nisa.reduce_cmd.load_reduce,
                                  reduce_init=tile(np.full((128, 1), 2.0), init_dtype))
        o.update(y=y.numpy(), r=r.numpy())

    refused("tensor_scalar_reduce.operands", lambda o: body(o, reverse0=True))
    refused("tensor_scalar_reduce.operands", lambda o: body(o, op0=nl.abs, operand0=5.0))
    refused("tensor_scalar_reduce.operands", lambda o: body(o, init_dtype=nl.bfloat16))
    out = run(lambda o: body(o, op0=nl.abs, operand0=None))
    np.testing.assert_allclose(out["r"][:, 0], np.abs(X).sum(axis=1) + 2.0, rtol=1e-5)
    out = run(body)
    np.testing.assert_allclose(out["r"][:, 0], (X + 1.0).sum(axis=1) + 2.0, rtol=1e-5)


def test_dma_compute_refuses_a_run_time_scalar_offset():
    # nki/api/nki/isa/__init__.py L2699: "Both srcs and dst tensors must have compile-time known addresses (unless
    # using vector_offset for indirect access)"
    def body(o, dynamic):
        a = nl.ndarray((2, 4), nl.float32, buffer=nl.hbm)
        a.array()[...] = np.arange(8, dtype=np.float32).reshape(2, 4)
        b, d = tile(np.ones((1, 4))), nl.ndarray((1, 4), nl.float32, buffer=nl.sbuf)
        src = a.ap([[4, 1], [1, 4]], scalar_offset=nisa.register_alloc(1), indirect_dim=0) if dynamic else a[1:2, :]
        nisa.dma_compute(dst=d, srcs=[src, b], reduce_op=nl.add)
        o["d"] = d.numpy()

    refused("dma_compute.static_address", lambda o: body(o, True))
    np.testing.assert_array_equal(run(lambda o: body(o, False))["d"], [[5, 6, 7, 8]])


@pytest.mark.parametrize("cmp_op, accepted", [(nl.add, False), (nl.bitwise_and, False), (nl.greater_equal, True)])
def test_affine_select_cmp_op_is_a_comparison(cmp_op, accepted):
    # nki/api/nki/isa/__init__.py L1789 (``predicate = cmp_op(affine_value, 0)``), L1835 (":param cmp_op: comparison
    # operator"): nl.add / nl.bitwise_and are refused by a rule, not by an internal TypeError
    def body(o):
        y = nl.ndarray((4, 4), nl.float32, buffer=nl.sbuf)
        nisa.affine_select(dst=y, pattern=[[-1, 4]], channel_multiplier=1, on_true_tile=tile(np.ones((4, 4))),
                           on_false_value=0.0, cmp_op=cmp_op)
        o["y"] = y.numpy()

    if not accepted:
        refused("affine_select.cmp_op", body)
        return
    p, i = np.arange(4)[:, None], np.arange(4)[None, :]
    np.testing.assert_array_equal(run(body)["y"], (p - i >= 0).astype(np.float32))


def test_indirect_dma_needs_neuroncore_v3():
    # nki/deep-dives/nki-dge.rst L171, DGE mode table: swdge runs on "Any (indirect: v3+)" hardware, so a
    # vector_offset gather is refused on trn1 (NeuronCore-v2) and gathers rows 7 and 1 on trn2
    table = np.arange(32.0, dtype=np.float32).reshape(8, 4)

    def body(o):
        src = nl.ndarray((8, 4), nl.float32, buffer=nl.hbm)
        src.array()[...] = table
        rows = nl.ndarray((2, 4), nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=rows, src=src.ap(pattern=[[4, 2], [1, 4]], offset=0,
                                           vector_offset=tile([[7], [1]], nl.int32), indirect_dim=0))
        o["y"] = rows.numpy()

    refused("dma_copy.indirect_v3", body, target="trn1")
    np.testing.assert_array_equal(run(body)["y"], table[[7, 1]])


def test_matmul_32_row_tiles_need_neuroncore_v3():
    # "2x 64 row tiles (NeuronCore-v2 or newer), or 4x 32 row tiles (NeuronCore-v3 or newer)" (nki/api/nki/isa/
    # __init__.py L517-518)
    rng = np.random.default_rng(32)
    st = rng.standard_normal((32, 32)).astype(np.float32)
    mv = rng.standard_normal((32, 8)).astype(np.float32)

    def body(o):
        y = nl.ndarray((32, 8), nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=y, stationary=tile(st), moving=tile(mv), tile_position=(32, 32), tile_size=(32, 32))
        o["y"] = y.numpy()

    refused("nc_matmul.tiling", body, target="trn1")
    # 32-term fp32 dot products: a few fp32 ulps from the float64 product
    np.testing.assert_allclose(run(body)["y"], st.astype(np.float64).T @ mv, rtol=1e-5, atol=1e-5)


def test_iota_pattern_has_at_most_four_step_num_pairs():
    # iota: "a tensor access pattern of up to 4D pattern" (nki/api/nki/isa/__init__.py L1711, :param pattern: L1759)
    def five(o):
        nisa.iota(dst=nl.ndarray((2, 32), nl.int32, buffer=nl.sbuf), pattern=[[1, 2]] * 5)

    def four(o):
        y = nl.ndarray((2, 16), nl.int32, buffer=nl.sbuf)
        nisa.iota(dst=y, pattern=[[1000, 2], [100, 2], [10, 2], [1, 2]])
        o["y"] = y.numpy()

    refused("iota.pattern", five)
    a, b, c, d = np.meshgrid(*[np.arange(2)] * 4, indexing="ij")
    expected = (1000 * a + 100 * b + 10 * c + d).reshape(1, 16)
    np.testing.assert_array_equal(run(four)["y"], np.repeat(expected, 2, axis=0))


def test_memset_value_must_fit_the_integer_dtype():
    # rule memset.value_type: value matches dst's dtype (release-notes/components/nki.rst L396, NKI 0.3.0) and fits
    # its range: 255 is the largest uint8, 300 is not one
    def body(value):
        def fill(o):
            y = nl.ndarray((4, 4), nl.uint8, buffer=nl.sbuf)
            nisa.memset(dst=y, value=value)
            o["y"] = y.numpy()
        return fill

    refused("memset.value_type", body(300))
    refused("memset.value_type", body(-1))
    np.testing.assert_array_equal(run(body(255))["y"], np.full((4, 4), 255, np.uint8))


def test_tensor_reduce_never_reduces_the_partition_axis_even_with_a_free_axis():
    # "Axis 0 (partition axis) cannot be reduced" (nki/api/nki/isa/__init__.py L1171, L1239): axis (0, 1) ends at the
    # final dim and is consecutive, yet names axis 0
    x = np.arange(8.0, dtype=np.float32).reshape(1, 8)

    def both(o):
        nisa.tensor_reduce(dst=nl.ndarray((1, 1), nl.float32, buffer=nl.sbuf), op=nl.add, data=tile(x), axis=(0, 1))

    def free_only(o):
        y = nl.ndarray((1, 1), nl.float32, buffer=nl.sbuf)
        nisa.tensor_reduce(dst=y, op=nl.add, data=tile(x), axis=(1,))
        o["y"] = y.numpy()

    refused("tensor_reduce.axis", both)
    np.testing.assert_array_equal(run(free_only)["y"], [[28.0]])
