"""``python -m dste.distributed``: its arguments and the exit status of ``--check``."""

import os
import socket
import subprocess
import sys

import pytest

from dste.distributed.__main__ import parse_args


@pytest.mark.parametrize("argv, match", [
    (["--hidden", "0"], "argument --hidden: must be >= 1"),  # GCNWeights refused it on every rank, after the load
    (["--classes", "-1"], "argument --classes: must be >= 0"),
    (["--timeout", "0"], "argument --timeout: must be > 0"),  # the store: "timed out after 0ms"
    (["--timeout", "-5"], "argument --timeout: must be > 0"),
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
