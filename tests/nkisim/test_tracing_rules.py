"""What a kernel may do with values that exist only at run time (loop indices, registers), where an explicit
address may place a tensor, and the launch and Python-subset rules of ``nki.jit``: each documented-illegal use is
refused naming its rule, and the documented way runs and matches NumPy."""

import numpy as np
import pytest

import dste.nkisim as sim
from dste.nkisim import isa as nisa
from dste.nkisim import language as nl
from dste.nkisim.errors import ConstraintError, KernelSignatureError

BLOCKS, ROWS, COLS = 4, 128, 8


def _block(tensor, index):
    """Row block ``index`` (a loop index register) of a [BLOCKS * ROWS, COLS] HBM tensor, as the migration guide
    reads a loop variable: a runtime offset through .ap(scalar_offset=...), scaled by the stride of dim 0 of the
    tensor it is called on (viewed as [BLOCKS, ROWS * COLS], one block per unit)."""
    blocks = tensor.reshape((BLOCKS, ROWS * COLS))
    return blocks.ap([[ROWS * COLS, 1], [COLS, ROWS], [1, COLS]], offset=0, scalar_offset=index, indirect_dim=0)


def _looped(body_of):
    def kernel(a):
        out = nl.ndarray(a.shape, a.dtype, buffer=nl.shared_hbm)
        tile = nl.ndarray((ROWS, COLS), nl.float32, buffer=nl.sbuf)
        doubled = nl.ndarray((ROWS, COLS), nl.float32, buffer=nl.sbuf)
        nl.fori_loop(0, BLOCKS, body_of(a, out, tile, doubled))
        return out

    return kernel


def test_a_fori_loop_index_read_as_a_scalar_offset_runs():
    def body_of(a, out, tile, doubled):
        def body(i):
            nisa.dma_copy(dst=tile, src=_block(a, i))
            nisa.tensor_scalar(dst=doubled, data=tile, op0=nl.multiply, operand0=2.0)
            nisa.dma_copy(dst=_block(out, i), src=doubled)

        return body

    a = np.random.default_rng(0).standard_normal((BLOCKS * ROWS, COLS)).astype(np.float32)
    np.testing.assert_array_equal(sim.simulate(_looped(body_of))(a), 2 * a)


@pytest.mark.parametrize("misuse", ["slice", "if", "range", "int"])
def test_python_cannot_compute_or_branch_on_a_loop_index(misuse):
    """Before, the index was a Python int: such kernels ran here, with plausible numbers, and cannot compile."""
    def body_of(a, out, tile, doubled):
        def body(i):
            if misuse == "slice":
                nisa.dma_copy(dst=tile, src=a[i * ROWS:(i + 1) * ROWS, :])
            elif misuse == "if":
                if i == 0:
                    nisa.memset(dst=tile, value=0.0)
            elif misuse == "range":
                for _ in range(i):
                    pass
            else:
                nl.ndarray((int(i) + 1, COLS), nl.float32)

        return body

    with pytest.raises(KernelSignatureError, match="rule register.python-value"):
        sim.simulate(_looped(body_of))(np.zeros((BLOCKS * ROWS, COLS), np.float32))


def test_a_loop_body_returns_nothing_and_writes_no_loop_index():
    def returns(a, out, tile, doubled):
        return lambda i: 5

    def writes(a, out, tile, doubled):
        return lambda i: nisa.register_move(i, 3)

    zeros = np.zeros((BLOCKS * ROWS, COLS), np.float32)
    with pytest.raises(ConstraintError, match="rule nl.fori_loop.body-return"):
        sim.simulate(_looped(returns))(zeros)
    with pytest.raises(ConstraintError, match="rule nl.loop.index-read-only"):
        sim.simulate(_looped(writes))(zeros)


