"""The cpu backend's compressed forward pass: its float32 shortcuts give the bits of the HybridRows path.

``GraphInference.forward(backend="cpu")`` hands ``dste.spmm`` and the weight product the dequantized values of
every quantized operand directly (``fake_quantized_rows``, ``dequantized_hybrid_rows``) instead of building
``HybridRows`` and dequantizing them. These tests compare bit patterns (float32 viewed as uint32, so -0.0 and
+0.0 differ) with the reference quantizer ``quantize_rows_by_fraction(...).dequantize()`` and with a forward
pass written from the public pieces (``quantize_rows_by_fraction``, ``dste.spmm`` on ``HybridRows``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dste.bindings import spmm
from dste.format.constants import FP16_UNDERFLOW_AMAX
from dste.format.errors import DSTEFormatError
from dste.format.hybrid_rows import MIN_ROW_MAGNITUDE
from dste.gnn import FP32_SETTING, CompressedModel, CompressedWeight, GraphInference, LayerSetting, make_model, train_fp32
from dste.gnn.execution import dequantized_hybrid_rows, fake_quantized_rows
from dste.gnn.row_quant import (
    BLOCK_ROWS, best_rows, dequantize_rows, float16_rows, fp16_rows, int8_rows, row_scores, score_bounds,
)
from dste.gnn.settings import quantize_rows_by_fraction, row_sensitivity
from dste.reference import quantize_rows_reference

from .test_compressed import _graph

FRACTIONS = (0.0, 0.05, 0.37, 1.0)


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


def _awkward_rows(seed: int, n: int = 200, width: int = 48, tiny_rows: bool = True) -> np.ndarray:
    """Rows of very different magnitudes, zeros, an all-zero row, exact rounding ties and tiny negatives (which
    round to -0.0 before the int8 cast). ``tiny_rows``: also rows whose largest |x| is below
    ``FP16_UNDERFLOW_AMAX`` (as small as a normal INT8 scale allows), which with FP16 rows asked for send the input
    through the quantizer instead of the compiled pass; without them every row is at least 10^-4."""
    rng = np.random.default_rng(seed)
    low = -6 if tiny_rows else -4
    x = (rng.standard_normal((n, width)) * 10.0 ** rng.uniform(low, 4, (n, 1))).astype(np.float32)
    x[rng.random((n, width)) < 0.2] = 0.0
    if not tiny_rows:  # a Gaussian row at 10^-4 can still have its largest |x| under the threshold by chance
        amax = np.abs(x).max(axis=1)
        x[(amax > 0) & (amax < 1e-4)] *= np.float32(1e3)
    x[1] = 0.0
    x[2] = np.arange(width, dtype=np.float32) - width / 2 + 0.5  # ties after scaling
    x[2, 0] = 127.0
    x[3] = -1e-7
    x[3, 0] = 1.0
    if tiny_rows:
        x[4, 0] = 2e-36  # largest |x| just above the smallest allowed (a normal INT8 scale)
    return x


def _reference_rows(x: np.ndarray, fraction: float) -> np.ndarray:
    """float32 ``[n, F]``: the independent reference quantizer's dequantized rows
    (``dste.reference.quantize_rows_reference``), FP16 on the rows ``quantize_rows_by_fraction`` picks."""
    chosen = np.zeros(x.shape[0], np.float32)
    chosen[quantize_rows_by_fraction(x, fraction).hi_rows] = 1.0
    return quantize_rows_reference(x, chosen, 0.5).dequantize(np.float32)


@pytest.fixture
def compiled_pass_only(monkeypatch):
    """Fail the test if ``fake_quantized_rows`` hands its input to the quantizer instead of its compiled pass."""
    import dste.gnn.execution as execution

    def refuse(*_args, **_kwargs):
        raise AssertionError("fake_quantized_rows went through quantize_rows_by_fraction, not its compiled pass")

    monkeypatch.setattr(execution, "quantize_rows_by_fraction", refuse)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_fake_quantized_rows_have_the_bits_of_the_dequantized_hybrid_rows(seed, fraction, compiled_pass_only):
    x = _awkward_rows(seed, tiny_rows=False)
    got = _bits(fake_quantized_rows(torch.from_numpy(x), fraction))  # the compiled pass (the fixture checks)
    assert np.array_equal(got, _bits(_reference_rows(x, fraction)))
    assert np.array_equal(got, _bits(quantize_rows_by_fraction(x, fraction).dequantize()))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fraction", FRACTIONS[1:])
def test_rows_below_the_fp16_underflow_amax_go_through_the_quantizer_and_stay_int8(seed, fraction):
    x = _awkward_rows(seed)
    amax = np.abs(x).max(axis=1)
    tiny = np.flatnonzero((amax > 0) & (amax < FP16_UNDERFLOW_AMAX))
    assert tiny.size >= 1
    assert not np.isin(tiny, quantize_rows_by_fraction(x, fraction).hi_rows).any()
    assert np.array_equal(_bits(fake_quantized_rows(torch.from_numpy(x), fraction)), _bits(_reference_rows(x, fraction)))


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_rows_without_features_quantize_to_rows_without_features(fraction):
    for rows in (5, 0):
        x = np.ones((rows, 0), np.float32)
        assert quantize_rows_by_fraction(x, fraction).dequantize().shape == (rows, 0)
        assert fake_quantized_rows(torch.from_numpy(x), fraction).shape == (rows, 0)


def test_rows_of_other_than_two_dimensions_are_refused_with_their_shape():
    for x in (np.ones(5, np.float32), np.ones((2, 2, 2), np.float32)):
        with pytest.raises(ValueError, match=r"2-D \[rows, features\], got shape"):
            quantize_rows_by_fraction(x, 0.05)
        with pytest.raises(ValueError, match=r"2-D \[rows, features\], got shape"):
            fake_quantized_rows(torch.from_numpy(x), 0.05)


def test_fake_quantized_rows_of_an_empty_or_single_row_input():
    for shape in ((0, 5), (3, 0), (1, 1), (1, 7)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for fraction in FRACTIONS:
            try:
                reference = quantize_rows_by_fraction(x, fraction).dequantize()
            except ValueError as refused:  # no columns to score rows by: the quantizer refuses, and so must this
                with pytest.raises(type(refused)):
                    fake_quantized_rows(torch.from_numpy(x), fraction)
                continue
            got = fake_quantized_rows(torch.from_numpy(x), fraction)
            assert tuple(got.shape) == shape and np.array_equal(_bits(got), _bits(reference))


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the reference's own NumPy warnings on NaN/Inf
@pytest.mark.parametrize(
    "poison, fraction, error",
    [
        ((5, 3, np.nan), 0.0, ValueError),
        ((5, 3, np.inf), 0.05, ValueError),
        ((7, slice(None), MIN_ROW_MAGNITUDE / 4), 0.0, DSTEFormatError),  # subnormal INT8 scale
        ((0, 0, 1e6), 1.0, DSTEFormatError),  # beyond float16 in an FP16 row
    ],
)
def test_input_the_quantizer_refuses_raises_what_the_quantizer_raises(poison, fraction, error):
    x = np.random.default_rng(1).standard_normal((20, 6)).astype(np.float32)
    row, column, value = poison
    x[row, column] = value
    with pytest.raises(error) as expected:
        quantize_rows_by_fraction(x, fraction)
    with pytest.raises(error) as got:
        fake_quantized_rows(torch.from_numpy(x), fraction)
    assert str(got.value) == str(expected.value)


def test_fake_quantized_rows_into_reused_work_buffers(compiled_pass_only):
    from dste.gnn.execution import WorkBuffers

    # one set of buffers through inputs of growing and shrinking sizes: every result has the quantizer's bits
    work = WorkBuffers()
    for seed, (n, width) in enumerate([(200, 48), (50, 48), (300, 64), (10, 3), (300, 64)]):
        x = _awkward_rows(seed, n, width, tiny_rows=False)
        for fraction in FRACTIONS:
            got = fake_quantized_rows(torch.from_numpy(x), fraction, work=work)
            assert got.data_ptr() == work.take("rounded", x.shape).data_ptr(), "the result is not the work buffer"
            assert np.array_equal(_bits(got), _bits(_reference_rows(x, fraction))), (n, width, fraction)


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_dequantized_hybrid_rows_equal_numpy_dequantization(fraction):
    rows = quantize_rows_by_fraction(_awkward_rows(5), fraction)
    assert np.array_equal(_bits(dequantized_hybrid_rows(rows)), _bits(rows.dequantize()))


# -- the whole forward pass ---------------------------------------------------------------------------------


def _reference_forward(inference: GraphInference, settings) -> np.ndarray:
    """The compressed GCN forward pass from public pieces: every quantized operand as HybridRows, dequantized
    with NumPy, the SpMM through ``dste.spmm`` on those HybridRows."""
    model = inference.model
    h = inference.features()
    for layer, setting in enumerate(settings):
        kept = inference.kept_channels(layer, setting.channel_sparsity)
        h = h if kept is None else np.ascontiguousarray(h[:, kept])
        a = inference.tensor(inference.adjacency(layer, setting.edge_sparsity))
        weight, effective = inference.weight(layer, 0, setting, kept)  # the kept rows as re-fitted
        if setting.fp32:
            message = torch.from_numpy(h) @ model.linears(layer)[0].weight.detach().t()
            out = spmm(a, message, backend="cpu")
        else:
            x_used = quantize_rows_by_fraction(h, setting.fp16_fraction).dequantize()
            # layer 0 multiplies the features by the [in, out] weight (hybrid_rows_product), later layers by
            # the weight in nn.Linear's [out, in] layout (the GEMM sums in another order: other float32 bits,
            # checked against float64 in test_host_weight_product_in_the_transposed_layout_is_the_float64_product)
            layout = weight.dense_effective() if layer == 0 else weight.dense_effective_transposed().t()
            message = torch.from_numpy(x_used) @ layout
            out = spmm(a, quantize_rows_by_fraction(message.numpy(), setting.fp16_fraction), backend="cpu")
        out = out + torch.from_numpy(model.bias(layer))
        h = (torch.relu(out) if layer < model.num_layers - 1 else out).numpy()
    return h


@pytest.fixture(scope="module")
def gcn_inference():
    graph = _graph(n=300, features=40, seed=4)
    model = make_model(graph, "gcn", hidden=16, seed=4)
    train_fp32(model, graph, epochs=30, lr=0.05, seed=4, patience=30)
    return GraphInference(CompressedModel(model), graph)


SETTINGS = [
    [LayerSetting(), LayerSetting()],
    [LayerSetting(edge_sparsity=0.5), LayerSetting(edge_sparsity=0.5)],
    [LayerSetting(fp16_fraction=0.05, channel_sparsity=0.5), LayerSetting(fp16_fraction=0.05, channel_sparsity=0.5)],
    [LayerSetting(fp16_fraction=1.0, channel_sparsity=0.25, edge_sparsity=0.75), FP32_SETTING],
    [FP32_SETTING, LayerSetting(weight_sparsity=0.5, fp16_fraction=0.05)],
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "/".join(
    "fp32" if x.fp32 else f"s{x.edge_sparsity}c{x.channel_sparsity}w{x.weight_sparsity}f{x.fp16_fraction}" for x in s))
def test_cpu_forward_has_the_bits_of_the_hybrid_rows_path(gcn_inference, settings):
    got = gcn_inference.forward(settings, backend="cpu").numpy()
    assert np.array_equal(_bits(got), _bits(_reference_forward(gcn_inference, settings)))


def test_cpu_forward_is_repeatable_and_leaves_the_stored_features_alone(gcn_inference):
    settings = [LayerSetting(channel_sparsity=0.5)] * 2
    first = gcn_inference.forward(settings).numpy().copy()
    rows = gcn_inference.stored_feature_rows(gcn_inference.kept_channels(0, 0.5), 0.0)
    q_before = rows.q.copy()
    second = gcn_inference.forward(settings).numpy()
    assert np.array_equal(_bits(first), _bits(second))
    assert np.array_equal(rows.q, q_before)


def test_cpu_forward_from_several_threads_at_once(gcn_inference):
    # each thread quantizes into its own work buffers: concurrent passes give the single-threaded bits
    import threading

    settings = [LayerSetting(fp16_fraction=0.05), LayerSetting(fp16_fraction=0.05)]
    expected = _bits(gcn_inference.forward(settings).numpy())
    results, errors = [], []

    def run():
        try:
            for _ in range(20):
                results.append(_bits(gcn_inference.forward(settings).numpy()))
        except Exception as error:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 60
    assert all(np.array_equal(got, expected) for got in results)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.5, 0.99])
def test_fp16_rows_with_many_tied_scores_are_the_quantizers(fraction):
    # constant rows score 0 and rows repeated score alike: most scores are tied, ties go to the lower row id
    rng = np.random.default_rng(9)
    base = rng.standard_normal((7, 16)).astype(np.float32)
    x = base[rng.integers(0, 7, 300)]
    x[rng.random(300) < 0.3] = 2.5
    reference = quantize_rows_by_fraction(x, fraction)
    got = fake_quantized_rows(torch.from_numpy(x), fraction)
    assert np.array_equal(_bits(got), _bits(reference.dequantize()))
    # tied rows are copies here, so the values cannot tell them apart: compare which rows are FP16
    assert np.array_equal(best_rows(_scores(x), reference.hi_rows.size), reference.hi_rows)


# -- the compiled pass: INT8 rows and the scores that choose the FP16 rows ----------------------------------------


def _scores(x: np.ndarray) -> np.ndarray:
    score = np.empty(x.shape[0])
    row_scores(x, np.abs(x).max(axis=1), np.arange(x.shape[0]), score)
    return score


def _rows_to_score(seed: int, n: int, width: int, kind: str) -> np.ndarray:
    """Activations of one kind: Gaussian, ReLU'd (a third zero), rows on the INT8 grid (INT8 error 0, so many
    scores near 0), Gaussian rows with magnitudes over nine decades (below float16's range), and rows with subnormal entries beside a
    row maximum just above the smallest allowed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)).astype(np.float32)
    if kind == "relu":
        x = np.maximum(x, 0.0)
    elif kind == "on the grid":
        x = rng.integers(-127, 128, (n, width)).astype(np.float32) * np.float32(0.25)
        x[: n // 2] += rng.standard_normal((n // 2, width)).astype(np.float32) * np.float32(1e-3)
    elif kind == "nine decades":
        x *= (10.0 ** rng.uniform(-6, 3, (n, 1))).astype(np.float32)
    elif kind == "subnormal":
        x *= np.float32(1e-38)
        x[:, 0] = np.float32(2e-36)
    x[rng.random(n) < 0.05] = 0.0  # all-zero rows score exactly 0
    return np.ascontiguousarray(x)


KINDS = ("gaussian", "relu", "on the grid", "nine decades", "subnormal")


def test_scores_follow_numpys_summation_order_at_every_width():
    """Every width up to 300 (one by one below 8, eight running sums up to 128, halves beyond) and a few wide ones,
    rows over 16 decades of magnitude: any other summation order rounds differently somewhere."""
    rng = np.random.default_rng(10)
    for width in [*range(1, 301), 383, 500, 1000, 1031]:
        n = BLOCK_ROWS + 37  # a full block of rows and a part-full one
        x = (rng.standard_normal((n, width)) * 10.0 ** rng.uniform(-8, 8, (n, 1))).astype(np.float32)
        assert np.array_equal(_scores(x), row_sensitivity(x)), width


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [1, 3, 7, 8, 17, 64, 129, 500])
def test_scores_and_int8_rows_have_the_reference_bits(kind, width):
    from dste.format.quant import device_int8_scale_of_amax

    x = _rows_to_score(31 + width, 300, width, kind)
    amax = np.abs(x).max(axis=1)
    out, score = np.empty_like(x), np.empty(x.shape[0])
    int8_rows(x, amax, out)
    assert np.array_equal(_scores(x), row_sensitivity(x))
    some = np.array([299, 3, 150, 3], dtype=np.int64)  # any rows, any order, repeated
    row_scores(x, amax, some, score)
    assert np.array_equal(score[:4], row_sensitivity(x)[some])
    # the INT8 rows: round(x * fp32(1 / s)) * s with the device scale, +0.0 for a zero, as the quantizer's rows
    scale = device_int8_scale_of_amax(amax)
    q = np.clip(np.rint(x * (np.float32(1.0) / scale)[:, None]), -127, 127).astype(np.int8)
    assert np.array_equal(_bits(out), _bits(q.astype(np.float32) * scale[:, None]))
    assert np.array_equal(_bits(out), _bits(quantize_rows_by_fraction(x, 0.0).dequantize()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [2, 8, 32, 64, 129])
@pytest.mark.parametrize("fraction", [0.001, 0.05, 0.3])
def test_fp16_rows_are_the_most_sensitive_rows(kind, width, fraction):
    x = _rows_to_score(100 + width, 2000, width, kind)
    n_hi = int(round(fraction * x.shape[0]))
    # reference: the documented rule's scores, a stable descending sort (ties by lower row id), the first n_hi
    top = np.sort(np.lexsort((np.arange(x.shape[0]), -row_sensitivity(x)))[:n_hi])
    # of which the quantizer keeps INT8 the rows whose largest |x| float16 would hold only in its subnormal range
    amax = np.abs(x).max(axis=1)
    expected = top[~((amax[top] > 0) & (amax[top] < FP16_UNDERFLOW_AMAX))]
    assert np.array_equal(quantize_rows_by_fraction(x, fraction).hi_rows, expected)
    assert np.array_equal(best_rows(_scores(x), n_hi), top)
    if n_hi:
        assert np.array_equal(fp16_rows(x, amax, n_hi), top)
    got = fake_quantized_rows(torch.from_numpy(x), fraction)
    assert np.array_equal(_bits(got), _bits(quantize_rows_by_fraction(x, fraction).dequantize()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [1, 3, 8, 17, 64, 130, 500])
def test_score_bounds_hold_every_exact_score(kind, width):
    x = _rows_to_score(width, 600, width, kind)
    exact = row_sensitivity(x)  # the documented rule, whole-matrix NumPy
    lower, upper = np.empty(600), np.empty(600)
    score_bounds(x, np.abs(x).max(axis=1), lower, upper)
    assert (lower <= exact).all() and (exact <= upper).all()
    zero_rows = ~x.any(axis=1)
    assert zero_rows.any() and (lower[zero_rows] == 0).all() and (upper[zero_rows] == 0).all()
    if kind in ("gaussian", "relu") and width >= 8:  # tight enough to spare most rows their exact score
        assert np.median((upper - lower)[exact > 0] / exact[exact > 0]) < 1e-2


def test_score_bounds_of_rows_whose_float32_sums_overflow_rule_nothing_out():
    """|x| near 1e30: the float32 squares overflow; such a row stays a candidate (lower 0, upper inf)."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[::7] *= np.float32(1e30)
    lower, upper = np.empty(300), np.empty(300)
    score_bounds(x, np.abs(x).max(axis=1), lower, upper)
    exact = row_sensitivity(x)
    assert (lower <= exact).all() and (exact <= upper).all() and np.isinf(upper[::7]).all()
    for count in (1, 15, 150):
        expected = np.sort(np.lexsort((np.arange(300), -exact))[:count])
        assert np.array_equal(fp16_rows(x, np.abs(x).max(axis=1), count), expected)


def test_fp16_rows_among_scores_a_rounding_apart():
    # copies of one row with one entry nudged by an ulp: scores differ in their last bits
    rng = np.random.default_rng(12)
    base = rng.standard_normal(64).astype(np.float32)
    x = np.repeat(base[None, :], 500, axis=0)
    x[:, 5] = np.nextafter(x[:, 5], np.float32(np.inf) * np.sign(x[:, 5]))  # one ulp larger in magnitude
    x[::3, 7] = np.nextafter(x[::3, 7], np.float32(0))
    x = np.vstack([x, rng.standard_normal((1500, 64)).astype(np.float32)])
    for fraction in (0.01, 0.2, 0.26):
        expected = np.sort(np.lexsort((np.arange(x.shape[0]), -row_sensitivity(x)))[: int(round(fraction * 2000))])
        got = fake_quantized_rows(torch.from_numpy(x), fraction)
        assert np.array_equal(_bits(got), _bits(quantize_rows_by_fraction(x, fraction).dequantize())), fraction
        assert np.array_equal(best_rows(_scores(x), expected.size), expected), fraction
        assert np.array_equal(fp16_rows(x, np.abs(x).max(axis=1), expected.size), expected), fraction


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_fake_quantized_rows_of_a_relu_output_with_zeros_of_either_sign(fraction):
    # ReLU output: zeros of either sign, all-zero rows, rows of -0.0 only (the row maxima come from bit patterns
    # with the sign cleared: -0.0's is 0); a NaN row is refused as the quantizer refuses it
    x = np.maximum(_awkward_rows(7, tiny_rows=False), 0.0)
    x[x == 0] = np.where(np.random.default_rng(3).random(np.count_nonzero(x == 0)) < 0.5, -0.0, 0.0)
    x[8] = -0.0
    x[9] = 0.0
    amax = np.abs(x).max(axis=1)
    assert not ((amax > 0) & (amax < FP16_UNDERFLOW_AMAX)).any()  # ReLU leaves no row the compiled pass hands on
    got = fake_quantized_rows(torch.from_numpy(x), fraction)
    assert np.array_equal(_bits(got), _bits(_reference_rows(x, fraction)))
    x[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        fake_quantized_rows(torch.from_numpy(x), fraction)


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.6, 1.0])
def test_hybrid_rows_product_dequantizes_every_block_as_the_rows_do(monkeypatch, fraction):
    from dste.gnn import execution

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((300, 24)) * 10.0 ** rng.uniform(-3, 2, (300, 1))).astype(np.float32)
    x[rng.random((300, 24)) < 0.2] = 0.0
    x[200:260, 0] = 500.0  # one outlier per row: rows that score high (at share 1 every block is all FP16)
    rows = quantize_rows_by_fraction(x, fraction)
    monkeypatch.setattr(execution, "FEATURE_BLOCK_BYTES", 4 * 24 * 37)  # blocks of 37 rows, the last one short
    identity = torch.eye(24)
    # a product with the identity is exact, so equal bits mean equal dequantized values in every block
    expected = torch.mm(torch.from_numpy(rows.dequantize()), identity)
    work = execution.WorkBuffers()
    for buffers in (None, work, work):  # a fresh block buffer, then one reused (its old contents never leak)
        assert np.array_equal(_bits(execution.hybrid_rows_product(rows, identity, buffers)), _bits(expected))
    monkeypatch.setattr(execution, "FEATURE_BLOCK_BYTES", 1 << 20)  # one block: the whole-matrix product
    assert np.array_equal(_bits(execution.hybrid_rows_product(rows, identity, work)), _bits(expected))
    weight = torch.from_numpy(np.random.default_rng(12).standard_normal((24, 5)).astype(np.float32))
    reference = rows.dequantize().astype(np.float64) @ weight.numpy().astype(np.float64)
    # 24 float32 products and sums: rounding below 24 * 2^-24 of the largest partial sum
    np.testing.assert_allclose(execution.hybrid_rows_product(rows, weight).numpy(), reference,
                               rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("shape", [(2708, 64, 7), (5000, 64, 8), (300, 16, 3), (64, 500, 64)])
def test_host_weight_product_in_the_transposed_layout_is_the_float64_product(shape):
    """The later layers' host product ``h @ W`` through ``dense_effective_transposed().t()``: float32 sums of ``K``
    products, in any order, err by at most ``gamma_K = K u / (1 - K u)`` of ``sum |h| |W|`` (Higham, Accuracy
    and Stability of Numerical Algorithms, 2nd ed., section 3.1), ``u = 2^-24``; the same bound holds for the
    ``[in, out]`` layout, whose bits may differ."""
    n, k, m = shape
    rng = np.random.default_rng(k + m)
    h = np.maximum(rng.standard_normal((n, k)), 0.0).astype(np.float32)
    weight = CompressedWeight(torch.from_numpy(rng.standard_normal((k, m)).astype(np.float32)), sparsity=0.3)
    effective = weight.effective().numpy().astype(np.float64)
    transposed = weight.dense_effective_transposed()
    assert transposed.is_contiguous() and np.array_equal(transposed.t().numpy(), weight.dense_effective().numpy())
    got = (torch.from_numpy(h) @ transposed.t()).numpy().astype(np.float64)
    reference = h.astype(np.float64) @ effective
    gamma = k * 2.0 ** -24 / (1.0 - k * 2.0 ** -24)
    assert np.all(np.abs(got - reference) <= gamma * (np.abs(h.astype(np.float64)) @ np.abs(effective)))


def test_best_rows_are_a_stable_descending_sorts_first_rows():
    rng = np.random.default_rng(13)
    for n in (1, 2, 7, 300, 1000):
        for values in (rng.standard_normal(n), np.round(rng.standard_normal(n), 1), np.zeros(n),
                       np.sort(rng.random(n)), np.sort(rng.random(n))[::-1].copy()):
            for count in {1, max(1, n // 20), max(1, n // 2), n}:
                expected = np.sort(np.argsort(-values, kind="stable")[:count])
                assert np.array_equal(best_rows(values, count), expected), (n, count)


def test_float16_rounding_is_the_conversions_for_every_float16_value_its_neighbours_and_ties():
    """Against torch's float32 -> float16 -> float32 (and NumPy's): every finite float16 value, the float32 values
    next to each, the midpoints between neighbours (ties to even), float32 subnormals, both zeros, random bit
    patterns within float16's range; signs kept (-0.0 for a negative value that rounds to zero)."""
    rng = np.random.default_rng(22)
    halves = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    halves = halves[np.isfinite(halves)]
    ordered = np.sort(halves[halves >= 0]).astype(np.float64)
    midpoints = ((ordered[:-1] + ordered[1:]) / 2).astype(np.float32)
    patterns = rng.integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([
        halves, np.nextafter(halves, np.float32(np.inf)), np.nextafter(halves, np.float32(-np.inf)), midpoints,
        -midpoints, np.array([0.0, -0.0, 1e-45, -1e-45, 2.0 ** -25, -(2.0 ** -25), 3 * 2.0 ** -25], np.float32),
        patterns[np.isfinite(patterns)],
    ]).astype(np.float32)
    values = values[np.abs(values) <= 65504]
    values = np.concatenate([values, np.zeros((-values.size) % 64, np.float32)])
    x = values.reshape(-1, 64).copy()
    out = np.full_like(x, np.nan)
    rows = np.arange(x.shape[0], dtype=np.int64)
    float16_rows(x, rows, out)
    assert np.array_equal(_bits(out), _bits(torch.from_numpy(x).to(torch.float16).to(torch.float32).numpy()))
    assert np.array_equal(_bits(out), _bits(x.astype(np.float16).astype(np.float32)))
    some = np.full_like(x[:4], 7.0)
    float16_rows(x[:4].copy(), np.array([2], dtype=np.int64), some)  # only the rows named are written
    assert (some[[0, 1, 3]] == 7.0).all()


def test_float16_widening_is_the_conversions_for_every_float16_bit_pattern():
    """``dequantize_rows`` widens FP16 rows from their bit patterns (Numba has no float16): every one of the 65,536
    patterns, subnormals, both zeros and both infinities included, against torch's and NumPy's widening (a NaN
    stays a NaN; the quantizer stores none)."""
    patterns = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).reshape(-1, 64)
    n = patterns.shape[0]
    out = np.full((n, 64), 7.0, np.float32)
    dequantize_rows(np.zeros((n, 64), np.int8), np.zeros(n, np.float32), np.arange(n, dtype=np.int32), patterns, 0,
                    out)
    halves = patterns.view(np.float16)
    nan = np.isnan(halves)
    for expected in (torch.from_numpy(halves).to(torch.float32).numpy(), halves.astype(np.float32)):
        assert np.array_equal(_bits(out)[~nan], _bits(expected)[~nan])
    assert np.isnan(out[nan]).all()


