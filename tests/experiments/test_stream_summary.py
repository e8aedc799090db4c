"""bench/stream_summary.py, the README's stream table: its rows and counts on hand-made runs whose answers are
known, and the collected file the README's table was printed from."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("stream_summary", ROOT / "bench" / "stream_summary.py")
stream_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stream_summary)


def _policy(accuracy, latency, reward=0.5, within=1.0, std=0.005):
    return {"accuracy_mean": accuracy, "accuracy_std": std, "latency_us_mean": latency, "reward_mean": reward,
            "share_within_budget": within, "accuracy_minus_fp32_mean": accuracy - 0.85,
            "accuracy_minus_fp32_std": 0.004}


def _run(greedy, feasible, dste=None, margins=(math.inf,) * 3, distinct=(2, 3, 2), snapshots=12, seeds=3):
    summary = {
        "fp32": _policy(0.85, 200.0), "int8": _policy(0.849, 150.0), "dste_dqn": dste or _policy(0.80, 100.0, 0.75),
        "greedy": greedy, "static_hindsight": feasible, "static_hindsight_feasible": feasible,
    }
    oracle = {"per_snapshot_best_within_budget_accuracy": 0.81, "per_snapshot_best_within_budget_reward": 0.76,
              "distinct_per_snapshot_best_plans": list(distinct)}
    config = {"stream": "bursty", "snapshots": snapshots, "seeds": seeds}
    return {"config": config, "summary": summary, "oracle": oracle, "margins": list(margins)}


def test_a_baseline_counts_as_dominating_only_within_every_budget():
    overspending = _run(greedy=_policy(0.82, 99.0, within=6 / 9), feasible=_policy(0.79, 99.0, 0.74))
    line, facts = stream_summary.row("X,bursty", overspending)
    assert "greedy search (over 3 of 9)" in line and not facts["dominated_by_a_baseline_within_budgets"]
    assert facts["beats_static_within_budgets"] and facts["adaptivity"] and facts["keeps_every_budget"]
    fitting = _run(greedy=_policy(0.81, 100.0), feasible=_policy(0.79, 99.0, 0.74))
    line, facts = stream_summary.row("X,steady", fitting)
    assert "**greedy search**" in line and facts["dominated_by_a_baseline_within_budgets"] and not facts["adaptivity"]


def test_overspends_are_counted_of_the_runs_own_held_out_snapshots():
    """The count assumed 9 held-out snapshots (3 seeds x 3): a run of 16 snapshots holds out 4 per seed."""
    run = _run(greedy=_policy(0.82, 99.0, within=9 / 12), feasible=_policy(0.79, 99.0, 0.74), snapshots=16)
    line, _ = stream_summary.row("X,bursty", run)
    assert "greedy search (over 3 of 12)" in line and "of 9" not in line
    assert stream_summary.held_out_decisions(_run(None, None, snapshots=12, seeds=2)) == 6


def test_the_hindsight_plan_at_the_same_latency_and_more_accurate_dominates():
    run = _run(greedy=_policy(0.79, 101.0), feasible=_policy(0.8007, 100.0 + 6e-7, 0.7507))
    line, facts = stream_summary.row("Cora,steady", run)
    assert "**dominates** (+0.07 pt)" in line and facts["dominated_by_hindsight_within_budgets"]
    assert not facts["beats_static_within_budgets"]
    assert facts["margin_never_finite"] and facts["spread_at_most_1pt"] and facts["per_snapshot_plans_differ"]
    acted = _run(_policy(0.79, 101.0), _policy(0.8, 100.0), margins=(0.02, math.inf, math.inf), distinct=(1, 2, 2))
    _, facts = stream_summary.row("Cora,steady", acted)
    assert not facts["margin_never_finite"] and not facts["per_snapshot_plans_differ"]


def test_the_cross_fitted_row_shows_each_lead_in_points():
    run = _run(greedy=_policy(0.79, 101.0), feasible=_policy(0.8007, 100.0, 0.7530))  # DSTE's reward 0.75
    assert stream_summary.cross_fit_row("Cora,bursty", run) is None  # not measured
    run["oracle"]["cross_fit"] = {"in_sample_lead": 0.0041, "cross_fitted_lead": -0.0012,
                                  "share_halves_static_ahead": 0.37, "distinct_choices": [3, 1, 4]}
    assert stream_summary.cross_fit_row("Cora,bursty", run) == (
        "| Cora, `bursty` | +0.30 | +0.41 | **-0.12** | 37 % | 3, 1, 4 |"
    )


def test_the_adaptivity_row_shows_the_gain_of_a_plan_per_snapshot_in_points():
    run = _run(greedy=_policy(0.79, 101.0), feasible=_policy(0.8007, 100.0, 0.7530))
    fit = {"in_sample_lead": 0.0041, "cross_fitted_lead": -0.0012, "share_halves_static_ahead": 0.37,
           "distinct_choices": [3, 1, 4]}
    run["oracle"]["cross_fit"] = dict(fit)
    assert stream_summary.adaptivity_row("Cora,bursty", run) is None  # collected before it was measured
    run["oracle"]["cross_fit"].update(in_sample_reward=0.7571, per_snapshot_in_sample_reward=0.7633,
                                      cross_fitted_adaptivity_gain=-0.0021)
    # DSTE - the plan per snapshot = -(cross_fitted_lead + gain): 0.12 + 0.21 points
    assert stream_summary.adaptivity_row("Cora,bursty", run) == (
        "| Cora, `bursty` | +0.62 | **-0.21** | +0.12 | +0.33 |")


def test_runs_with_a_plan_per_snapshot_measured_get_their_own_table_and_plot(tmp_path, capsys):
    fit = {"in_sample_lead": 0.0041, "cross_fitted_lead": -0.0012, "share_halves_static_ahead": 0.37,
           "distinct_choices": [3, 1, 4]}
    measured = _run(greedy=_policy(0.79, 101.0), feasible=_policy(0.8007, 100.0, 0.7530))
    measured["oracle"]["cross_fit"] = {**fit, "in_sample_reward": 0.7571, "per_snapshot_in_sample_reward": 0.7633,
                                       "cross_fitted_adaptivity_gain": -0.0021}
    older = _run(greedy=_policy(0.79, 101.0), feasible=_policy(0.8007, 100.0, 0.7530))
    older["oracle"]["cross_fit"] = dict(fit)
    collected = tmp_path / "runs.json"
    collected.write_text(json.dumps({"Cora,bursty": measured, "X,drift": older}))
    assert stream_summary.main([str(collected), "--plot", str(tmp_path / "runs.png")]) == 0
    captured = capsys.readouterr()
    tables = captured.out.strip().split("\n\n")
    assert len(tables) == 3 and tables[2].splitlines()[2:] == ["| Cora, `bursty` | +0.62 | **-0.21** | +0.12 | +0.33 |"]
    assert "a plan per snapshot ahead of the static plan, cross-fitted: 0 of 1" in captured.err
    for name in ("runs.png", "runs_cross_fit.png", "runs_adaptivity.png"):
        assert (tmp_path / name).stat().st_size > 5000


def _collected_summary(capsys, name: str, missing: str):
    """``(tables, counts, runs)``: stream_summary's printed tables (split at their blank lines), the counts it prints to
    stderr, and the runs of ``bench/results/<name>``; the test skips with ``missing`` where the file is absent."""
    collected = ROOT / "bench" / "results" / name
    if not collected.exists():
        pytest.skip(missing)
    assert stream_summary.main([str(collected)]) == 0
    out, err = capsys.readouterr()
    return out.strip().split("\n\n"), err, json.loads(collected.read_text())


def test_the_collected_file_gives_the_readme_counts(capsys):
    tables, err, runs = _collected_summary(capsys, "streams.json", "no collected stream runs")
    main_table, cross_fit_table = tables[0], "\n\n".join(tables[1:])
    assert len(main_table.splitlines()) == 2 + len(runs)
    fitted = [run for run in runs.values() if run["oracle"].get("cross_fit")]
    assert len(cross_fit_table.splitlines()) == (2 + len(fitted) if fitted else 0)
    assert f"runs: {len(runs)}" in err and "keeps_every_budget: 34 of 34" in err
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in main_table.splitlines()[2:] + cross_fit_table.splitlines()[2:]:
        assert line in readme, f"README's stream tables differ from the collected runs at {line[:40]!r}"


def test_the_per_snapshot_runs_give_the_bench_readme_table(capsys):
    tables, err, runs = _collected_summary(capsys, "streams_adaptivity.json",
                                           "no collected stream runs with the per-snapshot cross-fit")
    adaptivity_table = tables[-1]
    assert adaptivity_table.startswith(stream_summary.ADAPTIVITY_HEADER)
    assert len(adaptivity_table.splitlines()) == 2 + len(runs)
    assert f"cross-fitted: 19 of {len(runs)}; there, DSTE at or above the plan per snapshot: 15" in err
    bench_readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    for line in adaptivity_table.splitlines()[2:]:
        assert line in bench_readme, f"bench/README.md's per-snapshot table differs from the runs at {line[:40]!r}"


def test_the_stream_runs_re_run_on_another_cpu_give_the_readme_rows(capsys):
    """The runs re-run on an Intel Xeon machine print the README's stream-table and cross-fitted rows to the last
    digit, and their per-snapshot rows are bench/README.md's."""
    tables, _, runs = _collected_summary(capsys, "streams_intel.json", "no stream runs re-run on another CPU")
    main_table, cross_fit_table, adaptivity_table = tables
    assert all(len(table.splitlines()) == 2 + len(runs) for table in (main_table, cross_fit_table, adaptivity_table))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in main_table.splitlines()[2:] + cross_fit_table.splitlines()[2:]:
        assert line in readme, f"a re-run differs from the README's stream tables at {line[:40]!r}"
    bench_readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    for line in adaptivity_table.splitlines()[2:]:
        assert line in bench_readme, f"bench/README.md lacks the re-run's per-snapshot row {line[:40]!r}"


