"""Modelled NeuronCore latency of ``spmm_hybrid`` (trn2, LNC2; descriptor-bound and optimistic DMA models) beside the fixed 128x128 block-column layout and a
per-edge gather kernel, with tile counts and DMA bytes.

Every latency here is **modelled** by ``dste.kernels.cost`` (labelled ``modelled, <target>`` in
``extra_info``); the benchmark's own timing is only the time the model takes to evaluate.
"""

import pytest

from dste.experiments import bench


@pytest.mark.parametrize("target", bench.TARGETS)
@pytest.mark.parametrize("x_mode, hi_fraction", bench.x_configurations())
def test_modelled_latency(benchmark, workload, features, target, x_mode, hi_fraction):
    benchmark.group = f"modelled {target} {x_mode} fp16-rows {hi_fraction:g}"
    rows = benchmark.pedantic(bench.modelled_latencies, args=(workload, [features], [target], [x_mode], [hi_fraction]),
                              rounds=1, iterations=1)
    (row,) = rows
    benchmark.extra_info.update(row)
    assert row["label"] == f"modelled, {target}"