@pytest.mark.parametrize("edge, accepted", [
    ("same loop", True), ("from the enclosing scope", True), ("out of the loop", False), ("across two loops", False),
])
def test_depends_on_keeps_to_the_dynamic_loop_nesting(edge, accepted):
    # "both instructions must sit at the same dynamic-loop nesting (or the producer in an enclosing scope). You cannot
    # wire an edge into or out of a dynamic loop" (nki/api/nki/isa/__init__.py L158-161, NkiInstruction.depends_on)
    def body():
        t = nl.ndarray((128, 4), nl.float32, buffer=nl.sbuf)
        before = nisa.memset(dst=t, value=0.0)
        inside = []

        def loop_body(i):
            handle = nisa.tensor_scalar(dst=t, data=t, op0=nl.add, operand0=1.0)
            if edge == "same loop" and inside:
                handle.depends_on(inside[-1])
            if edge == "from the enclosing scope":
                handle.depends_on(before)
            inside.append(handle)

        def other_loop_body(i):
            nisa.tensor_copy(dst=t, src=t).depends_on(inside[-1])

        nl.fori_loop(0, 2, loop_body)
        if edge == "across two loops":
            nl.fori_loop(0, 1, other_loop_body)
        after = nisa.tensor_copy(dst=t, src=t)
        if edge == "out of the loop":
            after.depends_on(inside[-1])

    if accepted:
        sim.run_kernel(body, (), {})
    else:
        with pytest.raises(ConstraintError, match=r"depends_on\(tensor_scalar\): the producer sits in 1 dynamic "
                                                  r"loop.*rule isa.depends_on.loops"):
            sim.run_kernel(body, (), {})


def test_a_dynamic_range_index_is_a_read_only_register():
    # "the induction variable is now a VirtualRegister (previously a bare scalar)" (release notes L300, NKI 0.4.0);
    # "Do not write to it or perform Python arithmetic on it" (nki/migration/index.rst L132-133)
    def stored(out):
        t = nl.ndarray((1, 1), nl.int32, buffer=nl.sbuf)
        for i in nl.dynamic_range(3):
            nisa.register_store(dst=t, src=i)
        nisa.dma_copy(dst=out, src=t)

    def arithmetic(a):
        t = nl.ndarray((1, 4), nl.float32, buffer=nl.sbuf)
        for i in nl.dynamic_range(2):
            nisa.dma_copy(dst=t, src=a[i * 2:i * 2 + 1, :])

    def written(a):
        for i in nl.dynamic_range(2):
            nisa.register_move(i, 5)

    def edge_out(a):  # a dynamic_range loop is a dynamic loop for NkiInstruction.depends_on too
        t = nl.ndarray((1, 4), nl.float32, buffer=nl.sbuf)
        for i in nl.dynamic_range(2):
            inside = nisa.memset(dst=t, value=0.0)
        nisa.memset(dst=t, value=1.0).depends_on(inside)

    out = np.zeros((1, 1), np.int32)
    with pytest.warns(DeprecationWarning, match="dynamic_range"):
        sim.run_kernel(stored, (out,), {})
        with pytest.raises(KernelSignatureError, match="rule register.python-value"):
            sim.run_kernel(arithmetic, (np.zeros((4, 4), np.float32),), {})
        # "Such writes now raise AssertionError at trace time" (release notes, NKI 0.4.0 Bug Fixes)
        with pytest.raises(AssertionError, match="rule nl.loop.index-read-only"):
            sim.run_kernel(written, (np.zeros((4, 4), np.float32),), {})
        with pytest.raises(ConstraintError, match="rule isa.depends_on.loops"):
            sim.run_kernel(edge_out, (np.zeros((4, 4), np.float32),), {})
    assert out[0, 0] == 2


@pytest.mark.parametrize("row, dynamic", [(8, True), (40, True), (8, False)])
def test_dma_transpose_skips_a_scalar_offset_out_of_bounds(row, dynamic):
    # "dma_transpose with scalar_offset now supports oob_mode.skip for runtime indirect indexing" (release notes L154,
    # NKI 0.5.0); skip stays "Only valid when src uses indirect indexing" (nki/api/nki/isa/__init__.py L1016)
    x = np.arange(64 * 64, dtype=np.float32).reshape(64, 64).astype(nl.bfloat16)

    def kernel(src, out):
        start = nisa.register_alloc(row)
        d = nl.ndarray((64, 32), nl.bfloat16, buffer=nl.sbuf)
        nisa.memset(dst=d, value=-1.0)
        view = src.ap(pattern=[[64, 32], [1, 64]], offset=0, scalar_offset=start if dynamic else None, indirect_dim=0)
        nisa.dma_transpose(dst=d, src=view, oob_mode=nisa.oob_mode.skip)
        nisa.dma_copy(dst=out, src=d)

    out = np.zeros((64, 32), nl.bfloat16)
    if not dynamic:
        with pytest.raises(ConstraintError, match="only valid with indirect indexing.*rule dma_copy.oob"):
            sim.run_kernel(kernel, (x, out), {})
        return
    sim.run_kernel(kernel, (x, out), {})
    if row + 32 <= 64:
        np.testing.assert_array_equal(out, x[row:row + 32].T)
    else:  # rows 40..71 of a 64-row tensor: the transfer is skipped and dst keeps its memset
        np.testing.assert_array_equal(out, np.full((64, 32), -1.0, nl.bfloat16))


