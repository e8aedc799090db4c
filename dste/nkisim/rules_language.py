"""The rules of ``nki.language`` and of ``NkiTensor`` views that the simulator enforces.

Each rule names the page of the aws-neuron-sdk repository (commit 81ce03ae, NKI 0.6) that states
it, with the section; a rule no page states is labelled ``assumption: ...``. ``docs/NKI_RULES_LANGUAGE.md``
is generated from this table (:func:`markdown`).
"""

from . import rules
from .rules import RELEASE_NOTES, SHARED_TABLES, STUB_LANGUAGE

RN_04_NL = f"{RELEASE_NOTES}, NKI 0.4.0, Known Issues, 'NKI Language (experimental)' (carried into 0.5.0 and 0.6.0)"
RN_04_NEW = f"{RELEASE_NOTES}, NKI 0.4.0, New Features"
RN_03_BREAK = f"{RELEASE_NOTES}, NKI 0.3.0, Breaking Changes"
RN_05_NEW = f"{RELEASE_NOTES}, NKI 0.5.0, New Features"
RN_06 = f"{RELEASE_NOTES}, NKI 0.6.0"
TENSOR = f"{STUB_LANGUAGE}, class NkiTensor"
LG = "nki/get-started/nki-language-guide.rst"
MIGRATION = "nki/migration/index.rst"


def _stub(function):
    return f"{STUB_LANGUAGE}, def {function} (docstring)"


def _method(method):
    return f"{TENSOR}, def {method} (docstring, 'Constraints')"