def test_dequantized_rows_of_any_block_are_the_rows_dequantization():
    rows = quantize_rows_by_fraction(_awkward_rows(5, n=300), 0.2)
    expected = rows.dequantize()
    for first, count in ((0, 300), (0, 1), (17, 100), (299, 1), (150, 150)):
        out = np.full((count, expected.shape[1]), np.nan, np.float32)
        dequantize_rows(rows.q, rows.scale, rows.hi_rows, rows.hi.view(np.uint16), first, out)
        assert np.array_equal(_bits(out), _bits(expected[first:first + count])), (first, count)


def test_compiling_the_passes_leaves_the_forward_passs_signature_compiled():
    from dste.gnn.execution import compile_quantization_passes
    from dste.gnn.row_quant import fake_quantize

    assert compile_quantization_passes() >= 0.0
    # the signature the forward pass calls with (float32 rows, int count, float limits) is the one compiled
    assert any(str(sig[0]) == "array(float32, 2d, C)" and str(sig[1]) == "int64" for sig in fake_quantize.signatures)
    # and the feature rows' dequantization's: HybridRows' arrays, a block of the float32 work buffer
    assert any([str(t) for t in sig] == ["array(int8, 2d, C)", "array(float32, 1d, C)", "array(int32, 1d, C)",
                                         "array(uint16, 2d, C)", "int64", "array(float32, 2d, C)"]
               for sig in dequantize_rows.signatures)
