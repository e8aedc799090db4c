"""bench/oracle_seed_spread.py on hand-made runs whose spreads are known."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("oracle_seed_spread", ROOT / "bench" / "oracle_seed_spread.py")
oracle_seed_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(oracle_seed_spread)


def _seed(dste, fp32, best_per_snapshot, feasible):
    return {
        "policies": {"dste_dqn": {"accuracy": dste}, "fp32": {"accuracy": fp32},
                     "static_hindsight_feasible": {"accuracy": feasible}},
        "oracle_heldout_within_budget": [{"accuracy": a} for a in best_per_snapshot],
    }


def _write(tmp_path, seeds):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps({"per_seed": seeds}))
    return tmp_path / "run"


def test_spreads_are_population_stds_over_seeds_of_per_seed_means(tmp_path, capsys):
    seeds = [_seed(0.70, 0.80, [0.70, 0.74], 0.69), _seed(0.72, 0.81, [0.73, 0.75], 0.70),
             _seed(0.74, 0.82, [0.74, 0.78], 0.71)]
    run = _write(tmp_path, seeds)
    out = tmp_path / "table.md"
    oracle_seed_spread.main([f"X,drift={run}", "--out", str(out)])
    best = [72.0, 74.0, 76.0]  # each seed's mean over its snapshots, in points
    expected = (f"| X,drift | 72.00 ± {np.std([70, 72, 74]):.2f} | 74.00 ± {np.std(best):.2f} | 70.00 ± "
                f"{np.std([69, 70, 71]):.2f} | 81.00 ± {np.std([80, 81, 82]):.2f} | {np.std([-10, -9, -8]):.2f} |")
    assert out.read_text().splitlines()[-1] == expected
    assert expected in capsys.readouterr().out


def test_a_run_without_the_per_snapshot_oracle_is_refused_by_name(tmp_path, capsys):
    seeds = [_seed(0.7, 0.8, [0.7], 0.7)]
    seeds[0]["oracle_heldout_within_budget"] = [None]  # no plan fit that snapshot's budget
    run = _write(tmp_path, seeds)
    with pytest.raises(SystemExit):
        oracle_seed_spread.main([f"Y,steady={run}"])
    assert "Y,steady: the run has no per-snapshot best within each budget" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        oracle_seed_spread.main(["no-directory-named"])
    assert "expected LABEL=DIR" in capsys.readouterr().err
