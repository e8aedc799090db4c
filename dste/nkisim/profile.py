"""Per-run profile: instruction counts, DMA traffic and *modelled* engine time.

All times are modelled from the constants in :mod:`dste.nkisim.cost` for one
target; none is a hardware measurement. Latency has two bounds:

- ``overlapped``: every engine and DMA queue runs concurrently, so the run takes
  as long as the busiest one (max over TensorE, VectorE, ScalarE, GpSimd and the
  16 DMA queues);
- ``serial``: nothing overlaps, so it is the sum of every engine's busy time
  plus every DMA transfer's time on one queue (one sixteenth of the engines' bandwidth), and profiles of
  programs on separate cores add: a loose upper bound, not "the overlapped bound without overlap".

``launches`` counts programs: a ``kernel[2]`` call is two.

Both bounds exist for two DMA models (``cost.DMA_MODELS``), kept side by side:

- ``"descriptor"`` (default): bytes move at peak times ``cost.dma_efficiency`` of their contiguous run
  length, and indirect (software-DGE) transfers charge descriptor generation to GpSimd;
- ``"optimistic"``: the fixed cost plus every byte at peak, no descriptor generation.

``latency_overlapped_us`` / ``latency_serial_us`` report the default model; ``latency_us(model=...,
bound=...)`` either. Profiles of successive launches add with :meth:`Profile.merge`.
"""

import json

from . import cost

COMPUTE_ENGINES = cost.ENGINES
ENGINE_LABELS = {"tensor": "TensorE", "vector": "VectorE", "scalar": "ScalarE", "gpsimd": "GpSimd", "dma": "DMA"}