def test_a_register_is_read_by_instructions_not_by_python():
    def converted():
        register = nisa.register_alloc(3)
        nl.ndarray((int(register), 4), nl.float32)

    with pytest.raises(KernelSignatureError, match="rule register.python-value"):
        sim.run_kernel(converted, (), {})

    def counted_down(out):
        count = nl.ndarray((1, 1), nl.int32, buffer=nl.sbuf)
        nisa.memset(dst=count, value=3)
        one = nl.ndarray((1, 1), nl.int32, buffer=nl.sbuf)
        nisa.memset(dst=one, value=1)
        register = nisa.register_alloc(1)
        nisa.register_load(register, count)
        while register:  # deprecated in NKI 0.6, still run
            nisa.tensor_tensor(dst=count, data1=count, data2=one, op=nl.subtract)
            nisa.register_load(register, count)
        nisa.dma_copy(dst=out, src=count)

    out = np.ones((1, 1), np.int32)
    with pytest.warns(DeprecationWarning, match="while reg"):
        sim.run_kernel(counted_down, (out,), {})
    assert out[0, 0] == 0


@pytest.mark.parametrize("shape, dtype, buffer, address, accepted", [
    ((128, 512), nl.bfloat16, nl.psum, (0, 3 * 2048), True),  # the migration guide's own example: bank 3
    ((128, 512), nl.float32, nl.psum, (0, 1024), True),  # 1,024 fp32 elements = 4 KiB: bank 2 read as elements
    ((128, 128), nl.float32, nl.psum, (0, 100), False),  # a bank start neither as bytes nor as elements
    ((128, 512), nl.float32, nl.psum, (0, 4608), False),  # not a bank start as bytes, past PSUM's 16 KiB as elements
    ((128, 64), nl.float32, nl.sbuf, (64, 0), False),  # partitions 64-191
    ((64, 64), nl.float32, nl.sbuf, (64, 0), True),
    ((128, 4), nl.float32, nl.sbuf, (1, 0), False),  # partitions 1-128: one past the 128 (pmax)
    ((127, 4), nl.float32, nl.sbuf, (1, 0), True),  # partitions 1-127
    ((128, 64), nl.float32, nl.sbuf, (0, 10_000_000), False),  # past a partition's bytes
])
def test_an_explicit_address_stays_inside_its_buffer(shape, dtype, buffer, address, accepted):
    def allocate():
        nl.ndarray(shape, dtype, buffer=buffer, address=address)

    if accepted:
        sim.run_kernel(allocate, (), {})
    else:
        with pytest.raises(ConstraintError, match="rule nl.ndarray.address"):
            sim.run_kernel(allocate, (), {})


def test_psum_tensors_placed_on_one_bank_share_it():
    # "the following code will allocate a PSUM tensor on bank 3: ... address=(0, bank_id * PSUM_BANK_SIZE)"
    # (nki/migration/index.rst L1108-1121): nine tensors placed on banks 0-7 occupy the 8 banks (architecture guide
    # L789-791), while nine placed by the compiler need nine banks
    def body(placed):
        tensors = [nl.ndarray((128, 512), nl.float32, buffer=nl.psum,
                              address=(0, (i % 8) * 2048) if placed else None) for i in range(9)]
        for _ in range(2):  # every tensor used twice: all nine are live at once
            for t in tensors:
                nisa.memset(dst=t, value=0.0)

    sim.run_kernel(lambda: body(True), (), {})
    with pytest.raises(sim.CapacityError, match="live PSUM allocations need 18432 B per partition"):
        sim.run_kernel(lambda: body(False), (), {})


