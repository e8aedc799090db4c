"""``dste bench`` keeps earlier results and refuses options it cannot honour before any graph is generated.

Every bench here fails or is refused before its first measurement, so none runs longer than a graph generation.
"""

import argparse
import io
import os
import re

import numpy as np
import pytest

from dste.cli import main as cli_main
from dste.experiments import bench
from tests.experiments.bench_threads import restore_threads  # noqa: F401  (autouse)


def _args(*argv):
    return bench.add_bench_arguments(argparse.ArgumentParser()).parse_args(
        ["--graph", "cora-like", "--orders", "random", "--repeats", "1", "--threads", "1", "--no-progress",
         "--no-simulator", "--no-plot", *argv])


def _no_work(*_args, **_kwargs):
    raise AssertionError("a graph was generated before the options were checked")


@pytest.mark.parametrize("held", bench.OUTPUT_FILES)
def test_a_directory_holding_an_earlier_bench_is_refused_before_any_work(tmp_path, monkeypatch, held):
    (tmp_path / held).write_text('{"precious": 1}')
    monkeypatch.setattr(bench, "prepare_workloads", _no_work)
    with pytest.raises(ValueError, match=f"--out {tmp_path} already holds a bench's {held}; give a new directory, "
                                         "or --overwrite to replace"):
        bench.run_bench(_args("--out", str(tmp_path)), stream=io.StringIO())
    assert (tmp_path / held).read_text() == '{"precious": 1}'


def test_a_bench_whose_every_step_failed_writes_nothing_even_with_overwrite(tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("generator exploded")

    (tmp_path / "bench.json").write_text('{"precious": 1}')
    monkeypatch.setattr(bench, "prepare_workloads", broken)
    stream = io.StringIO()
    assert bench.main(_args("--out", str(tmp_path), "--overwrite")) == 1
    results = bench.run_bench(_args("--out", str(tmp_path), "--overwrite"), stream=stream)
    assert results["errors"] == [{"step": "cora-like: generate + encode", "error": "RuntimeError: generator exploded"}]
    assert (tmp_path / "bench.json").read_text() == '{"precious": 1}'
    assert "wrote nothing: every step failed" in stream.getvalue()
    fresh = tmp_path / "fresh"
    bench.run_bench(_args("--out", str(fresh)), stream=io.StringIO())
    assert not fresh.exists()  # no empty directory left behind either


def test_overwrite_replaces_an_earlier_bench_that_measured_something(tmp_path, monkeypatch):
    (tmp_path / "bench.json").write_text('{"precious": 1}')
    monkeypatch.setattr(bench, "cpu_spmm", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no CPU today")))
    monkeypatch.setattr(bench, "modelled_latencies", lambda *a, **k: [])
    monkeypatch.setattr(bench, "encode_throughput", lambda *a, **k: None)
    bench.run_bench(_args("--features", "4", "--out", str(tmp_path), "--overwrite"), stream=io.StringIO())
    assert "precious" not in (tmp_path / "bench.json").read_text()


def test_the_default_directory_is_new_for_every_bench(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "prepare_workloads", lambda *a, **k: [])  # a step that succeeds without figures
    assert bench.add_bench_arguments(argparse.ArgumentParser()).parse_args([]).out is None
    first = bench.run_bench(_args(), stream=io.StringIO())["json_path"]
    second = bench.run_bench(_args(), stream=io.StringIO())["json_path"]  # refused if both wrote to one directory
    assert first != second
    for path in (first, second):
        assert os.path.isfile(path) and os.path.dirname(os.path.dirname(path)) == str(bench.DEFAULT_OUT_PARENT)
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", os.path.basename(os.path.dirname(first)))  # a timestamp


def test_out_naming_a_file_is_refused_by_name(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match=f"--out {afile} is an existing file, not a directory"):
        bench.run_bench(_args("--out", str(afile)), stream=io.StringIO())
    # the console script: the message, no traceback, usage status 2 ("[Errno 17] File exists" before)
    with pytest.raises(SystemExit) as info:
        cli_main(["bench", "--graph", "cora-like", "--no-progress", "--out", str(afile)])
    assert info.value.code == 2
    assert "is an existing file, not a directory" in capsys.readouterr().err


def test_a_width_the_memory_cannot_hold_is_refused_before_the_graph_is_generated(tmp_path, monkeypatch):
    import dste.experiments.env_layers as env_layers

    monkeypatch.setattr(bench, "prepare_workloads", _no_work)
    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 16 * 2**30)
    # 2,708 nodes x 10^9 features x 4 B: "Unable to allocate 19.7 TiB" in every step before
    with pytest.raises(MemoryError, match=r"--features 1000000000 on cora-like \(2,708 nodes\) needs about .* GB .* "
                                          r"17.2 GB is available; the widest F that fits is 158,602"):
        bench.run_bench(_args("--features", "64", "1000000000", "--out", str(tmp_path)), stream=io.StringIO())
    assert not any(tmp_path.iterdir())


def test_the_sizing_and_feature_range_helpers_name_what_they_take():
    """An array passed for a graph failed with AttributeError ('numpy.ndarray' object has no attribute 'x')."""
    from dste.experiments.feature_range import features_in_range
    from dste.experiments.sizing import GraphSize

    with pytest.raises(TypeError, match="features_in_range takes a dste.data.Graph, got ndarray"):
        features_in_range(np.ones((3, 3)))
    with pytest.raises(TypeError, match=r"GraphSize.of takes a dste.data.Graph \(num_nodes, x, adj\), got ndarray"):
        GraphSize.of(np.ones(3))