class Profile:
    def __init__(self, target="trn2"):
        self.target = cost.normalize_target(target)
        self.instructions = {engine: 0 for engine in COMPUTE_ENGINES + ("dma",)}
        self.ops = {}
        self.engine_cycles = {engine: 0.0 for engine in COMPUTE_ENGINES}
        n_queues = int(cost.constant("dma_queues", self.target))
        # per DMA model: busy ns of each of the 16 DMA engines, and the sum of every transfer's time
        self.dma_queue_ns_by_model = {m: [0.0] * n_queues for m in cost.DMA_MODELS}
        self.dma_serial_ns_by_model = {m: 0.0 for m in cost.DMA_MODELS}
        # GpSimd cycles of software descriptor generation (descriptor model only; not instructions)
        self.swdge_cycles = 0.0
        self.dma_transfers = 0
        self.dma_indirect_transfers = 0
        self.dma_descriptors = 0
        self.dma_bytes = 0
        self.launches = 1
        self.peak_sbuf_bytes_per_partition = 0
        self.peak_psum_bytes_per_partition = 0
        self._overlapped_ns = None  # per model, set for merged profiles
        # The program's run-time control-flow decisions, in order: (kernel source line, what, value) for each
        # dynamic loop's trip count and each register condition Python tested. The programs of a kernel[2] launch
        # must decide alike at the lines both run (jit.run_kernel checks). Empty for merged profiles.
        self.control_flow = []
        # the name= of every instruction issued with one (what Kernel.with_schedule's edges may name)
        self.instruction_names = set()

    # -- recording -------------------------------------------------------------------------
    def record(self, engine, op, cycles):
        self.instructions[engine] += 1
        self.ops[op] = self.ops.get(op, 0) + 1
        self.engine_cycles[engine] += float(cycles)

    def record_dma(self, op, nbytes, partition_start=0, partitions=None, *, contiguous_bytes=None,
                   descriptors=None, indirect=False):
        """One transfer (``cost.dma_charge``): the fixed cost on the least busy queue, the bytes split over
        the DMA engines serving the SBUF-side partitions (all 16 when ``partitions`` is None).

        ``contiguous_bytes``: the longest contiguous run per partition/row (None: ``nbytes`` spread evenly
        over the descriptors); ``descriptors``: descriptor elements, e.g. rows of an indirect gather (None:
        ``partitions``); ``indirect``: vector/scalar-offset access, whose descriptors software DGE builds
        on GpSimd (charged to GpSimd under the descriptor model).
        """
        run, n_desc = cost.dma_transfer_shape(nbytes, partitions, contiguous_bytes, descriptors)
        for model in cost.DMA_MODELS:
            self.dma_serial_ns_by_model[model] += cost.dma_cost_ns(nbytes, self.target, model, run)
            cost.dma_charge(self.dma_queue_ns_by_model[model], nbytes, self.target, partition_start, partitions,
                            model=model, run_bytes=run)
        if indirect:
            self.swdge_cycles += cost.swdge_descriptor_cycles(n_desc, self.target)
            self.dma_indirect_transfers += 1
        self.instructions["dma"] += 1
        self.ops[op] = self.ops.get(op, 0) + 1
        self.dma_transfers += 1
        self.dma_descriptors += n_desc
        self.dma_bytes += int(nbytes)

    # -- the default model's DMA figures, under their historical names --------------------
    @property
    def dma_queue_ns(self):
        return self.dma_queue_ns_by_model[cost.DEFAULT_DMA_MODEL]

    @property
    def dma_serial_ns(self):
        return self.dma_serial_ns_by_model[cost.DEFAULT_DMA_MODEL]

    # -- derived figures (modelled) --------------------------------------------------------
    def engine_cycles_for(self, model=cost.DEFAULT_DMA_MODEL):
        """Engine cycles under a DMA model: the descriptor model adds software-DGE time to GpSimd."""
        cycles = dict(self.engine_cycles)
        if model == "descriptor":
            cycles["gpsimd"] += self.swdge_cycles
        return cycles

    def engine_busy_ns(self, model=cost.DEFAULT_DMA_MODEL):
        cost._check_model(model)
        busy = {e: cost.cycles_to_ns(c, e, self.target) for e, c in self.engine_cycles_for(model).items()}
        busy["dma"] = max(self.dma_queue_ns_by_model[model])
        return busy

    def latency_us(self, model=cost.DEFAULT_DMA_MODEL, bound="overlapped"):
        """Modelled latency under DMA ``model`` (``"descriptor"`` or ``"optimistic"``); ``bound`` is
        ``"overlapped"`` (busiest engine or DMA queue) or ``"serial"`` (nothing overlaps)."""
        cost._check_model(model)
        if bound == "overlapped":
            if self._overlapped_ns is not None:
                return self._overlapped_ns[model] / 1000.0
            return max(self.engine_busy_ns(model).values()) / 1000.0
        if bound == "serial":
            busy = self.engine_busy_ns(model)
            return (sum(busy[e] for e in COMPUTE_ENGINES) + self.dma_serial_ns_by_model[model]) / 1000.0
        raise ValueError(f"Profile.latency_us: unknown bound {bound!r}; allowed: overlapped, serial")

    @property
    def latency_overlapped_us(self):
        return self.latency_us(cost.DEFAULT_DMA_MODEL, "overlapped")

    @property
    def latency_serial_us(self):
        return self.latency_us(cost.DEFAULT_DMA_MODEL, "serial")

    @property
    def total_instructions(self):
        return sum(self.instructions.values())

    # -- combination -----------------------------------------------------------------------
    def merge(self, other, parallel=False):
        """A new profile for ``self`` then ``other`` (``parallel=True``: on separate cores at once).

        Counts, bytes and busy time add. The overlapped bound adds for successive
        launches and takes the max for launches on separate cores.
        """
        if other.target != self.target:
            raise ValueError(f"cannot merge profiles of different targets ({self.target} and {other.target})")
        merged = Profile(self.target)
        for engine in merged.instructions:
            merged.instructions[engine] = self.instructions[engine] + other.instructions[engine]
        for source in (self.ops, other.ops):
            for op, n in source.items():
                merged.ops[op] = merged.ops.get(op, 0) + n
        for engine in merged.engine_cycles:
            merged.engine_cycles[engine] = self.engine_cycles[engine] + other.engine_cycles[engine]
        for model in cost.DMA_MODELS:
            merged.dma_queue_ns_by_model[model] = [
                a + b for a, b in zip(self.dma_queue_ns_by_model[model], other.dma_queue_ns_by_model[model])
            ]
            merged.dma_serial_ns_by_model[model] = self.dma_serial_ns_by_model[model] + other.dma_serial_ns_by_model[model]
        merged.swdge_cycles = self.swdge_cycles + other.swdge_cycles
        merged.dma_transfers = self.dma_transfers + other.dma_transfers
        merged.dma_indirect_transfers = self.dma_indirect_transfers + other.dma_indirect_transfers
        merged.dma_descriptors = self.dma_descriptors + other.dma_descriptors
        merged.dma_bytes = self.dma_bytes + other.dma_bytes
        merged.launches = self.launches + other.launches
        merged.instruction_names = self.instruction_names | other.instruction_names
        merged.peak_sbuf_bytes_per_partition = max(self.peak_sbuf_bytes_per_partition, other.peak_sbuf_bytes_per_partition)
        merged.peak_psum_bytes_per_partition = max(self.peak_psum_bytes_per_partition, other.peak_psum_bytes_per_partition)
        merged._overlapped_ns = {}
        for model in cost.DMA_MODELS:
            a, b = self.latency_us(model) * 1000.0, other.latency_us(model) * 1000.0
            merged._overlapped_ns[model] = max(a, b) if parallel else a + b
        return merged

    @staticmethod
    def merge_all(profiles, parallel=False):
        profiles = list(profiles)
        if not profiles:
            raise ValueError("merge_all needs at least one profile")
        result = profiles[0]
        for p in profiles[1:]:
            result = result.merge(p, parallel=parallel)
        return result

    # -- output ----------------------------------------------------------------------------
    def to_dict(self):
        busy = self.engine_busy_ns()
        return {
            "dma_model_default": cost.DEFAULT_DMA_MODEL,
            "dma_model_assumptions": {
                name: cost.CONSTANTS[name].source
                for name in ("dma_efficiency_knee_bytes", "dma_efficiency_sharpness", "swdge_fixed_cycles",
                             "swdge_cycles_per_descriptor")
            },
            "latency_us_modelled_by_dma_model": {
                m: {b: round(self.latency_us(m, b), 6) for b in ("overlapped", "serial")} for m in cost.DMA_MODELS
            },
            "dma_indirect_transfers": self.dma_indirect_transfers,
            "dma_descriptors": self.dma_descriptors,
            "swdge_gpsimd_cycles_modelled": round(self.swdge_cycles, 3),
            "modelled": True,
            "target": self.target,
            "launches": self.launches,
            "instructions": dict(self.instructions),
            "ops": dict(sorted(self.ops.items())),
            # the default DMA model's cycles (GpSimd's include software-DGE descriptor generation), as table() and
            # engine_busy_us_modelled count them
            "engine_cycles_modelled": {e: round(c, 3) for e, c in self.engine_cycles_for().items()},
            "engine_busy_us_modelled": {e: round(ns / 1000.0, 6) for e, ns in busy.items()},
            "dma_transfers": self.dma_transfers,
            "dma_bytes": self.dma_bytes,
            "dma_queue_busy_us_modelled": [round(ns / 1000.0, 6) for ns in self.dma_queue_ns],
            "latency_overlapped_us_modelled": round(self.latency_overlapped_us, 6),
            "latency_serial_us_modelled": round(self.latency_serial_us, 6),
            "peak_sbuf_bytes_per_partition": self.peak_sbuf_bytes_per_partition,
            "peak_psum_bytes_per_partition": self.peak_psum_bytes_per_partition,
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def table(self):
        busy = self.engine_busy_ns()
        cycles = self.engine_cycles_for()
        t = self.target
        lines = [
            f"nkisim profile, target {t} (all times modelled from documented rules, not measured)",
            f"{'engine':<9}{'instr':>8}{'cycles (modelled)':>20}{'busy us (modelled, ' + t + ')':>30}"
            "   (descriptor-bound DMA model)",
        ]
        for engine in COMPUTE_ENGINES:
            lines.append(
                f"{ENGINE_LABELS[engine]:<9}{self.instructions[engine]:>8}"
                f"{cycles[engine]:>20.0f}{busy[engine] / 1000.0:>30.3f}"
            )
        lines.append(
            f"{'DMA':<9}{self.instructions['dma']:>8}{'-':>20}{busy['dma'] / 1000.0:>30.3f}"
            "   (busiest of 16 queues)"
        )
        lines += [
            f"DMA transfers {self.dma_transfers} ({self.dma_indirect_transfers} indirect), descriptors "
            f"{self.dma_descriptors}, bytes {self.dma_bytes}; software-DGE GpSimd cycles {self.swdge_cycles:.0f} "
            f"(in GpSimd above)",
            f"{'latency bound (modelled, ' + t + ')':<34}{'descriptor-bound':>18}{'optimistic':>14}",
            f"{'  engines overlapped, us (modelled)':<34}{self.latency_us('descriptor'):>18.3f}"
            f"{self.latency_us('optimistic'):>14.3f}",
            f"{'  nothing overlapped, us (modelled)':<34}{self.latency_us('descriptor', 'serial'):>18.3f}"
            f"{self.latency_us('optimistic', 'serial'):>14.3f}",
            f"peak live SBUF {self.peak_sbuf_bytes_per_partition} B/partition, "
            f"PSUM {self.peak_psum_bytes_per_partition} B/partition; launches {self.launches}",
        ]
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"Profile(target={self.target!r}, instructions={self.total_instructions}, "
            f"dma_bytes={self.dma_bytes}, overlapped_us_modelled={self.latency_overlapped_us:.3f})"
        )