@pytest.mark.parametrize("name, missing, round_name, counts", [
    # the tenth round: heterophilous graphs; greedy search dominates one run, the cross-fitted static plan is ahead
    # on one
    ("streams_heterophily.json", "no heterophilous stream runs", "tenth round",
     ("keeps_every_budget: 4 of 4", "dominated_by_a_baseline_within_budgets: 1 of 4",
      "cross-fitted static plan ahead of DSTE: 1 of 4", "margin_never_finite: 4 of 4")),
    # the eleventh round: 24 features, and a graph of median degree 1
    ("streams_eleventh_round.json", "no eleventh-round stream runs", "eleventh round",
     ("keeps_every_budget: 4 of 4", "dominated_by_a_baseline_within_budgets: 0 of 4", "spread_at_most_1pt: 2 of 4",
      "beats_static_within_budgets (adaptivity streams): 4 of 4", "cross-fitted static plan ahead of DSTE: 0 of 4",
      "margin_never_finite: 4 of 4")),
    # the twelfth round: unequal classes of five labels each, and features shifted by community
    ("streams_twelfth_round.json", "no twelfth-round stream runs", "twelfth round",
     ("keeps_every_budget: 4 of 4", "dominated_by_a_baseline_within_budgets: 0 of 4", "spread_at_most_1pt: 3 of 4",
      "beats_static_within_budgets (adaptivity streams): 4 of 4", "cross-fitted static plan ahead of DSTE: 0 of 4",
      "margin_never_finite: 4 of 4")),
])
def test_a_round_of_unseen_graphs_gives_the_bench_readme_tables(capsys, name, missing, round_name, counts):
    """A round of four stream runs on graphs the project had not run (bench/README.md, "<round_name>"): every row of
    their three tables, and the counts its list states."""
    tables, err, _ = _collected_summary(capsys, name, missing)
    assert len(tables) == 3 and all(len(table.splitlines()) == 2 + 4 for table in tables)
    bench_readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    for line in "\n".join(tables).splitlines():
        assert line in bench_readme, f"bench/README.md's {round_name} differs from the runs at {line[:40]!r}"
    for count in counts:
        assert count in err, count