def test_sbuf_tensors_placed_at_one_address_share_its_bytes():
    # nki/migration/index.rst L1093-1103 places tensors by (partition_offset, free_offset): two 120,000 B tiles at
    # (0, 0) occupy 120,000 B of a trn2 partition (212,984 B); one placed and one left to the compiler need 240,000 B
    def body(second_placed):
        a = nl.ndarray((128, 30000), nl.float32, buffer=nl.sbuf, address=(0, 0))
        b = nl.ndarray((128, 30000), nl.float32, buffer=nl.sbuf, address=(0, 0) if second_placed else None)
        nisa.memset(dst=b, value=0.0)
        nisa.memset(dst=a[:, 0:8], value=1.0)

    sim.run_kernel(lambda: body(True), (), {}, target="trn2")
    with pytest.raises(sim.CapacityError, match="live SBUF allocations need 240000 B per partition"):
        sim.run_kernel(lambda: body(False), (), {}, target="trn2")

    def disjoint():  # (0, 30000): bytes 30000.. or, read as fp32 elements, bytes 120000..: the stricter reading counts
        a = nl.ndarray((128, 30000), nl.float32, buffer=nl.sbuf, address=(0, 0))
        b = nl.ndarray((128, 30000), nl.float32, buffer=nl.sbuf, address=(0, 30000))
        nisa.memset(dst=a, value=1.0)
        nisa.memset(dst=b, value=1.0)

    with pytest.raises(sim.CapacityError, match="live SBUF allocations need 240000 B per partition"):
        sim.run_kernel(disjoint, (), {}, target="trn2")


@pytest.mark.parametrize("lane, accepted", [(16, False), (32, True), (96, True)])
def test_an_explicit_address_places_the_tensor_on_its_partition_lane(lane, accepted):
    # "the partition offset corresponds to a physical partition lane on the hardware" (nki/migration/index.rst
    # L1097-1099), and an operand of at most 32 partitions starts at lane 0/32/64/96 (architecture guide L711-713)
    def body():
        x = nl.ndarray((32, 64), nl.float32, buffer=nl.sbuf, address=(lane, 0))
        nisa.memset(dst=x, value=1.0)
        y = nl.ndarray((32, 64), nl.float32, buffer=nl.sbuf)
        nisa.tensor_copy(dst=y, src=x)

    if accepted:
        sim.run_kernel(body, (), {})
    else:
        with pytest.raises(ConstraintError, match=r"dst .* starts at partition 16; .* may start at 0, 32, 64, 96.*"
                                                  r"rule isa.start_partition"):
            sim.run_kernel(body, (), {})


def _copy_kernel(a):
    out = nl.ndarray(a.shape, a.dtype, buffer=nl.shared_hbm)
    nl.store(out, nl.load(a))
    return out


def test_two_logical_cores_exist_on_trn2_not_trn1():
    a = np.ones((128, 4), np.float32)
    outputs, _ = sim.run_kernel(_copy_kernel, (a,), {}, lnc=2, target="trn2")
    np.testing.assert_array_equal(outputs, a)
    with pytest.raises(ConstraintError, match="rule kernel.lnc.trn2-up"):
        sim.run_kernel(_copy_kernel, (a,), {}, lnc=2, target="trn1")


def _keyword_only_kernel(a, *, scale=1.0):
    return _copy_kernel(a)


def _is_kernel(a, b=None):
    if b is None:
        b = a
    return _copy_kernel(b)


def test_an_is_operator_is_reported_at_its_line_in_the_file():
    line = _is_kernel.__code__.co_firstlineno + 1  # `if b is None:`
    with pytest.raises(ConstraintError, match=rf"test_tracing_rules.py line {line}: the 'is'"):
        sim.simulate(_is_kernel)(np.ones((128, 4), np.float32))


@pytest.mark.parametrize("kernel, what", [(_keyword_only_kernel, "keyword-only"), (_is_kernel, "'is'")])
def test_a_kernel_keeps_to_the_python_nki_compiles(kernel, what):
    with pytest.raises(ConstraintError, match=f"{what}.*rule kernel.signature.python-subset"):
        sim.simulate(kernel)(np.ones((128, 4), np.float32))


