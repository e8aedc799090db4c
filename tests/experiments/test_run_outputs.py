"""dste run's outputs: smoke-run labelling, progress bars only on a terminal, a two-panel plot, --out errors."""

import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from dste.cli import main
from dste.experiments.pipeline import RunConfig, show_progress
from dste.experiments.plots import plot_accuracy
from dste.experiments.report import SMOKE_RUN_NOTE, format_table

REPO = Path(__file__).resolve().parents[2]


def _summary():
    def row(label, latency, accuracy, memory):
        return {
            "label": label, "latency_us_mean": latency, "latency_us_std": 0.0, "accuracy_mean": accuracy,
            "accuracy_std": 0.01, "bytes_mean": memory, "cpu_ms_mean": 1.0, "reward_mean": 0.0,
            "bytes_by_kind": {"graph": 1, "features": 1, "weights": 1, "activations": 1},
        }

    # INT8 and DSTE accuracy-first coincide, as greedy search and DSTE budgeted do in the main job
    return {
        "fp32": row("FP32", 64.0, 0.83, 6e6),
        "int8": row("INT8", 57.8, 0.829, 1.8e6),
        "dste_dqn": row("DSTE budgeted", 50.4, 0.787, 1.08e6),
        "dste_dqn_unbudgeted": row("DSTE accuracy first", 57.8, 0.829, 1.8e6),
        "greedy": row("greedy", 50.4, 0.787, 1.08e6),
    }


def test_quick_table_says_it_is_a_smoke_run():
    assert format_table(_summary(), "trn2", quick=True).splitlines()[0] == SMOKE_RUN_NOTE
    assert SMOKE_RUN_NOTE not in format_table(_summary(), "trn2")


def test_the_table_says_how_its_fp32_models_were_trained():
    assert format_table(_summary(), "trn2", fp32_teachers=4).splitlines()[-1].startswith(
        "FP32: each seed's model distilled from 4 teachers")
    assert format_table(_summary(), "trn2", fp32_teachers=0).splitlines()[-1] == (
        "FP32: plain training (the published GCN recipe)")
    assert "FP32:" not in format_table(_summary(), "trn2").splitlines()[-1]


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_bars_only_on_a_terminal():
    assert show_progress(RunConfig(), _Stream(True))
    assert not show_progress(RunConfig(), _Stream(False))
    assert not show_progress(RunConfig(progress=False), _Stream(True))