_RULES = [
    # -- element-wise functions -----------------------------------------------------------------
    ("nl.divide.not-hardware", "nl.divide is refused: division is not available as a hardware instruction "
     "(multiply by nl.reciprocal instead)", RN_04_NL),
    ("nl.mod.not-hardware", "nl.mod is refused: modulo is not a hardware instruction", RN_04_NL),
    ("nl.fmod.not-hardware", "nl.fmod is refused: modulo is not a hardware instruction", RN_04_NL),
    ("nl.power.scalar-exponent", "nl.power needs two tiles; a scalar exponent is not supported", RN_04_NL),
    ("nl.binary.no-broadcast", "a binary nl function takes two tiles of the same shape (or a tile and a scalar); "
     "broadcasting, e.g. a (128, 1) tile with a (128, 512) tile, is not supported", RN_04_NL),
    ("nl.binary.tile-operand", "at least one operand of a binary nl function must be a tile", _stub("equal")),
    ("nl.abs_max.trn3-only", "nl.abs_max exists on NeuronCore-v4 (trn3) only", RN_04_NEW + "; " + _stub("abs_max")),
    ("nl.abs_min.trn3-only", "nl.abs_min exists on NeuronCore-v4 (trn3) only", RN_04_NEW + "; " + _stub("abs_min")),
    ("nl.rsqrt.no-psum", "nl.rsqrt runs on GpSimd, which cannot read PSUM",
     f"{RELEASE_NOTES}, NKI 0.5.0, Improvements (rsqrt on the GpSimd Engine; PSUM inputs no longer supported)"),
    ("nl.elementwise.on-chip", "element-wise nl functions, reductions, softmax, rms_norm, where and copy take "
     "on-chip tiles (SBUF or PSUM); HBM tensors are loaded first with nl.load / nisa.dma_copy",
     f"{LG} (HBM tensors are not compute operands); {_stub('copy')}"),
    ("nl.lowering.undocumented", "nl.cos, nl.tan, nl.ceil, nl.floor, nl.trunc and the random functions have no "
     "documented lowering; the simulator runs each as one element-wise instruction on the named engine",
     "assumption: the stubs give only NumPy semantics for these functions"),
    # -- reductions and composites ----------------------------------------------------------------
    ("nl.reduce.axis", "a reduction axis must be a free dim (never 0) and the axes the last contiguous dims "
     "of the tile ([1], [1,2], [1,2,3], [1,2,3,4])", _stub("sum")),
    ("nl.rms_norm.weight", "nl.rms_norm's weight tile has the shape of x", "assumption: the stub's example uses "
     "equal shapes and binary nl functions do not broadcast"),
    ("nl.where.condition", "nl.where's condition is a tile of 1.0 / 0.0 shaped like the result", _stub("where")),
    ("nl.transpose.2d", "nl.transpose takes a 2-D on-chip tile and writes PSUM (TensorE transpose)", _stub("transpose")),
    ("nl.matmul.transpose-x", "nl.matmul without transpose_x=True is not supported", RN_04_NL),
    ("nl.broadcast_to.rank", "nl.broadcast_to keeps the rank; each dim matches or is broadcast from size 1; "
     "the source is an SBUF or PSUM tile", _stub("broadcast_to")),
    ("nl.gather_flattened.indices", "nl.gather_flattened indexes the free elements of each partition with an "
     "integer index tile on the same partitions", _stub("gather_flattened") + "; nc_n_gather in "
     f"{RELEASE_NOTES}, 'nki.isa.nc_n_gather [used to be nl.gather_flattened ...]'"),
    # -- memory ---------------------------------------------------------------------------------------
    ("nl.buffer.object", "buffers are nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm or nl.private_hbm objects; "
     "string buffer names are not accepted", RN_03_BREAK),
    ("nl.load.src-hbm", "nl.load / nl.load_transpose2d read an HBM tensor into a new SBUF tile",
     _stub("load") + "; " + _stub("load_transpose2d")),
    ("nl.store.dst-hbm", "nl.store writes an SBUF tile into an HBM tensor", _stub("store")),
    ("nl.copy.on-chip", "nl.copy copies an SBUF or PSUM tile into a new SBUF tile (VectorE tensor_copy)",
     _stub("copy") + f"; {RN_06}, New Features, nki.language.copy"),
    ("nl.shared_identity_matrix.size", "nl.shared_identity_matrix(n) builds an n x n SBUF tile, so n <= 128 "
     "partitions", _stub("shared_identity_matrix") + " (identity in SBUF; 128 partitions)"),
    ("nl.shared_constant.dtype", "nl.shared_constant takes a NumPy array (or .npy path) of a supported element "
     "type and places it in shared HBM", _stub("shared_constant")),
    ("nl.random_seed.tensor", "nl.random_seed takes a [1, 1] SBUF (or PSUM) tensor holding a 32-bit seed, "
     "not a Python integer", RN_04_NL + "; " + _stub("random_seed")),
    ("nl.device_print.buffer", "nl.device_print prints an SBUF or HBM tensor", _stub("device_print")),
    # -- control flow ---------------------------------------------------------------------------------
    ("nl.loop.step", "dynamic loops (nl.fori_loop, nl.dynamic_range) take a compile-time positive integer step",
     _stub("fori_loop") + "; " + _stub("dynamic_range")),
    ("nl.loop.bound", "a loop bound is an int or a register (VirtualRegister)", _stub("fori_loop")),
    ("nl.no_reorder.dynamic-loop", "register-based dynamic loops (nl.fori_loop, nl.while_loop, nl.dynamic_range) are "
     "not supported inside a no_reorder block", _stub("no_reorder") + "; nki/guides/nki-dynamic-loops.rst (a dynamic "
     "loop inside no_reorder 'is NOT supported and will error')"),
    ("nl.while_loop.body", "nl.while_loop's body returns the next condition register",
     _stub("while_loop")),
    ("nl.ndarray.address", "an explicit address keeps the tensor inside its buffer: partition offset + partitions "
     "<= 128, free offset + bytes per partition <= the partition's bytes, a PSUM tensor at the start of a 2 KiB bank "
     "(the free offset is refused only where it is out of place read both as elements and as bytes)",
     f"{MIGRATION}, Improved allocation API ('the free dimension offset is the element offset within each "
     "partition'; 'The allocation for PSUM tensors must start at the beginning of each bank'); "
     "nki/get-started/about/tiling-overview.rst (pmax = 128)"),
    ("nl.loop.body-tensor-scope", "a tensor declared inside a fori_loop / while_loop body is used only within that "
     "body iteration; one needed outside (or in a later iteration) is declared before the loop",
     f"{MIGRATION}, Rules for migrated loops ('Tensors (nl.ndarray) declared inside a body function cannot be "
     "referenced outside of the loop'; 'Keep cross-iteration state in SBUF or HBM')"),
    ("nl.fori_loop.body-return", "nl.fori_loop's body function returns nothing",
     f"{MIGRATION}, Rules for migrated loops ('The fori_loop body function cannot return a value')"),
    ("nl.loop.index-read-only", "a fori_loop's or dynamic_range's index is a read-only register: no instruction "
     "writes it, and Python reads it only as .ap(scalar_offset=...) or a loop bound",
     f"{MIGRATION}, Rules for migrated loops ('The loop variable is read-only ... Read it as a runtime offset via "
     f".ap(scalar_offset=...)'); {RELEASE_NOTES}, NKI 0.4.0, Bug Fixes (the dynamic_range induction variable is a "
     "VirtualRegister)"),
    ("nl.while_loop.limit", "a simulated nl.while_loop stops with an error after 1,000,000 iterations",
     "assumption: hardware would loop forever; the simulator refuses to hang"),
    ("kernel.signature.python-subset", "a kernel function has no keyword-only separator (*) in its signature and "
     "uses no 'is' / 'is not' operator", f"{RN_03_BREAK} ('Keyword-only argument separator (*) in kernel signatures "
     "is not supported'; 'is / is not operators are not supported. Use == / !='); only the kernel function's own "
     "source is read (assumption: the rest of the restricted Python subset is not checked)"),
    ("kernel.schedule", "kernel.with_schedule takes (consumer, producer or list of producers) pairs of instruction "
     "names; every name is the name= of an instruction the kernel issues, and the edges make no cycle",
     "nki/guides/how-to-scheduling-apis.rst, Adding dependency edges ('The NKI compiler will collect the data from the "
     "with_schedule call, check that it makes sense'); assumption: which checks, as the guide does not list them"),
    ("kernel.jit.sub-kernel", "a kernel calls its sub-kernels as plain functions: an nki.jit kernel called from a "
     "running kernel is refused", "nki/migration/index.rst, Remove nki.jit decorator on sub-kernels ('the nki.jit "
     "decorator will need to be removed from sub-kernels ... Otherwise, you will see an error ... thrown from the "
     "callsite of the sub-kernels')"),
    ("kernel.lnc.trn2-up", "an LNC launch of two cores (kernel[2]) runs on Trn2 and Trn3 only",
     "about-neuron/arch/neuron-features/logical-neuroncore-config.rst ('LNC applies only to Trn2 and Trn3 "
     "instances')"),
    ("kernel.lnc.same-program", "the two programs of a kernel[2] launch take the same run-time control-flow "
     "decisions where both reach the same dynamic loop (nl.fori_loop, nl.while_loop, nl.dynamic_range) or Python test "
     "of a register: equal trip counts, equal conditions. Python control flow may differ between the programs",
     "nki/get-started/about/lnc.rst, Final Notes ('the Neuron SDK assumes that when running a kernel on multiple "
     "cores, the program on each core is \"the same\" ... Most of the time, this requirement will be automatically "
     "satisfied by the NKI compiler. However, if you use dynamic control flow, and this control-flow is different on "
     "the different cores, then the behavior is undefined'); Python branches on nl.program_id appear in the ISA "
     "stub's core_barrier example and in AWS's nki-library kernels. Assumption: decisions are matched by kernel "
     "source line and order there"),
    ("kernel.lnc.shared-race", "within one interval between core_barriers, the two programs of a kernel[2] launch do "
     "not touch a shared_hbm byte where the answer could depend on their timing: a read of a byte the other program "
     "writes (unless every value it could see is the one it sees), a write of a byte the other program read (unless "
     "it writes the value read), or last writes of different values by both (reads by both are fine)",
     "nki/api/nki/isa/__init__.py, core_barrier ('two NeuronCores both need to write to disjoint portions of a shared "
     "HBM tensor ... and they both need to consume the tensor after both cores have finished writing into the "
     "tensor'); nki/get-started/about/lnc.rst (the two programs run on two physical cores at the same time); "
     "assumptions: byte granularity; a conflict whose every order gives one answer is no race (AWS's "
     "dynamic_elementwise_add and router_topk have both cores write the same values)"),
    ("nl.program_id.axis", "launch grids are 1-D (kernel[lnc]), so nl.program_id / nl.num_programs take axis 0",
     "nki/get-started/about/lnc.rst (an LNC launch is kernel[1] or kernel[2])"),
    # -- tile_size ------------------------------------------------------------------------------------
    ("nl.tile_size.undocumented", "nl.tile_size.psum_min_align and sbuf_min_align have no documented value; the "
     "simulator refuses to invent one (bn_stats_fmax is 512, stated in nisa.bn_stats's docstring)",
     "assumption: nki/api/nki.language.tile_size.rst names them without values"),
    # -- NkiTensor views ------------------------------------------------------------------------------
    ("view.unofficial-method", "NkiTensor has only the official view methods; e.g. .broadcast_to(shape) does not "
     "exist (use .broadcast(dim, size) or nl.broadcast_to)", TENSOR + " (method list)"),
    ("view.setitem", "assigning into a tensor (t[...] = v) is not an NKI operation; write with an instruction",
     "assumption: NkiTensor.__setitem__ has no documented semantics in the stub"),
    ("view.on-chip-2d", "views of on-chip tensors keep the partition dim and stay at least 2-D; integer "
     "indexing on dim 0 keeps a size-1 partition dim", f"{TENSOR}, def __getitem__ (docstring)"),
    ("view.index.range", "indices and slices stay inside the tensor", f"assumption: {TENSOR}, def __getitem__ calls "
     "indexing NumPy-style, which clamps an out-of-range slice; the simulator refuses it as a kernel bug (the docs "
     "bound only .slice and .select)"),
    ("view.broadcast.size-one", ".broadcast(dim, size) needs t.shape[dim] == 1", _method("broadcast")),
    ("view.broadcast.partition", "on-chip tensors cannot broadcast the partition dim (dim 0)", _method("broadcast")),
    ("view.broadcast.write", "a broadcast (stride-0) view cannot be written", "assumption: several elements of a "
     "stride-0 view share one address"),
    ("view.expand_dim.partition", "on-chip tensors (and vector_select views) cannot insert a dim at 0",
     _method("expand_dim")),
    ("view.squeeze_dim.size-one", ".squeeze_dim(dim) needs t.shape[dim] == 1", _method("squeeze_dim")),
    ("view.squeeze_dim.partition", "on-chip tensors (and vector_select views) cannot squeeze dim 0",
     _method("squeeze_dim")),
    ("view.reshape_dim.product", ".reshape_dim(dim, shape) needs prod(shape) == t.shape[dim] (one -1 may be "
     "inferred)", _method("reshape_dim")),
    ("view.reshape_dim.partition", "on-chip tensors cannot split dim 0 (unless shape is trivial)",
     _method("reshape_dim")),
    ("view.flatten_dims.contiguous", ".flatten_dims(start, end) needs dims start..end contiguous in memory",
     _method("flatten_dims")),
    ("view.flatten_dims.partition", "on-chip tensors (and vector_select views) need start_dim > 0",
     _method("flatten_dims")),
    ("view.reshape.count", ".reshape keeps the element count", _method("reshape")),
    ("view.reshape.partition", "on-chip tensors keep shape[0] in a reshape", _method("reshape")),
    ("view.reshape.layout", ".reshape fails when the current layout (after a non-contiguous slice or permute) "
     "cannot express the new shape without a copy", _method("reshape")),
    ("view.rearrange.pattern", ".rearrange's patterns name each dim once, on both sides, with sizes that "
     "multiply out", f"{TENSOR}, def rearrange (docstring)"),
    ("view.permute.dims", ".permute(dims) takes a permutation of range(t.ndim)", _method("permute")),
    ("view.permute.partition", "on-chip tensors (and vector_select views) keep dims[0] == 0", _method("permute")),
    ("view.slice.range", ".slice(dim, start, end, step) needs 0 <= start < end <= t.shape[dim]", _method("slice")),
    ("view.slice.step", ".slice needs step >= 1 (NumPy slices: positive steps)", _method("slice")),
    ("view.select.range", "a static .select(dim, index) needs 0 <= index < t.shape[dim]", _method("select")),
    ("view.select.partition", "a dynamic .select on an on-chip tensor cannot use dim 0", _method("select")),
    ("view.indirect.chain", "only one dynamic select per tensor: an indirect view (dynamic select, vector_select, "
     ".ap with scalar_offset / vector_offset) cannot be re-indirected, and its indirect dim cannot be sliced or "
     "selected", _method("select") + "; " + f"{TENSOR}, def is_indirect (docstring)"),
    ("view.vector_select.dim", ".vector_select(dim, vector_offset) needs dim == 0", _method("vector_select")),
    ("view.vector_select.hbm", ".vector_select works on HBM tensors only", _method("vector_select")),
    ("view.vector_select.index", "the vector_offset is an SBUF (num_partitions, 1) int32/uint32 tile",
     f"{TENSOR}, def vector_select (':param vector_offset:', the shape); assumption: the int32/uint32 dtype (the "
     "docs show those in examples and name no dtype)"),
    ("view.view.contiguous", ".view(dtype) needs a contiguous last dim", _method("view")),
    ("view.view.divisible", ".view(dtype) to a larger dtype needs the last dim's bytes divisible by it",
     _method("view")),
    ("view.view.indirect", ".view(dtype) is not supported after a dynamic / vector select", _method("view")),
    ("view.indirect.trn3-only", ".indirect(index) (tensor indirection) exists on NeuronCore-v4 (trn3) and later",
     f"{TENSOR}, def indirect (docstring); {RN_05_NEW}"),
    ("view.ap.pattern", ".ap's pattern is 1 to 5 [stride, count] pairs; on SBUF/PSUM the first stride is the "
     "partition step (the per-partition element count)", f"{TENSOR}, def ap (docstring example); {LG}"),
    ("view.ap.extent", "an .ap view stays inside its storage", "assumption: an access pattern outside the "
     "allocation reads or writes another tensor"),
    ("view.ap.vector-offset", ".ap(vector_offset=...) needs an HBM base, indirect_dim=0 and an SBUF [P, 1] "
     "int32/uint32 index tile", "nki/api/nki/isa/__init__.py, def dma_copy (docstring, indirect access: an SBUF "
     "(P, 1) tensor); assumption for the dtype: the docs state none for dma_copy, their examples index with uint32 "
     "(isa dma_copy) and int32 (nki/deep-dives/nki-aps.rst), and vector_select states int32/uint32"),
]

