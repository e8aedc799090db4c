"""The rules ``nki.isa`` enforces, each with the doc page that states it.

Every strict check of the ISA modules raises through :func:`dste.nkisim.rules.violate` with one of
these ids. Sources are paths in the aws-neuron/aws-neuron-sdk repository followed by the function
(docstring) and section; a rule no page states is labelled ``assumption: ...``.
"""

from .rules import RELEASE_NOTES, SHARED_TABLES, STUB_ISA, register


def _doc(function, section=""):
    return f"{STUB_ISA}, {function}" + (f" ({section})" if section else "")


ARCH_GUIDE = "nki/guides/architecture/trainium_inferentia2_arch.rst"
"""The architecture guide: engines, buffers and how instructions stream data (Data streaming)."""
ALU_TABLE_SRC = f"{SHARED_TABLES}, tbl-aluop"
ACT_TABLE_SRC = f"{SHARED_TABLES}, tbl-act-func"

_RULES = [
    # -- operands common to every compute instruction ------------------------------------------
    ("isa.partitions", "an SBUF/PSUM operand of a compute instruction spans at most 128 partitions",
     f"{RELEASE_NOTES}, NKI 0.6.0 Improvements; {STUB_ISA}, tensor_tensor/tensor_reduce (Tile size)"),
    ("isa.start_partition", "an operand of more than 64 partitions starts at partition 0, of 33-64 at 0 or 64, "
     "of at most 32 at 0/32/64/96 (the physical lane: an nl.ndarray address's partition offset counts)",
     f"{ARCH_GUIDE}, Data streaming (src/dst of an instruction: start_partition by num_partition); {STUB_ISA}, "
     "nc_stream_shuffle (constraint 3); nki/migration/index.rst, Improved allocation API (the partition offset is a "
     "physical partition lane)"),
    ("isa.psum_tile_fmax", "a PSUM operand of a compute instruction spans at most psum_bank_fmax (512) elements per "
     "partition, from its first to its last (a broadcast dim re-reads its elements and adds none)",
     "nki/get-started/about/tiling-overview.rst, Tile-Size Constraint #2, which limits 'tiles in PSUM'; AWS's "
     "nki-library layernorm_tkg broadcasts a one-column PSUM tile over thousands of columns (the stricter reading: "
     f"{ARCH_GUIDE}, Vector Engine / Scalar Engine, allows PSUM free sizes up to 4K elements for most of their "
     "instructions)"),
    ("isa.on_chip_1d", "a one-element SBUF tensor of shape [1] is an operand of register_load / register_store only",
     "assumption: the register_load / register_store examples allocate SBUF tensors of shape [1] (nki/api/nki/isa/"
     "__init__.py, register_load / register_store: 'shape [1] or [1, 1]'), while nki/get-started/"
     "nki-language-guide.rst says SBUF and PSUM tensors are always at least 2-D"),
    ("isa.free_dims", "an on-chip operand's access pattern has at most 4 free dimensions after merging contiguous "
     "ones", "nki/deep-dives/nki-aps.rst (elements within a partition are accessed as up to four-dimensional arrays)"),
    ("isa.free_stride", "each free axis of an on-chip operand's access pattern (contiguous neighbours merged) steps "
     "at most an int16 of elements", f"{ARCH_GUIDE}, Data streaming (each F axis: a size in uint16, a stride in "
     "int16, in data elements)"),
    ("isa.free_axis_size", "each free axis of an on-chip operand's access pattern holds at most a uint16 (65535) of "
     "elements; a longer run of the kernel's shape passes when it splits into two such axes (int16 strides, at most 4 "
     "free axes in all)", f"{ARCH_GUIDE}, Data streaming (each F axis: a size in uint16, a stride in int16, in data "
     "elements)"),
    ("isa.engine_free_size", "a Vector or Scalar Engine operand in SBUF holds at most 64K (65536) elements per "
     "partition", f"{ARCH_GUIDE}, Vector Engine / Scalar Engine, Layout & Tile Size (the free dimension size can be up "
     "to 64K elements for SBUF)"),
    ("isa.consecutive_partitions", "an on-chip operand covers consecutive partitions (partition step 1)",
     f"{ARCH_GUIDE}, Data streaming (no P dimension striding: a src/dst occupies a continuous number of "
     "partitions)"),
    ("isa.buffer", "each operand lives in the buffer(s) the instruction's Memory types section allows",
     f"{STUB_ISA}, every instruction (Memory types)"),
    ("isa.same_shape", "inputs and dst have the same partition count and elements per partition",
     f"{STUB_ISA}, tensor_tensor/tensor_copy/activation (Tile size)"),
    ("isa.gpsimd_no_psum", "GpSimd Engine cannot access PSUM", f"{STUB_ISA}, tensor_copy / tensor_tensor / nc_n_gather"),
    ("isa.indirect_operand", "only DMA instructions take vector_offset (.ap) operands; .indirect() views are "
     "NeuronCore-v4+ only", f"{STUB_ISA}, dma_copy (Indirect addressing) and tensor_tensor (Tensor indirection)"),
    ("isa.engine_value", "engine is a nisa.engine member the instruction lists", f"{STUB_ISA}, every engine parameter"),
    ("isa.target_only", "an instruction or option documented for a newer NeuronCore is refused on older targets",
     f"{STUB_ISA}, notes 'Available only on NeuronCore-vN and newer'"),
    ("isa.depends_on.loops", "a depends_on edge joins instructions of the same dynamic-loop nesting, or a producer "
     "in an enclosing scope: never out of a dynamic loop (fori_loop, while_loop, dynamic_range) nor into another one",
     f"{STUB_ISA}, NkiInstruction.depends_on"),
    ("isa.not_simulated", "an official instruction or nki.collectives function the simulator does not model raises "
     "NotImplementedError", "assumption: the simulator never guesses semantics it cannot check "
     "(nki/guides/nki_simulator.rst, Simulation Limitations: the official simulator implements no nki.collectives "
     "API either)"),
    # -- ALU operators -------------------------------------------------------------------------
    ("alu.in_table", "an ALU op field takes an operator of tbl-aluop (nl.divide, nl.max, nl.mod ... are not ALU "
     "operators)", ALU_TABLE_SRC),
    ("alu.target", "abs_max/abs_min, and square/relu as ALU ops, are trn3 (NeuronCore-v4) only",
     f"{RELEASE_NOTES}, NKI 0.4.0 New Features"),
    ("alu.bitvec_int", "bitvec operators need integer input and output dtypes (raw bit patterns); an immediate "
     "operand is an integer taken as its bit pattern (assumption: the nki.isa stubs type immediates as float; "
     "nki.language's bitwise_and / bitwise_or / bitwise_xor take 'a tile or a scalar value' on integer inputs. "
     "DSTE's kernels pass bitvec constants as int32 tiles and do not rest on it)", ALU_TABLE_SRC
     + f"; {STUB_ISA}, tensor_scalar / tensor_tensor / tensor_reduce (Data types)"),
    ("alu.legal_reduction", "a reduction op is one tbl-aluop marks 'Legal Reduction op = Y'", ALU_TABLE_SRC),
    ("act.in_table", "an activation op is a function of tbl-act-func", ACT_TABLE_SRC),
    # -- tensor_scalar -------------------------------------------------------------------------
    ("tensor_scalar.same_kind", "op0 and op1 are both bitvec or both arithmetic", _doc("tensor_scalar")),
    ("tensor_scalar.bitvec_vector", "bitvec operators run on Vector Engine only", _doc("tensor_scalar")),
    ("tensor_scalar.fp32_operand", "arithmetic operand0/operand1 are float32: a scalar is an fp32 constant, a "
     "[P, 1] tile operand must be float32", _doc("tensor_scalar")),
    ("tensor_scalar.operand_shape", "operand0/operand1 are scalars or [data.shape[0], 1] tiles", _doc("tensor_scalar")),
    ("tensor_scalar.op1_pair", "op1 and operand1 are both None or both given", _doc("tensor_scalar")),
    ("tensor_scalar.gpsimd_rsqrt", "engine=gpsimd is only allowed for rsqrt", _doc("tensor_scalar", ":param engine:")),
    ("tensor_scalar.scalar_combos", "Scalar Engine (trn2) runs only op0=multiply,op1=add / op0=multiply / op0=add",
     _doc("tensor_scalar")),
    ("tensor_scalar.scalar_combos_v2", "the trn2 Scalar Engine combinations are applied to trn1 too",
     "assumption: no wider Scalar Engine list is documented for NeuronCore-v2"),
    ("tensor_scalar.unary_operand", "a unary op0 (abs, rsqrt, ...) takes operand0 None or 0", _doc("tensor_scalar",
     ":param operand0:")),
    # -- tensor_tensor -------------------------------------------------------------------------
    ("tensor_tensor.engine", "tensor_tensor runs on Vector or GpSimd Engine", _doc("tensor_tensor")),
    ("tensor_tensor.power_gpsimd", "nl.power runs on GpSimd Engine (so no PSUM operand)", _doc("tensor_tensor")),
    ("tensor_tensor.binary", "op is a binary operator", _doc("tensor_tensor")),
    ("tensor_tensor.two_psum", "data1 and data2 cannot both be in PSUM", _doc("tensor_tensor")),
    # -- copies --------------------------------------------------------------------------------
    ("tensor_copy.engine", "tensor_copy runs on Vector, Scalar or GpSimd Engine; not Scalar on NeuronCore-v2",
     _doc("tensor_copy")),
    ("tensor_copy_predicated.same_dtype", "src and dst share the same data type", _doc("tensor_copy_predicated",
     "Shape and data type constraints 3")),
    ("tensor_copy_predicated.predicate_dtype", "predicate is uint8, uint16 or uint32",
     _doc("tensor_copy_predicated", "Shape and data type constraints 2")),
    ("tensor_copy_predicated.psum", "src and predicate cannot both be in PSUM", _doc("tensor_copy_predicated")),
    # -- reductions ----------------------------------------------------------------------------
    ("tensor_reduce.axis", "axis names the last contiguous free dims ending at the final dim, never axis 0",
     _doc("tensor_reduce", ":param axis:")),
    ("tensor_reduce.dst_size", "dst holds the elements per partition left after the reduction",
     _doc("tensor_reduce", "Tile size")),
    ("tensor_reduce.negate_arith", "negate applies to arithmetic reductions only", _doc("tensor_reduce", ":param negate:")),
    ("tensor_partition_reduce.op", "op is add, average, max (maximum), bitwise_or or bitwise_and",
     _doc("tensor_partition_reduce")),
    # -- TensorE -------------------------------------------------------------------------------
    ("nc_matmul.dtype", "stationary/moving are float8_e4m3/float8_e5m2/bfloat16/float16/tfloat32/float32 "
     "(float8_e4m3fn v4+); fp32/tf32 pairs only with fp32/tf32", _doc("nc_matmul", "Data types")),
    ("nc_matmul.dst_dtype", "dst is float32 on NeuronCore-v2/v3 (float32 or bfloat16 on v4); with is_transpose=True "
     "from v3, FP16/BF16 input may write its own dtype", _doc("nc_matmul", "Data types") + "; "
     "nki/guides/architecture/trainium2_arch.rst, Built-in Transpose Support"),
    ("nc_matmul.transpose_identity", "is_transpose=True (v3+) moves stationary through a moving tile whose columns are "
     "one-hot 0/1 (an identity)", "assumption: nki/api/nki/isa/__init__.py, nc_matmul (Transpose mode) describes the "
     "mode only with an identity moving tile"),
    ("nc_matmul.tile_size", "K <= 128 (or the row tile), stationary free <= 128 (or the column tile), moving free "
     "<= 512 on v2/v3", _doc("nc_matmul", "Tile size")),
    ("nc_matmul.psum_bank", "a matmul output fits one PSUM bank (2 KiB per partition) on v2/v3",
     _doc("nc_matmul", "Tile size: 512 fp32 per PSUM bank")),
    ("nc_matmul.accumulate", "accumulate=True only onto PSUM a matmul wrote; None infers per location (a location "
     "a matmul wrote accumulates, another starts); a non-matmul write cannot be accumulated onto",
     _doc("nc_matmul", "Accumulation mode") + "; " + "release-notes/components/nki.rst, 0.6.0 (overlapping "
     "accumulation regions)"),
    ("nc_matmul.perf_mode", "double_row needs NeuronCore-v3+, fp8 inputs, a first free dim of 2, no column tiling",
     _doc("nc_matmul", "Performance mode / Layout")),
    ("nc_matmul.tiling", "tile_position and tile_size are set together; row/column sizes 32 (v3+), 64 or 128; "
     "positions are multiples of the sizes", _doc("nc_matmul", "Tiling mode")),
    ("nc_transpose.size", "TensorE transposes up to [128, 128] SBUF->PSUM, VectorE up to [32, 32]; dst is "
     "[free, partitions] of the same dtype", _doc("nc_transpose")),
    ("nc_transpose.tensor_v2", "a Tensor Engine nc_transpose on NeuronCore-v2 takes float32 data: it is a matmul "
     "whose dst is float32 there, and dst has data's dtype", _doc("nc_matmul", "transpose mode is not native on "
     "NeuronCore-v2; Data types: dst float32 on v2/v3") + "; " + _doc("nc_transpose", "Data types: dst dtype = data "
     "dtype") + "; nki/guides/architecture/trainium2_arch.rst, Built-in Transpose Support (FP16/BF16 PSUM output is "
     "a NeuronCore-v3 transpose-mode benefit)"),
    # -- ScalarE -------------------------------------------------------------------------------
    ("activation.bias", "bias is a [P, 1] tile on NeuronCore-v2; a scalar or [P, 1] tile from v3; not tfloat32",
     _doc("activation", "Layout / Data types")),
    ("activation.reciprocal_bias", "activation(op=nl.reciprocal) takes no bias on NeuronCore-v2",
     f"{SHARED_TABLES}, nki-engine-sel (NKI Engine Selection for Operators Supported on Multiple Engines, note under "
     "1. Reciprocal)"),
    ("activation.scale", "scale is an fp32 scalar or a float32 [P, 1] tile", _doc("activation", "Data types")),
    ("activation.reduce_op", "activation's reduce_op is nl.add (activation_reduce: add on v2)",
     _doc("activation")),
    ("activation.reduce_res", "reduce_res is a [P, 1] SBUF/PSUM tile", _doc("activation", ":param reduce_res:")),
    ("activate2.ops", "activate2's (op0, op1) is one of the six documented combinations", _doc("activate2")),
    # -- GpSimd --------------------------------------------------------------------------------
    ("iota.pattern", "pattern is 1-4 [step, num] integer pairs whose product is dst's elements per partition; offset "
     "and channel_multiplier are int32; dst in SBUF", _doc("iota")),
    ("affine_select.cmp_op", "cmp_op is a comparison operator: equal, not_equal, greater_equal, greater, less_equal "
     "or less", _doc("affine_select", ":param cmp_op:") + f"; {SHARED_TABLES}, tbl-aluop"),
    ("affine_select.on_false", "on_false_value is a float32 value; dst and on_true_tile in SBUF", _doc("affine_select")),
    ("local_gather.shape", "src_buffer and index have the same partitions, a multiple of 16; index uint16; "
     "num_elem_per_idx in 1,2,4,8,16,32; <= 4096 indices per core; dst dtype = src dtype", _doc("local_gather")),
    ("local_gather.dst-size", "dst holds exactly num_valid_indices x num_elem_per_idx elements per partition",
     f"{RELEASE_NOTES}, NKI 0.6.0 Known Issues (local_gather: num_elem_per_idx 'is currently ignored unless "
     "num_valid_indices * num_elem_per_idx == dst.size / dst.shape[0]'; 'size dst such that' they are equal)"),
    ("nc_n_gather.operands", "data/indices/dst in SBUF, indices uint32 in range, dst dtype = data dtype, dst "
     "elements per partition = indices'", _doc("nc_n_gather")),
    ("nonzero_with_count.operands", "src float32/int32, dst int32 in SBUF with one more element per partition",
     _doc("nonzero_with_count")),
    ("topk.operands", "src and val_dst bfloat16, idx_dst uint32, SBUF, partitions a multiple of 16, 8 <= n < 65536, "
     "1 <= K <= n, src free >= ceil(n/16)", _doc("topk")),
    ("sequence_bounds.operands", "segment_ids and dst float32 or int32, one partition, dst [1, 2, n]",
     _doc("sequence_bounds")),
    # -- VectorE extras ------------------------------------------------------------------------
    ("memset.value_type", "value is an int for integer dtypes (within their range), and a float or an int the dtype "
     "holds exactly for float dtypes", f"{RELEASE_NOTES}, NKI 0.3.0 Breaking Changes (nisa.memset: 'Kernels that "
     "pass float values to integer-typed tensors ... will now raise an error'; 'x4 packed types enforce value=0'); "
     "nki/migration/index.rst, nisa.memset strict type matching; nisa.dma_transpose's docstring example memsets a "
     "float tile with value=0, as AWS's nki-library kernels do (assumption: an int a float dtype holds exactly is "
     "accepted)"),
    ("memset.engine", "memset runs on Vector or GpSimd Engine", _doc("memset", ":param engine:")),
    ("reduce_cmd.value", "reduce_cmd is one the instruction lists", _doc("exponential / tensor_scalar_reduce", "reduce_cmd")),
    ("tensor_scalar_reduce.operands", "reverse0 is False (not supported yet); a unary op0 takes operand0 None or 0; a "
     "reduce_init tile is float32", _doc("tensor_scalar_reduce", ":param operand0: / reverse0 / reduce_init")),
    ("vector.reduce_res", "reduce_res is a [P, 1] tile of the data's partitions", _doc("tensor_scalar_reduce")),
    ("vector.reduce_op", "the instruction's reduce_op is one it documents", _doc("tensor_scalar_reduce / select_reduce / range_select")),
    ("tensor_scalar_cumulative.dtype", "tensor_scalar_cumulative's src and dst are BF16, FP16, FP32, FP8, UINT8, "
     "UINT16, INT8 or INT16 (no int32/uint32, no tfloat32)",
     _doc("tensor_scalar_cumulative", "Operation constraints")),
    ("range_select.operands", "comparison ops are equal/less/less_equal/greater/greater_equal; on_true_tile is "
     "float; bounds are float32 [P, 1]; on_false_value is FP32_MIN; range_start a compile-time integer",
     _doc("range_select")),
    ("select_reduce.operands", "predicate int8/uint8/int16/uint16; on_true not tfloat32/int32/uint32; on_false an fp32 "
     "scalar or a [P, 1] vector of any dtype; on_true and predicate not both in PSUM", _doc("select_reduce")),
    ("bn_stats.size", "bn_stats reads at most 512 elements per partition and writes 6", _doc("bn_stats")),
    ("bn_aggr.size", "bn_aggr reads a multiple of 3 elements per partition and writes 2", _doc("bn_aggr")),
    ("max8.size", "max8/nc_find_index8 read 8..16384 elements per partition from a tile of up to 3 dimensions and "
     "write 8 to a 2-D [P, 8] tile", _doc("max8") + "; " + _doc("nc_find_index8")),
    ("nc_find_index8.dtype", "nc_find_index8 writes uint16 or uint32 indices", _doc("nc_find_index8")),
    ("nc_stream_shuffle.mask", "shuffle_mask is 32 ints in 0..31 or 255; src and dst share dtype and elements per "
     "partition", _doc("nc_stream_shuffle")),
    ("nc_stream_shuffle.start_partition", "src and dst start at 0 when 96/128 partitions are active, at 0/64 when 64, "
     "at 0/32/64/96 when 32 (active: max(src, dst partitions) rounded up to 32)",
     _doc("nc_stream_shuffle", "constraint 3")),
    ("dropout.operands", "dst dtype = data dtype; prob a scalar or a [P, 1] tile (float32 for integer data)",
     _doc("dropout")),
    ("rng.operands", "rng writes an integer dtype; GpSimd only from NeuronCore-v3 and never to PSUM", _doc("rng")),
    ("rand_state.operands", "PRNG state is uint32, 6 elements per lane (GpSimd) or 24 (Vector); NeuronCore-v3+",
     _doc("rand_set_state / rand_get_state")),
    ("set_rng_seed.operands", "the seed is a [1, 1] 32-bit SBUF/PSUM tensor", _doc("set_rng_seed")),
    ("reciprocal.shape", "reciprocal's dst and data have the same partitions and elements per partition",
     _doc("reciprocal")),
    ("scalar_tensor_tensor.operands", "arithmetic ops; operand0 scalar or [P, 1]; operand1 shaped like data; data "
     "and operand1 not both in PSUM", _doc("scalar_tensor_tensor")),
    # -- DMA -----------------------------------------------------------------------------------
    ("dma_copy.no_psum", "DMA cannot read PSUM", f"{RELEASE_NOTES}, NKI 0.3.0 Breaking Changes (nisa.dma_copy)"),
    ("dma_copy.size", "src and dst hold the same number of elements", _doc("dma_copy", "Tile size")),
    ("dma_copy.hwdge", "dge_mode.hwdge needs NeuronCore-v3+ and equal src/dst dtypes",
     _doc("dma_copy", ":param dge_mode:") + f"; {RELEASE_NOTES}, NKI 0.3.0 Breaking Changes"),
    ("dma_copy.engine", "engine (sync or scalar) is only valid with dge_mode.hwdge", _doc("dma_copy", ":param engine:")),
    ("dma_copy.priority", "priority is 0-3 and NeuronCore-v4+ only", _doc("dma_copy", ":param priority:")),
    ("dma_copy.indirect", "vector_offset indirection needs software DGE and only one indirect side",
     _doc("dma_copy", "Indirect addressing") + " and nki/deep-dives/nki-dge.rst (software DGE); assumption: only one "
     "indirect side (no page states it; every example has one)"),
    ("dma_copy.indirect_v3", "vector_offset (gather/scatter) DMAs need NeuronCore-v3+: software DGE supports "
     "indirect access from v3 on", "nki/deep-dives/nki-dge.rst, DGE mode table (swdge: Min HW 'Any (indirect: v3+)')"),
    ("dma_copy.oob", "out-of-range indirect indices raise unless oob_mode.skip", _doc("dma_copy", ":param oob_mode:")),
    ("dma_transpose.operands", "dst in SBUF, src in HBM/SBUF, same dtype, 2-byte dtype for DGE transposes, axes "
     "(1,0)/(2,1,0)/(3,1,2,0), dst shape = transposed src shape", _doc("dma_transpose")),
    ("dma_compute.operands", "reduce_op add, scales all 1.0, 1-16 sources of dst's element count",
     _doc("dma_compute")),
    ("core_barrier.both_cores", "both programs of the kernel[2] launch reach every core_barrier and sendrecv, in the "
     "same order (else the launch hangs on hardware)", _doc("core_barrier") + "; " + _doc("sendrecv") + "; "
     "nki/guides/nki_simulator.rst (kernel[2] runs two threads; sendrecv and core_barrier synchronise them); "
     "assumption: a sendrecv meets the other core as a core_barrier does, whatever its dma_engine"),
    ("sendrecv.operands", "src and dst are SBUF tiles of one dtype, shape and layout; send_to_rank and "
     "recv_from_rank are 0 or 1, and each core's send is the other core's receive; dma_engine.gpsimd_dma moves at "
     "most 1024 / 512 / 256 bytes per partition of 32 / 16 / 8-bit types", _doc("sendrecv")),
    ("dma_compute.static_address", "srcs and dst have compile-time addresses: no scalar_offset unless vector_offset "
     "is used", _doc("dma_compute", "Memory types")),
    ("dma_compute.rmw", "with a vector_offset: exactly 2 sources, unique_indices=True; scatter (dst HBM indirect, a "
     "source that is dst, SBUF data) or gather (dst SBUF, an indirect HBM source, a source that is dst); a repeated "
     "index is refused (assumption: only unique indices are supported)", _doc("dma_compute", "Read-Modify-Write")),
    # -- registers -----------------------------------------------------------------------------
    ("register.operands", "register_load/store move one 32-bit value (u8, u16, u32, i8, i16, i32 or fp32) from/to a "
     "one-element tensor; register_move takes an int or a VirtualRegister; an fp32 value is stored to float32 only "
     "and is no loop bound or offset (assumption: no conversion between a register's data types is documented)",
     _doc("register_load / register_store / register_move") + "; nki/get-started/nki-language-guide.rst, Dynamic "
     "Control Flow (each register is 32-bit and supports u8, u16, u32, i8, i16, i32 and fp32)"),
    ("register.python-value", "a register's value is not known while the kernel is built: int(), range(), "
     "comparisons and Python arithmetic on a VirtualRegister, and any Python use of a fori_loop or dynamic_range "
     "index, raise TypeError (`while reg:` still runs in NKI 0.6, deprecated)",
     f"{STUB_ISA}, class VirtualRegister (note: under the tracer frontend 'using a register in Python control flow "
     "(if/while) or converting it with int() / range() raises TypeError'); nki/migration/index.rst, Rules for "
     "migrated loops ('Do not ... perform Python arithmetic on it')"),
]

for _rule_id, _text, _source in _RULES:
    register(_rule_id, _text, _source)

RULE_IDS = frozenset(r[0] for r in _RULES)