def test_plot_has_two_panels_and_shows_coincident_series(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    real_subplots = plt.subplots

    def spy(*args, **kwargs):
        fig, axes = real_subplots(*args, **kwargs)
        figures.append((fig, axes))
        return fig, axes

    monkeypatch.setattr(plt, "subplots", spy)
    monkeypatch.setattr(plt, "close", lambda fig: None)
    path = tmp_path / "plot.png"
    plot_accuracy(_summary(), path, "trn2", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig, axes), = figures
    assert len(axes) == 2
    assert "latency" in axes[0].get_xlabel() and "memory" in axes[1].get_xlabel()
    for ax in axes:
        markers = [container.lines[0].get_marker() for container in ax.containers]
        # every series has its own marker shape, so coincident points stay distinguishable
        assert len(set(markers)) == len(_summary())
        texts = [t.get_text() for t in ax.texts]
        assert sorted(texts) == sorted(s["label"] for s in _summary().values())
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--quick", "--out", str(target), "--no-progress"])
    assert exit_info.value.code == 2
    assert "is an existing file" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--quick", "--out", str(target / "sub"), "--no-progress"])
    assert exit_info.value.code == 2


def test_pytest_alone_skips_the_marked_tiers_and_dash_m_selects_them(pytester):
    """Collects a sample file under the repository's own pytest.ini (``-c``), in this process (pytester): the
    same option parsing as a fresh ``python -m pytest``, without two interpreter start-ups."""
    tiers = ("slow", "integration", "multiprocess")
    sample = pytester.makepyfile(test_sample="import pytest\n\n" + "".join(
        f"@pytest.mark.{tier}\ndef test_{tier}_tier():\n    pass\n\n" for tier in tiers) + "def test_short():\n    pass\n")
    command = ["-c", str(REPO / "pytest.ini"), "--rootdir", str(pytester.path), str(sample), "--collect-only", "-q"]
    default = pytester.runpytest_inprocess(*command).stdout.str()
    assert "test_short" in default and not any(f"test_{tier}_tier" in default for tier in tiers)
    for tier in tiers:
        selected = pytester.runpytest_inprocess(*command, "-m", tier).stdout.str()
        assert f"test_{tier}_tier" in selected and "test_short" not in selected, tier
    ci = pytester.runpytest_inprocess(*command, "-m", "(integration or multiprocess) and not slow").stdout.str()
    assert "test_integration_tier" in ci and "test_multiprocess_tier" in ci and "test_slow_tier" not in ci


def test_share_within_budget_counts_held_out_snapshots_over_all_seeds():
    from dste.experiments.report import share_within_budget

    rows = [
        {"per_snapshot_latency_us": [90.0, 91.0], "per_snapshot_budget_us": [90.0, 90.5]},  # fits, over
        {"per_snapshot_latency_us": [80.0, 95.0], "per_snapshot_budget_us": [85.0, 96.0]},  # fits, fits
    ]
    assert share_within_budget(rows) == 0.75
    assert share_within_budget([{"per_snapshot_latency_us": [1.0], "per_snapshot_budget_us": [None]}]) is None


def test_policy_cpu_times_are_interleaved_and_the_shortest_round_is_kept(monkeypatch):
    from dste.experiments import pipeline

    clock = [0.0]
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: clock[0])
    durations_ms = {"a": [5.0, 1.0, 3.0], "b": [2.0, 4.0, 6.0]}
    calls = []

    class Env:
        def forward_ops(self, snapshot, actions):
            plan = actions[0]
            done = sum(1 for name in calls if name == plan)
            calls.append(plan)
            clock[0] += 0.1 if done == 0 else durations_ms[plan][done - 1] / 1e3  # the first call is the warm-up

    times = pipeline._cpu_times_ms(Env(), 0, {"a": ["a"], "b": ["b"]}, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-ups, then rounds in alternating order
    assert times == pytest.approx({"a": 1.0, "b": 2.0})


def _seed_with_budgets(budgets, cheapest, fp32):
    return {"policies": {"dste_dqn": {"per_snapshot_budget_us": budgets}}, "cheapest_latency_us": cheapest,
            "fp32_latency_us": fp32}


def test_a_budget_below_the_cheapest_plan_is_named_at_the_top_of_the_table():
    from dste.experiments.report import budget_note, budget_out_of_reach

    per_seed = [_seed_with_budgets([13.0, 30.0], [20.0, 21.0], [26.0, 28.0]),
                _seed_with_budgets([12.0, 25.0], [20.5, 20.0], [26.0, 26.0])]
    reach = budget_out_of_reach(per_seed)
    assert reach == {"snapshots": 2, "of": 4, "budget_us": [12.0, 13.0], "cheapest_plan_us": [20.0, 20.5],
                     "cheapest_plan_share_of_fp32": [20.0 / 26.0, 20.5 / 26.0]}
    note = budget_note(reach)
    assert "OUT OF REACH on 2 of 4 held-out snapshots" in note and "--budget 0.79fp32 or more" in note
    assert format_table(_summary(), "trn2", note=note).splitlines()[0] == note
    # within reach (or no budget at all): no note
    assert budget_out_of_reach([_seed_with_budgets([25.0], [20.0], [26.0])]) is None
    assert budget_out_of_reach([_seed_with_budgets([None], [20.0], [26.0])]) is None
    assert budget_note(None) is None


def test_the_baselines_header_follows_the_paper_rows_a_run_has():
    """Without the accuracy-first row (--budget none) 'uniform FP16' was printed above the 'other baselines' line."""
    summary = _summary()
    del summary["dste_dqn_unbudgeted"]
    summary["fp16"] = summary["int8"] | {"label": "uniform FP16"}
    lines = format_table(summary, "trn2").splitlines()
    labels = [re.split(r"\s{2,}", line.strip())[0] for line in lines[2:]]
    assert labels[:5] == ["FP32", "INT8", "DSTE budgeted", "other baselines (same harness):", "greedy"]


@pytest.mark.parametrize("stream, snapshots, said", [("bursty", 6, True), ("bursty", 7, False), ("bursty", 16, False),
                                                     ("steady", 6, False)])
def test_a_run_whose_held_out_snapshots_miss_every_burst_says_so(capsys, stream, snapshots, said):
    from dste.experiments.pipeline import _notice_quiet_heldout

    _notice_quiet_heldout(RunConfig(stream=stream, snapshots=snapshots))
    err = capsys.readouterr().err
    assert ("hold no burst" in err and "--snapshots 7 holds one out" in err) == said, err


def test_a_model_no_better_than_the_most_frequent_class_is_named_at_the_top_of_the_table():
    """A GCN on a heterophilous graph scored 26.35 % where the most frequent class held 24.1 % of the test nodes;
    the table reported every compression figure without a word."""
    from dste.experiments.report import chance_note, fp32_against_chance

    def seeds(shares, nodes):
        return [{"majority_class_share": list(s), "test_nodes": [nodes] * len(s)} for s in shares]

    summary = {"fp32": {"accuracy_mean": 0.2635}}
    check = fp32_against_chance(seeds([(0.24, 0.242), (0.241, 0.241)], 1000), summary)
    assert check["majority_class_share"] == pytest.approx(0.241)
    assert check["standard_error"] == pytest.approx(np.sqrt(0.241 * 0.759 / 1000))
    assert not check["above_chance"]  # 26.35 % is within two standard errors (2 x 1.35 points) of 24.1 %
    note = chance_note(check, homophily=0.21)
    assert note.startswith("FP32 AT CHANCE") and "26.35 %" in note and "24.10 %" in note and "homophily is 0.21" in note
    assert "homophily" not in chance_note(check, homophily=0.8)  # not the cause there
    assert format_table(_summary(), "trn2", note=note).splitlines()[0] == note
    # a model well above the most frequent class, and results without the shares: no note
    assert fp32_against_chance(seeds([(0.3,)], 1000), {"fp32": {"accuracy_mean": 0.85}})["above_chance"]
    assert chance_note(fp32_against_chance(seeds([(0.3,)], 1000), {"fp32": {"accuracy_mean": 0.85}})) is None
    assert fp32_against_chance([{}], summary) is None and chance_note(None) is None


def test_rows_that_overspend_a_budget_say_on_how_many_snapshots():
    from dste.experiments.report import OVER_BUDGET_NOTE

    summary = _summary()
    summary["greedy"] = summary["greedy"] | {"snapshots_over_budget": [2, 6]}
    summary["dste_dqn"] = summary["dste_dqn"] | {"snapshots_over_budget": [0, 6]}
    lines = format_table(summary, "trn2").splitlines()
    assert next(line for line in lines if line.startswith("greedy")).endswith("  over budget on 2 of 6")
    assert "over budget" not in next(line for line in lines if line.startswith("DSTE budgeted"))
    assert OVER_BUDGET_NOTE in lines
    assert OVER_BUDGET_NOTE not in format_table(_summary(), "trn2").splitlines()  # no row overspends: no note