for _rule_id, _text, _source in _RULES:
    rules.register(_rule_id, _text, _source)

IDS = frozenset(rule_id for rule_id, _, _ in _RULES)


def violate(rule_id, message, error=None):
    """Raise ``error`` (default: the rule table's ``NkiValidationError``) naming the rule's id and source."""
    if error is None:
        rules.violate(rule_id, message)
    rules.violate(rule_id, message, error)


def markdown():
    """``docs/NKI_RULES_LANGUAGE.md``: this table in Markdown."""
    lines = [
        "# NKI language and view rules enforced by `dste.nkisim`",
        "",
        "Generated from `dste/nkisim/rules_language.py` (`python -m dste.nkisim.rules_language > "
        "docs/NKI_RULES_LANGUAGE.md`). Sources are paths in aws-neuron/aws-neuron-sdk at commit 81ce03ae "
        "(Neuron 2.32 / NKI 0.6); a rule no page states is labelled `assumption`. A violation raises "
        "`ConstraintError` (or `OutOfBoundsError` for ranges) whose message ends with `[rule <id>; <source>]`.",
        "",
        "| rule | what it requires | source |",
        "|---|---|---|",
    ]
    for rule_id, text, source in sorted(_RULES):
        lines.append(f"| `{rule_id}` | {text} | {source} |")
    lines += [
        "",
        "Version gate (`dste.nkisim.version.require`, release notes `" + RELEASE_NOTES + "`): "
        "`nl.tile_size.psum_bank_fmax`, `psum_bank_fmax_bytes`, `sbuf_size_bytes`, `sbuf_fmax`, `sbuf_fmax_bytes`, "
        "`nl.abs_max`, `nl.abs_min` need NKI 0.4; `nl.tile_size.psum_num_banks`, `nl.float8_e8m0fnu` and the "
        "NkiTensor methods `slice`, `select`, `permute`, `broadcast`, `expand_dim`, `squeeze_dim`, `reshape_dim`, "
        "`flatten_dims`, `rearrange`, `vector_select`, `is_contiguous`, `is_indirect`, `indirect` need 0.5; "
        "`nl.fori_loop` and `nl.while_loop` need 0.6. `nl.dynamic_range`, `nl.tile_size.psum_fmax` and "
        "`total_available_sbuf_size` warn (`DeprecationWarning`) from the release that deprecated them "
        "(0.6, 0.4, 0.4).",
        "",
        f"Shared tables used by the operator objects: `{SHARED_TABLES}` (ALU operators, activation functions).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
