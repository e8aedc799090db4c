"""The README's Python examples run as written and their results match SciPy / NumPy."""

import re
import sys
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_five_minute_example_runs_and_agrees_with_scipy(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    match = re.search(r"## Five minutes with DSTE.*?```python\n(.*?)```", text, re.S)
    assert match, "README lost its 'Five minutes with DSTE' python block"
    monkeypatch.chdir(tmp_path)  # nothing the example writes may land in the working directory
    scope: dict = {}
    exec(compile(match.group(1), "README.md", "exec"), scope)

    adj, x, y, y_cpu = scope["adj"], scope["x"], scope["y"], scope["y_cpu"]
    # binary A + I: a self loop already in A is not doubled (dste.format.gcn's convention)
    structure = ((adj.toarray() + np.eye(adj.shape[0])) > 0).astype(np.float64)
    d = 1.0 / np.sqrt(structure.sum(axis=1))
    expected = (d[:, None] * structure * d[None, :]) @ x.astype(np.float64)
    scale = np.abs(expected).max()
    # CPU op: fp32 products of exact values
    assert np.abs(y_cpu.numpy() - expected).max() <= 1e-5 * scale
    # kernel: its own rounding (spmm_error_bound, against the reference of the rows it was given) plus what the
    # INT8 rows lost of x (at most half a step per element, step = max|row| / 127), carried by |Â|; the float32
    # normalisation factors against exact square roots add a few ulps
    from dste.reference import reference_matrix, spmm_error_bound

    A, xq = scope["A"], scope["xq"]
    rows_lost = np.abs(np.asarray(xq.dequantize(), np.float64) - x)
    assert (rows_lost <= 0.5 * np.abs(x).max(axis=1, keepdims=True) / 127 * (1 + 1e-6)).all()
    bound = spmm_error_bound(A, xq) + abs(reference_matrix(A)) @ rows_lost + 1e-6 * np.abs(expected) + 1e-12
    error = np.abs(np.asarray(y, np.float64) - expected)
    assert (error <= bound).all() and (error / bound).max() > 0.05  # within it, and it is not vacuous
    assert Path(scope["path"]).is_file() and not any(tmp_path.iterdir())


def test_unmodified_kernel_example_runs_and_agrees_with_numpy(monkeypatch):
    text = README.read_text(encoding="utf-8")
    match = re.search(r"An unmodified kernel file runs on CPU:\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its unmodified-kernel python block"
    monkeypatch.chdir(README.parent)  # the example runs from the repository root
    monkeypatch.setattr(sys, "path", list(sys.path))  # the example's sys.path entry ends with the test
    monkeypatch.delitem(sys.modules, "nki_kernels", raising=False)  # and so does the module it imports that way
    # (the simulator it installs as nki is what tests/nkisim/conftest.py installs at collection anyway)
    scope: dict = {}
    exec(compile(match.group(1), "README.md", "exec"), scope)
    sys.modules.pop("nki_kernels", None)
    a, b, y, prof = scope["a"], scope["b"], scope["y"], scope["prof"]
    expected = a.astype(np.float64).T @ b.astype(np.float64)
    # fp32 products accumulated in fp32 PSUM over K = 256: a few ulps of |a|.T @ |b|
    assert np.abs(y - expected).max() <= 1e-5 * (np.abs(a).T @ np.abs(b)).max()
    assert "modelled" in prof.table()


def test_controller_example_runs_and_keeps_its_budget(monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    match = re.search(r"fits the whole controller `dste run` reports.*?```python\n(.*?)```", text, re.S)
    assert match, "README lost its controller python block"
    scope: dict = {}
    exec(compile(match.group(1), "README.md", "exec"), scope)
    env, fitted, reward = scope["env"], scope["fitted"], scope["reward"]
    from dste.controller import run_policy

    controller = run_policy(env, fitted.policy, env.snapshots("heldout"))
    for outcome in controller.outcomes:  # the guard's hard rule, where any plan fits
        budget = fitted.guard.budget_us(outcome.snapshot)
        assert budget is not None and (outcome.latency_us <= budget * (1 + 1e-9)
                                       or outcome.latency_us <= fitted.guard.cheapest_us(outcome.snapshot) * (1 + 1e-9))
    assert 0.0 <= controller.accuracy <= 1.0 and reward.budget == 0.95
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["dste_dqn", "greedy", "fp32", "int8", "static_sparse50_int8", "fp16"]