def test_bn_stats_fmax_is_the_documented_512():
    assert nl.tile_size.bn_stats_fmax == 512


def test_a_tensor_declared_in_a_loop_body_ends_with_its_iteration():
    """The migration guide: tensors declared inside a body function cannot be referenced outside the loop, and
    state crossing iterations lives in SBUF or HBM tensors declared before it. Both ran here."""
    def escapes(out):
        kept = []

        def body(i):
            tile = nl.ndarray((ROWS, COLS), nl.float32, buffer=nl.sbuf)
            nisa.memset(dst=tile, value=1.0)
            kept.append(tile)

        nl.fori_loop(0, 2, body)
        nisa.dma_copy(dst=out, src=kept[-1])  # after the loop

    def carried(out):
        previous = []

        def body(i):
            tile = nl.ndarray((ROWS, COLS), nl.float32, buffer=nl.sbuf)
            if previous:
                nisa.tensor_scalar(dst=tile, data=previous[-1], op0=nl.add, operand0=1.0)  # the last iteration's
            else:
                nisa.memset(dst=tile, value=0.0)
            previous.append(tile)

        nl.fori_loop(0, 3, body)

    out = np.zeros((ROWS, COLS), np.float32)
    for kernel in (escapes, carried):
        with pytest.raises(ConstraintError, match="rule nl.loop.body-tensor-scope"):
            sim.run_kernel(kernel, (out,), {})

    def declared_before(out):
        acc = nl.ndarray((ROWS, COLS), nl.float32, buffer=nl.sbuf)
        nisa.memset(dst=acc, value=0.0)
        def body(i):
            nisa.tensor_scalar(dst=acc, data=acc, op0=nl.add, operand0=1.0)  # a lambda would return its handle

        nl.fori_loop(0, 3, body)
        nisa.dma_copy(dst=out, src=acc)

    sim.run_kernel(declared_before, (out,), {})
    np.testing.assert_array_equal(out, np.full((ROWS, COLS), 3.0, np.float32))


def test_nki_jit_ignores_mode_and_refuses_platform_target():
    # release notes, NKI 0.3.0: mode is "Deprecated and ignored"; platform_target is deprecated and "a breaking change"
    with pytest.warns(DeprecationWarning, match="mode are deprecated and ignored"):
        kernel = sim.jit(mode="auto")(_copy_kernel)
    a = np.ones((128, 4), np.float32)
    np.testing.assert_array_equal(kernel(a), a)
    with pytest.raises(KernelSignatureError, match="platform_target no longer exist"):
        sim.jit(platform_target="trn2")


def test_a_kernel_may_return_a_list_of_outputs():
    # AWS's mlp kernel is annotated to return list[nl.ndarray]
    def two_copies(a):
        first = nl.ndarray(a.shape, a.dtype, buffer=nl.shared_hbm)
        second = nl.ndarray(a.shape, a.dtype, buffer=nl.shared_hbm)
        t = nl.load(a)
        nl.store(first, t)
        nl.store(second, t)
        return [first, second]

    a = np.arange(512, dtype=np.float32).reshape(128, 4)
    out = sim.jit(two_copies)(a)
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_array_equal(out[1], a)


def test_nkiobject_subclasses_get_the_compilers_initializer():
    # nki-language-guide.rst, Class Support: "@dataclass decorator is optional ... The compiler will create the
    # initializer functions __init__ and __post_init__, if they are not provided by the user"
    import dataclasses

    @dataclasses.dataclass
    class C(nl.NKIObject):
        x: int
        y: bool = False

        def toggle(self):
            self.y = not self.y

    class Plain(nl.NKIObject):  # no annotations, no decorator: AWS's attention_cte SectionParams
        section_idx = None
        size = 4

        def __post_init__(self):
            self.double = self.size * 2

    c = C(1)
    c.toggle()
    assert (c.x, c.y) == (1, True) and C().x is None
    p = Plain(section_idx=3)
    assert (p.section_idx, p.size, p.double) == (3, 4, 8)
    assert Plain(1, 5).double == 10
    with pytest.raises(TypeError, match="unexpected keyword argument.*its fields are section_idx, size"):
        Plain(sections=2)

    @dataclasses.dataclass(frozen=True)
    class Frozen(nl.NKIObject):  # AWS's rmsnorm_quant and rotational_topk configs are frozen dataclasses
        lower_bound: float = 0.0
        tags: list = dataclasses.field(default_factory=list)

    f = Frozen(0.5)
    assert (f.lower_bound, f.tags) == (0.5, []) and Frozen().tags is not Frozen().tags
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.lower_bound = 1.0

    class Own(nl.NKIObject):  # a class's own __init__ is kept
        def __init__(self, n):
            self.n = n + 1

    assert Own(1).n == 2


