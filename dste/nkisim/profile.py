"""Per-run profile: instruction counts, DMA traffic and *modelled* engine time.

All times are modelled from the constants in :mod:`dste.nkisim.cost` for one
target; none is a hardware measurement. Latency has two bounds:

- ``overlapped``: every engine and DMA queue runs concurrently, so the run takes
  as long as the busiest one (max over TensorE, VectorE, ScalarE, GpSimd and the
  16 DMA queues);
- ``serial``: nothing overlaps, so it is the sum of every engine's busy time
  plus every DMA transfer's time.

Profiles of successive launches add with :meth:`Profile.merge`.
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
        self.dma_queue_ns = [0.0] * n_queues
        self.dma_transfers = 0
        self.dma_bytes = 0
        self.dma_serial_ns = 0.0
        self.launches = 1
        self.peak_sbuf_bytes_per_partition = 0
        self.peak_psum_bytes_per_partition = 0
        self._overlapped_ns = None  # set for merged profiles

    # -- recording -------------------------------------------------------------------------
    def record(self, engine, op, cycles):
        self.instructions[engine] += 1
        self.ops[op] = self.ops.get(op, 0) + 1
        self.engine_cycles[engine] += float(cycles)

    def record_dma(self, op, nbytes, partition_start=0, partitions=None):
        """One transfer (``cost.dma_charge``): the fixed cost on the least busy queue, the bytes split over
        the DMA engines serving the SBUF-side partitions (all 16 when ``partitions`` is None)."""
        ns = cost.dma_cost_ns(nbytes, self.target)
        cost.dma_charge(self.dma_queue_ns, nbytes, self.target, partition_start, partitions)
        self.instructions["dma"] += 1
        self.ops[op] = self.ops.get(op, 0) + 1
        self.dma_transfers += 1
        self.dma_bytes += int(nbytes)
        self.dma_serial_ns += ns

    # -- derived figures (modelled) --------------------------------------------------------
    def engine_busy_ns(self):
        busy = {e: cost.cycles_to_ns(c, e, self.target) for e, c in self.engine_cycles.items()}
        busy["dma"] = max(self.dma_queue_ns)
        return busy

    @property
    def latency_overlapped_us(self):
        if self._overlapped_ns is not None:
            return self._overlapped_ns / 1000.0
        return max(self.engine_busy_ns().values()) / 1000.0

    @property
    def latency_serial_us(self):
        busy = self.engine_busy_ns()
        return (sum(busy[e] for e in COMPUTE_ENGINES) + self.dma_serial_ns) / 1000.0

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
        merged.dma_queue_ns = [a + b for a, b in zip(self.dma_queue_ns, other.dma_queue_ns)]
        merged.dma_transfers = self.dma_transfers + other.dma_transfers
        merged.dma_bytes = self.dma_bytes + other.dma_bytes
        merged.dma_serial_ns = self.dma_serial_ns + other.dma_serial_ns
        merged.launches = self.launches + other.launches
        merged.peak_sbuf_bytes_per_partition = max(self.peak_sbuf_bytes_per_partition, other.peak_sbuf_bytes_per_partition)
        merged.peak_psum_bytes_per_partition = max(self.peak_psum_bytes_per_partition, other.peak_psum_bytes_per_partition)
        a, b = self.latency_overlapped_us * 1000.0, other.latency_overlapped_us * 1000.0
        merged._overlapped_ns = max(a, b) if parallel else a + b
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
            "modelled": True,
            "target": self.target,
            "launches": self.launches,
            "instructions": dict(self.instructions),
            "ops": dict(sorted(self.ops.items())),
            "engine_cycles_modelled": {e: round(c, 3) for e, c in self.engine_cycles.items()},
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
        t = self.target
        lines = [
            f"nkisim profile, target {t} (all times modelled from documented rules, not measured)",
            f"{'engine':<9}{'instr':>8}{'cycles (modelled)':>20}{'busy us (modelled, ' + t + ')':>30}",
        ]
        for engine in COMPUTE_ENGINES:
            lines.append(
                f"{ENGINE_LABELS[engine]:<9}{self.instructions[engine]:>8}"
                f"{self.engine_cycles[engine]:>20.0f}{busy[engine] / 1000.0:>30.3f}"
            )
        lines.append(
            f"{'DMA':<9}{self.instructions['dma']:>8}{'-':>20}{busy['dma'] / 1000.0:>30.3f}"
            "   (busiest of 16 queues)"
        )
        lines += [
            f"DMA transfers {self.dma_transfers}, bytes {self.dma_bytes}",
            f"latency bound, engines overlapped (modelled, {t}): {self.latency_overlapped_us:.3f} us",
            f"latency bound, nothing overlapped (modelled, {t}): {self.latency_serial_us:.3f} us",
            f"peak live SBUF {self.peak_sbuf_bytes_per_partition} B/partition, "
            f"PSUM {self.peak_psum_bytes_per_partition} B/partition; launches {self.launches}",
        ]
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"Profile(target={self.target!r}, instructions={self.total_instructions}, "
            f"dma_bytes={self.dma_bytes}, overlapped_us_modelled={self.latency_overlapped_us:.3f})"
        )
