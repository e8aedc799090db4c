"""``python -m dste.distributed``: its arguments and the exit status of ``--check``."""

import os
import re
import socket
import subprocess
import sys

import pytest

from dste.distributed.__main__ import parse_args


@pytest.mark.parametrize("argv, match", [
    (["--hidden", "0"], "argument --hidden: must be >= 1"),  # GCNWeights refused it on every rank, after the load
    (["--classes", "-1"], "argument --classes: must be >= 0"),
    (["--timeout", "0"], "argument --timeout: a timeout must be > 0 seconds"),  # the store: "timed out after 0ms"
    (["--timeout", "-5"], "argument --timeout: a timeout must be > 0 seconds"),
    (["--check-atol", "nan"], "argument --check-atol: must be >= 0 and finite"),
    (["--backend", "gpu"], "argument --backend: invalid choice: 'gpu'"),  # every rank failed, after the load
])
def test_arguments_the_job_would_fail_on_later_are_refused(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2 and match in capsys.readouterr().err


# One rank (a process group of one, its store hosted by itself); rank 0's single-process reference is shifted by
# OFFSET so the comparison's outcome is known: 0 passes (the runs differ by ~5e-7), 1e-3 is past the cpu default
# 1e-4, NaN is no number at all (both printed "max |...| = ..." and exited 0 before).
_ONE_RANK_JOB = """
import sys
import dste.distributed.gcn as gcn
real = gcn.gcn_reference
gcn.gcn_reference = lambda *args, **kwargs: real(*args, **kwargs) + float(sys.argv[1])
from dste.distributed.__main__ import main
sys.exit(main(["--check", "--timeout", "60"]))
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
@pytest.mark.parametrize("offset, status", [("0", 0), ("1e-3", 1), ("nan", 1)])
def test_check_fails_the_job_when_the_runs_differ(offset, status):
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _ONE_RANK_JOB, offset], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "max |distributed - single process| =" in proc.stdout
    assert ("check FAILED" in proc.stderr) == bool(status)


_GOOD_ENV = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize("env, argv, match", [
    ({"WORLD_SIZE": "0"}, [], r"WORLD_SIZE \(the number of ranks\) must be an integer in \[1, "),  # init_distributed
    ({"RANK": "3"}, [], r"RANK \(this process's rank among WORLD_SIZE=2\) must be an integer in \[0, 1\], got 3"),
    ({"RANK": "-1"}, [], r"RANK .* must be an integer in \[0, 1\], got -1"),
    ({"MASTER_PORT": "99999"}, [], r"MASTER_PORT .* must be an integer in \[1, 65535\], got 99999"),  # pybind error
    ({"MASTER_PORT": "http"}, [], "MASTER_PORT must be an integer, got 'http'"),
    ({"RANK": None}, [], "environment variable RANK is not set"),
    ({}, ["--dataset", "no-such-graph"], "--dataset: unknown dataset 'no-such-graph'; allowed: presets"),
    ({}, ["--dataset", ""], "--dataset: dataset name must be a non-empty string"),  # was a TypeError's traceback
    ({}, ["--dataset", "cora"], r"--dataset: dataset 'cora' is read from disk: give its data root \(root=\.\.\., "
                                r"--root DIR on the command line\) or set DSTE_DATA_ROOT"),
    # found by rank 0 alone, after the ranks had joined
    ({}, ["--dataset", "/nowhere/missing.npz"], r"--dataset: no \.npz file at /nowhere/missing\.npz$"),
    ({}, ["--dataset", "cora", "--root", "/nowhere"], r"--dataset: Planetoid files \['ind\.cora\.x'.* not all found"),
    ({}, ["--dataset", "ogbn-arxiv", "--root", "/nowhere"], "--dataset: no OGB folder for 'ogbn-arxiv'"),
])
def test_a_bad_environment_or_dataset_is_one_line_naming_it_before_joining_the_job(monkeypatch, capsys, env, argv,
                                                                                   match):
    import dste.distributed.runtime as runtime
    from dste.distributed.__main__ import main

    def no_join(*_args, **_kwargs):
        raise AssertionError("joined the job before the check")

    monkeypatch.setattr(runtime, "init_distributed", no_join)
    monkeypatch.delenv("DSTE_DATA_ROOT", raising=False)
    for name, value in {**_GOOD_ENV, **env}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m dste.distributed: error: ") and "Traceback" not in err
    assert re.search(match, err), err


@pytest.mark.parametrize("value", ["1e308", "1e-6", "nan", "inf"])  # OverflowError; "timed out after 0 ms"
def test_a_timeout_the_store_cannot_take_is_refused_by_the_option(value, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--timeout", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --timeout: a timeout must be > 0 seconds, from 0.001 s" in err and "604800" in err
    assert parse_args(["--timeout", "0.5"]).timeout == 0.5


@pytest.mark.multiprocess
def test_a_dataset_rank_0_cannot_read_is_one_line_not_a_traceback(tmp_path):
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               OMP_NUM_THREADS="1")
    missing = str(tmp_path / "missing.npz")
    proc = subprocess.run([sys.executable, "-m", "dste.distributed", "--dataset", missing, "--timeout", "60"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("python -m dste.distributed: error: ") and "Traceback" not in proc.stderr
    assert "missing.npz" in proc.stderr


# The same job with the second GCN layer's weight and bias 1,000 times larger: logits 1,000 times larger.
_LARGE_LOGITS_JOB = _ONE_RANK_JOB.replace("from dste.distributed.__main__ import main", """\
import dataclasses
random = gcn.GCNWeights.random.__func__
def larger(cls, *args, **kwargs):
    weights = random(cls, *args, **kwargs)
    return dataclasses.replace(weights, w2=weights.w2 * 1000, b2=weights.b2 * 1000)
gcn.GCNWeights.random = classmethod(larger)
from dste.distributed.__main__ import main""")


@pytest.mark.multiprocess
@pytest.mark.parametrize("offset, status", [("1e-3", 0), ("10", 1)])
def test_check_scales_its_default_tolerance_with_the_logits(offset, status):
    # an absolute 1e-4 failed two correct runs of a star graph whose logits reach 245 (they differed by 2.9e-4)
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _LARGE_LOGITS_JOB, offset], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert ("check FAILED" in proc.stderr) == bool(status)


def test_a_busy_port_is_named_before_any_rendezvous():
    from dste.distributed.runtime import init_distributed

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConnectionError, match=r"could not host the job's TCP store at 127.0.0.1:\d+ .*MASTER_PORT"):
            init_distributed(0, 1, "127.0.0.1", busy.getsockname()[1], timeout_s=5, host_store=True)