def test_a_jit_kernel_called_from_a_running_kernel_is_refused():
    # nki/migration/index.rst, "Remove nki.jit decorator on sub-kernels": the inner launch used to run on its own, one
    # core and no program id, inside a kernel[2] launch (AWS's moe_cte calls its jitted bwmm kernels so)
    inner = sim.jit(_copy_kernel)

    def outer(a):
        return inner(a)

    with pytest.raises(ConstraintError, match=r"_copy_kernel is an nki.jit kernel called from inside a running kernel"
                                              r".*kernel.jit.sub-kernel"):
        sim.run_kernel(outer, (np.ones((128, 4), np.float32),), {}, lnc=2, target="trn2")

    def plain_call(a):  # the sub-kernel as a plain function is the documented way
        return _copy_kernel(a)

    out, _ = sim.run_kernel(plain_call, (np.ones((128, 4), np.float32),), {})
    np.testing.assert_array_equal(out, 1.0)


def test_a_kernel_may_return_a_view_of_its_argument():
    # AWS's attention_block_tkg returns its cache argument reshaped; it was refused on one core only
    def kernel(cache):
        t = nl.load(cache[0:1, :])
        nl.store(cache[1:2, :], t)
        return cache.reshape((4, 4))

    cache = np.arange(16, dtype=np.float32).reshape(2, 8)
    for lnc in (1, 2):
        arg = cache.copy()
        out, _ = sim.run_kernel(kernel, (arg,), {}, lnc=lnc, target="trn2")
        np.testing.assert_array_equal(out, np.tile(cache[0], 2).reshape(4, 4))


def _scheduled_kernel(t):
    """The scheduling how-to guide's first example (nki/guides/how-to-scheduling-apis.rst), its output in shared HBM."""
    x = nl.ndarray(t.shape, t.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=x, src=t)
    a = nl.ndarray(t.shape, t.dtype, buffer=nl.sbuf)
    b = nl.ndarray(t.shape, t.dtype, buffer=nl.sbuf)
    c = nl.ndarray(t.shape, t.dtype, buffer=nl.sbuf)
    nisa.reciprocal(dst=a, data=x, name="recip")
    nisa.tensor_scalar(dst=b, data=x, op0=nl.add, operand0=1.0, name="plus1")
    nisa.tensor_tensor(dst=c, data1=a, data2=b, op=nl.add)
    out = nl.ndarray(t.shape, t.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=c)
    return out


def test_with_schedule_takes_the_guides_edges_and_checks_their_names():
    t = np.full((128, 4), 2.0, np.float32)
    kernel = sim.jit(_scheduled_kernel)
    for schedule in ([("plus1", "recip")], [("plus1", ["recip"])]):
        np.testing.assert_array_equal(kernel.with_schedule(schedule)(t), 3.5)
        np.testing.assert_array_equal(kernel.with_schedule(schedule)[2](t), 3.5)
    with pytest.raises(ConstraintError, match=r"names 'exp', which no instruction .*\(named: plus1, recip\).*"
                                              r"kernel.schedule"):
        kernel.with_schedule([("exp", "recip")])(t)
    with pytest.raises(ConstraintError, match=r"the edges make a cycle \(.*recip.*plus1.*\)"):
        kernel.with_schedule([("plus1", "recip"), ("recip", "plus1")])(t)
    with pytest.raises(ConstraintError, match=r"each entry is a \(consumer name, producer"):
        kernel.with_schedule([("plus1",)])