def test_the_stream_table_with_every_move_held_to_the_node_error_changes_four_rows(capsys):
    """The stream table's runs with rule 1 holding every move to the validation nodes' error (bench/README.md,
    "every move held to the validation nodes' error"): each run prints the README's rows to the last digit, except
    four, whose rows are bench/README.md's, as its list says."""
    tables, err, runs = _collected_summary(capsys, "streams_symmetric_evidence.json",
                                           "no stream runs with every move held to the node error")
    main_table, cross_fit_table, adaptivity_table = tables
    assert len(runs) == 29 and all(len(t.splitlines()) == 2 + len(runs) for t in (main_table, cross_fit_table))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    bench_readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    changed = [line for line in main_table.splitlines()[2:] if line not in readme]
    assert [line.split(" | ")[0] for line in changed] == [
        "| C3.5, `budget-shift`", "| GraphSAGE, `budget-shift`", "| Y, `bursty`", "| C2, `bursty`"]
    changed_cross_fit = [line for line in cross_fit_table.splitlines()[2:] if line not in readme]
    assert [line.split(" | ")[0] for line in changed_cross_fit] == [line.split(" | ")[0] for line in changed]
    for line in changed + changed_cross_fit + adaptivity_table.splitlines()[2:]:
        assert line in bench_readme, f"bench/README.md lacks the run's row {line[:40]!r}"
    assert "keeps_every_budget: 29 of 29" in err and "margin_never_finite: 29 of 29" in err
