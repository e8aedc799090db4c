import json

import numpy as np
import pytest

from dste.cli import build_parser, main
from dste.controller import ActionSpace
from dste.experiments import run_config, sizing
from dste.experiments.run_config import RunConfig


def _refuse_non_standard_token(token):
    raise AssertionError(f"results.json holds {token}, which is not JSON (RFC 8259): jq and JSON.parse reject it")

RUN_OPTIONS = ("--dataset", "--root", "--seeds", "--snapshots", "--episodes", "--out", "--model", "--quick",
               "--lambda", "--budget", "--target", "--hidden", "--epochs", "--stream", "--no-fallback", "--no-probe", "--oracle",
               "--no-frontier", "--model-seed", "0.33fp32", "budget-shift")


def test_run_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in RUN_OPTIONS:
        assert option in text, option
    for dataset in ("cora-like", "arxiv-scale", "citeseer", "ogbn-", ".npz"):
        assert dataset in text


def test_top_level_help_lists_run(capsys):
    assert main([]) == 2
    assert "run" in capsys.readouterr().out
    assert "run" in build_parser().format_help()


@pytest.mark.parametrize("argv, message", [
    (["run", "--snapshots", "2"], "--snapshots must be an integer >= 4"),
    (["run", "--seeds", "0"], "--seeds must be a positive integer"),
    (["run", "--dataset", "no-such-graph"], "unknown dataset"),
    (["run", "--budget", "cheap"], "--budget must be"),
    (["run", "--budget", "0fp32"], "fraction of the FP32 latency must be > 0"),
    (["run", "--lambda", "-1"], "--lambda must be a finite number >= 0"),  # named as the option, not the field
    (["run", "--budget-penalty", "-2"], "--budget-penalty must be"),
    (["run", "--budget", "-1"], "--budget must be 'static50', 'none', '<x>fp32'"),  # was "must be None or ..."
    (["run", "--stream", "budget-shift", "--budget", "0.5"], "--stream budget-shift sets its own latency budget"),
    (["run", "--quick", "--dataset", "csbm:num_nodes=400,num_edges=8000,edge_shortfall_limit=0.5", "--stream", "bursty"],
     "With dste run, whose streams are presets: give --stream bursty a larger"),  # named knobs dste run lacks
    (["run", "--stream-seed", "-1"], "--stream-seed: must be an integer >= 0 or 'per-seed'"),
    (["run", "--stream-seed", "each"], "--stream-seed: must be an integer >= 0 or 'per-seed'"),
    (["run", "--model-seed", "-2"], "--model-seed: must be an integer >= 0 or 'per-seed'"),
    (["run", "--jobs", "0"], "--jobs: must be a positive integer or 'auto'"),
    (["run", "--jobs", "all"], "--jobs: must be a positive integer or 'auto'"),
    (["run", "--budget", ""], "--budget must be"),  # was taken as 'none': no latency ceiling
    (["run", "--dataset", ""], "--dataset must name a dataset"),  # was a TypeError's traceback
    (["run", "--dataset", "csbm:"], "names at least one key=value"),  # was the default graph, named 'csbm:'
    (["run", "--dataset", "csbm:num_nodes=200,num_nodes=300"], "num_nodes is given twice"),  # the last one won
    (["run", "--root", "/nowhere"], "is generated, so leave --root out"),  # ignored, and recorded as the source
])
def test_bad_run_options_fail_with_a_clear_message(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, hint", [
    (["run", "--budget", "-0.5fp32"], " (a value that starts with '-' is written --budget=-0.5fp32)"),
    (["bench", "--out", "-results"], " (a value that starts with '-' is written --out=-results)"),
    (["run", "--budget", "--quick"], ""),  # the value forgotten before another option: no hint
    (["run", "--budget", "-h"], ""),
    (["run", "--budget"], ""),
])
def test_a_value_that_starts_with_a_dash_is_shown_how_to_write(argv, hint, capsys):
    """argparse reads "-0.5fp32" (no plain negative number) as an option and said only "expected one argument"."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.endswith(f"error: argument {argv[1]}: expected one argument{hint}\n"), err


def test_the_written_form_reaches_the_options_own_check(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["run", "--budget=-0.5fp32", "--out", str(tmp_path), "--no-progress"])
    assert "the fraction of the FP32 latency must be > 0, got -0.5" in capsys.readouterr().err


def test_an_out_directory_that_cannot_be_made_is_named_before_any_work(capsys, tmp_path):
    """It printed the raw "[Errno 20] Not a directory" after loading the graph."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--out", str(blocker / "run"), "--no-progress"])
    assert exit_info.value.code == 2
    assert f"--out {blocker / 'run'}: {blocker} is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("argv, nodes, jobs", [
    ([], 2_708, 3), (["--jobs", "auto"], 19_717, 2), ([], 169_343, 1), (["--jobs", "1"], 2_708, 1),
    (["--jobs", "5"], 169_343, 5),
])
def test_jobs_default_to_one_worker_per_usable_core_as_memory_allows(monkeypatch, tmp_path, argv, nodes, jobs):
    """Without --jobs (or with 'auto') the seeds get one worker per core this process may use, as many as the
    available memory holds at a worker's modelled peak; a number given is kept."""
    from dste.experiments import env_layers, pipeline

    class Started(Exception):
        pass

    def record(config):
        seen.append(sizing.schedule_for(config, sizing.GraphSize(nodes, 500, 4 * nodes)).jobs)
        raise Started

    seen = []
    monkeypatch.setattr(sizing, "default_jobs", lambda: 3)
    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 22 << 30)  # the 24 GiB machine, quiet
    monkeypatch.setattr(pipeline, "run", record)
    with pytest.raises(Started):
        main(["run", *argv, "--out", str(tmp_path), "--no-progress"])
    assert seen == [jobs]


@pytest.mark.parametrize("argv, probe", [([], True), (["--no-probe"], False)])
def test_the_fitted_plan_checks_its_rivals_on_each_snapshot_unless_told_not_to(monkeypatch, tmp_path, argv, probe):
    from dste.experiments import pipeline

    class Started(Exception):
        pass

    def record(config):
        seen.append(config.probe)
        raise Started

    seen = []
    monkeypatch.setattr(pipeline, "run", record)
    with pytest.raises(Started):
        main(["run", *argv, "--out", str(tmp_path), "--no-progress"])
    assert seen == [probe]


def test_auto_jobs_take_one_worker_where_the_memory_is_unknown(monkeypatch):
    from dste.experiments import env_layers

    monkeypatch.setattr(sizing, "default_jobs", lambda: 8)
    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: None)
    assert sizing.auto_jobs(sizing.GraphSize(100, 500, 400), 16) == 1
    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 1 << 30)  # less than one worker's peak
    assert sizing.auto_jobs(sizing.GraphSize(100, 500, 400), 16) == 1


@pytest.mark.parametrize("seeds, cores, most, workers", [
    (3, 2, 8, 3),  # two workers leave a core idle while the third seed runs alone: 2 seeds' time against 1.5
    (4, 2, 8, 2),  # two rounds of two: more workers only share the same cores
    (5, 2, 8, 3),  # 3 + 2 takes 2.5 seeds' time, as 5 at once does, with fewer workers; 2 + 2 + 1 takes 3
    (3, 2, 2, 2),  # the memory holds two
    (1, 2, 8, 1), (2, 2, 8, 2), (3, 4, 8, 3), (6, 4, 8, 6),
])
def test_balanced_workers_spread_the_seeds_over_the_cores(seeds, cores, most, workers):
    assert sizing.balanced_workers(seeds, cores, most) == workers


def test_auto_jobs_start_three_workers_for_three_seeds_on_two_cores(monkeypatch):
    from dste.experiments import env_layers

    monkeypatch.setattr(sizing, "default_jobs", lambda: 2)
    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 22 << 30)
    assert sizing.auto_jobs(sizing.GraphSize(2_708, 500, 10_556), 16, seeds=3) == 3
    assert sizing.auto_jobs(sizing.GraphSize(2_708, 500, 10_556), 16) == 2  # no seed count: one per core
    # a Coauthor-CS-sized worker (23 GB over 16 snapshots) fits once, whatever the seeds
    assert sizing.auto_jobs(sizing.GraphSize(18_333, 6_805, 163_788), 16, seeds=3) == 1


@pytest.mark.parametrize("seeds, cores, most", [(0, 2, 8), (3, 0, 8), (3, 2, 0)])
def test_balanced_workers_refuse_counts_below_one(seeds, cores, most):
    with pytest.raises(ValueError, match="must be >= 1"):
        sizing.balanced_workers(seeds, cores, most)


@pytest.mark.parametrize("nodes, features, entries, snapshots, measured_gb", [
    (2_708, 500, 10_556, 16, 2.35), (19_717, 500, 88_644, 16, 8.8), (3_327, 3_703, 9_104, 16, 6.1),
    (18_333, 6_805, 163_788, 16, 23.2), (18_333, 6_805, 163_788, 8, 13.8), (13_752, 767, 491_722, 16, 9.65),
    (169_343, 128, 2_330_872, 6, 15.5),
])
def test_the_worker_peak_model_holds_the_measured_peaks(nodes, features, entries, snapshots, measured_gb):
    """The peaks measured on the development machine (WORKER_PEAK_BYTES's docstring), within the fit's 13 %, which
    the headroom --jobs auto counts covers."""

    modelled = sizing.worker_peak_bytes(sizing.GraphSize(nodes, features, entries), snapshots) / 1e9
    assert abs(modelled / measured_gb - 1) < 0.13 < sizing.WORKER_PEAK_HEADROOM - 1, (modelled, measured_gb)


def test_auto_jobs_count_the_feature_width(monkeypatch):
    """A Coauthor-CS-sized graph (18,333 x 6,805 features, every snapshot's held dense) gets one worker on the
    24 GiB machine; a node count alone put its worker at 8.4 GB and started two."""
    from dste.experiments import env_layers

    monkeypatch.setattr(sizing, "default_jobs", lambda: 2)
    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 22 << 30)
    assert sizing.auto_jobs(sizing.GraphSize(18_333, 500, 163_788), 16) == 2
    assert sizing.auto_jobs(sizing.GraphSize(18_333, 6_805, 163_788), 16) == 1


def test_a_hidden_width_no_memory_could_train_is_refused_before_it_starts(monkeypatch, capsys, tmp_path):
    """torch's allocator failed with a traceback after the graph loaded (200 GB for one 500 x 10^8 weight)."""
    from dste.experiments import env_layers, pipeline

    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 20 << 30)
    cora = sizing.GraphSize(2_708, 500, 10_556)
    # the floor by hand: 10^8 x (16 B x 500 first-layer weights + 12 B x 2,708 hidden values) = 4,049.6 GB
    assert sizing.width_floor_bytes(cora, 10**8) == 10**8 * (16 * 500 + 12 * 2_708)
    with pytest.raises(MemoryError, match=r"--hidden 100000000: .* at least 4,049\.6 GB .* 21\.5 GB is available; "
                                          r"the widest whose floor fits is 530,295"):
        sizing.memory_check(cora, 16, 1, hidden=10**8)
    assert sizing.memory_check(cora, 16, 1, hidden=4096) is None  # 0.2 GB of floor: the fitted model decides

    def started(config, base):
        raise AssertionError("started")

    monkeypatch.setattr(pipeline, "_run_seeds", started)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--quick", "--hidden", "100000000", "--out", str(tmp_path / "run"), "--no-progress"])
    assert exit_info.value.code == 2 and "--hidden 100000000: FP32 training" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_the_memory_cannot_hold_is_announced_or_refused_before_it_starts(monkeypatch, capsys, tmp_path):
    from dste.experiments import env_layers, pipeline

    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 20 << 30)
    cs = sizing.GraphSize(18_333, 6_805, 163_788)
    line = sizing.memory_check(cs, 16, 1)  # modelled at 24.8 GB, 21.5 GB available
    assert line.startswith("warning")
    assert "18,333 nodes x 6,805 features, 163,788 adjacency entries, 16 snapshots" in line
    assert "--snapshots 13 fits" in line
    assert sizing.memory_check(cs, 8, 1) is None, "eight snapshots fit"
    assert sizing.memory_check(sizing.GraphSize(2_708, 500, 10_556), 16, 2) is None
    assert "--jobs 1" in sizing.memory_check(cs, 8, 2)
    with pytest.raises(MemoryError, match="cannot hold the run.*--snapshots 6 fits"):
        sizing.memory_check(sizing.GraphSize(34_493, 8_415, 495_924), 16, 1)  # Coauthor Physics' size: 48 GB

    class Started(Exception):
        pass

    def started(config, base):
        raise Started

    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 2 << 30)
    monkeypatch.setattr(pipeline, "_run_seeds", started)
    with pytest.raises(Started):
        pipeline.run(pipeline.RunConfig(seeds=1, jobs=1, out=str(tmp_path)))
    assert "warning: 1 worker(s) may not fit: 2,708 nodes x 500 features" in capsys.readouterr().err


@pytest.mark.parametrize("jobs", ["many", 0, 1.5, True])
def test_run_config_rejects_bad_jobs(jobs):
    with pytest.raises(ValueError, match="--jobs must be a positive integer or .auto."):
        RunConfig(jobs=jobs)


def test_default_jobs_counts_the_cores_this_process_may_use(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert sizing.default_jobs() == 2


@pytest.mark.parametrize("stream_seed, drawn", [(0, [0, 0, 0]), (4, [4, 4, 4]), (None, [0, 1, 2])])
def test_every_seed_sees_the_stream_seed_stream_unless_per_seed(monkeypatch, stream_seed, drawn):
    """The run seed trains the model and the controller; the stream is --stream-seed's ('per-seed': seed s)."""
    import dste.data
    from dste.experiments import pipeline

    seen = []

    class Drawn(Exception):
        pass

    def record(base, params, seed):
        seen.append(seed)
        raise Drawn

    monkeypatch.setattr(dste.data, "SnapshotStream", record)
    config = RunConfig(seeds=3, stream_seed=stream_seed, progress=False)
    for seed in range(3):
        with pytest.raises(Drawn):
            pipeline._run_seed(config, base=None, seed=seed, bar=None)
    assert seen == drawn


@pytest.mark.parametrize("model_seed, trained", [(None, [0, 1, 2]), (5, [5, 5, 5])])
def test_every_seed_trains_its_own_fp32_model_unless_one_model_seed_is_given(monkeypatch, model_seed, trained):
    """--model-seed N: every seed's controller compresses the one FP32 model trained with seed N; each is distilled from
    the default number of teachers."""
    from tqdm.auto import tqdm

    import dste.gnn
    from dste.data import make_graph
    from dste.experiments import pipeline

    seen = []

    class Trained(Exception):
        pass

    def record_fit(graph, kind, hidden, seed, teachers, **settings):
        seen.append((seed, teachers))
        raise Trained

    monkeypatch.setattr(dste.gnn, "train_new_fp32_model", record_fit)
    config = RunConfig(seeds=3, snapshots=4, model_seed=model_seed, progress=False)
    base = make_graph("cora-like", seed=0)
    for seed in range(3):
        with pytest.raises(Trained):
            pipeline._run_seed(config, base=base, seed=seed, bar=tqdm(disable=True))
    assert seen == [(s, run_config.DEFAULT_FP32_TEACHERS) for s in trained]


def _stream_budget_of(monkeypatch, stream: str, snapshots: int):
    """(env, schedule, fp32_latency) that ``dste run``'s wiring hands to ``BudgetScheduleEnv`` for ``stream`` on
    cora-like (seed 0, one FP32 epoch): the budget the controller would be judged against, captured, not run."""
    from tqdm.auto import tqdm

    from dste.data import make_graph
    from dste.experiments import pipeline

    class Captured(Exception):
        pass

    def capture(env, schedule, fp32_latency):
        raise Captured(env, schedule, fp32_latency)

    monkeypatch.setattr(pipeline, "BudgetScheduleEnv", capture)
    config = RunConfig(stream=stream, seeds=1, snapshots=snapshots, epochs=1, progress=False)
    with pytest.raises(Captured) as captured:
        pipeline._run_seed(config, base=make_graph("cora-like", seed=0), seed=0, bar=tqdm(disable=True))
    return captured.value.args


def test_a_stream_with_one_latency_objective_gets_the_same_microseconds_on_every_snapshot(monkeypatch):
    """--stream bursty: the budget is budget_slo x uniform INT8's latency on snapshot 0 on every snapshot, while
    the latencies themselves move with the bursts."""
    from dste.data.stream import stream_params

    env, schedule, fp32_latency = _stream_budget_of(monkeypatch, "bursty", snapshots=5)
    slo = stream_params("bursty").budget_slo * env.reference_latency(0)
    for n in range(5):
        assert schedule(n) * fp32_latency(n) == pytest.approx(slo, rel=1e-12)
    # snapshot 3 is a burst: uniform INT8 fits the quiet snapshots and overspends there
    assert max(env.reference_latency(n) for n in (0, 1, 2, 4)) <= slo < env.reference_latency(3)


def test_a_stream_with_a_budget_cycle_gets_each_snapshots_multiple_of_its_int8_latency(monkeypatch):
    """--stream budget-shift: snapshot n's budget is its cycle entry times uniform INT8's latency on n, so the
    budgets bind wherever pruning can cut below INT8, whatever FP32 costs (on Cora 60 % of FP32 is above INT8)."""
    from dste.data.stream import stream_params

    env, schedule, fp32_latency = _stream_budget_of(monkeypatch, "budget-shift", snapshots=5)
    cycle = stream_params("budget-shift").budget_cycle
    for n in range(5):
        assert schedule(n) * fp32_latency(n) == pytest.approx(cycle[n % len(cycle)] * env.reference_latency(n),
                                                              rel=1e-12)
    assert min(cycle) < 1.0 <= max(cycle)  # INT8 fits some budgets, not all


def test_a_growing_graph_is_held_to_the_objective_of_its_last_re_provisioning(monkeypatch):
    """--stream growing: snapshot n's budget is budget_slo times uniform INT8's latency on the last snapshot whose
    index is a multiple of slo_refresh_every; the graph outgrows it in between."""
    from dste.data.stream import stream_params

    env, schedule, fp32_latency = _stream_budget_of(monkeypatch, "growing", snapshots=6)
    params = stream_params("growing")
    assert params.slo_refresh_every == 3
    budgets = [schedule(n) * fp32_latency(n) for n in range(6)]
    for n in range(6):
        anchor = n - n % 3
        assert budgets[n] == pytest.approx(params.budget_slo * env.reference_latency(anchor), rel=1e-12)
    assert env.reference_latency(5) > budgets[5]  # by the third snapshot the graph has outgrown it


@pytest.mark.parametrize("model_seed", [-1, 2.5, True, "1"])
def test_run_config_rejects_bad_model_seed(model_seed):
    with pytest.raises(ValueError, match="--model-seed"):
        RunConfig(model_seed=model_seed)


@pytest.mark.parametrize("stream_seed", [-1, 1.5, True, "0"])
def test_run_config_rejects_bad_stream_seed(stream_seed):
    with pytest.raises(ValueError, match="--stream-seed"):
        RunConfig(stream_seed=stream_seed)


def test_run_config_rejects_bad_model():
    with pytest.raises(ValueError, match="--model"):
        RunConfig(model="gat")


def test_only_targets_the_kernel_runs_on_are_offered(capsys):
    """trn1 has no indirect DMA, which the kernel's row gathers need: the CLI does not offer it, the config refuses it."""
    from dste.experiments.run_config import RUN_TARGETS

    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    target = next(action for action in run_parser._actions if action.dest == "target")
    assert tuple(target.choices) == RUN_TARGETS == ("trn2",)
    with pytest.raises(ValueError, match="indirect DMA"):
        RunConfig(target="trn1")
    with pytest.raises(SystemExit):
        main(["run", "--target", "trn1"])
    assert "invalid choice: 'trn1'" in capsys.readouterr().err


@pytest.mark.integration
def test_quick_run_end_to_end(tmp_path, capsys):
    """The whole job on a small generated graph read from an .npz bundle (as a user's own graph would be)."""
    from dste.data import make_graph, save_npz

    graph = make_graph("cora-like", seed=0, num_nodes=900, num_edges=2400, num_features=512, num_val=200,
                       num_test=300)
    bundle = save_npz(graph, tmp_path / "small.npz")
    out = tmp_path / "run"
    assert main(["run", "--quick", "--dataset", str(bundle), "--snapshots", "4", "--episodes", "8", "--epochs", "20",
                 "--hidden", "16", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "DSTE (DQN, latency budget)" in printed and "static 50% sparse INT8" in printed and "modelled" in printed
    report = json.loads((out / "results.json").read_text(), parse_constant=_refuse_non_standard_token)
    summary = report["summary"]
    assert set(summary) == {"fp32", "int8", "static_sparse50_int8", "fp16", "random", "greedy", "greedy_projected",
                            "dste_dqn", "dste_dqn_unbudgeted"}
    for row in summary.values():
        assert 0.0 <= row["accuracy_mean"] <= 1.0
        assert row["latency_us_mean"] > 0 and row["bytes_mean"] > 0 and row["cpu_ms_mean"] > 0
    assert summary["fp32"]["bytes_mean"] > 3 * summary["int8"]["bytes_mean"]
    assert 0.0 <= summary["dste_dqn"]["share_within_budget"] <= 1.0  # the default budget is static 50 %'s latency
    assert (out / "accuracy_vs_latency.png").stat().st_size > 5000
    assert (out / "snapshots.png").stat().st_size > 5000  # the default budget is per snapshot
    table_lines = (out / "table.txt").read_text().splitlines()
    assert table_lines[0].startswith("SMOKE RUN (--quick") and table_lines[1].startswith("policy")
    assert report["smoke_run"] is True and "SMOKE RUN" in printed
    assert (out / "controller_seed0.pt").is_file()
    stages = report["per_seed"][0]["stage_seconds"]
    assert {"FP32 training", "controller training", "greedy search and its fitted plan",
            "policies on held-out snapshots", "static sweep (frontier)"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values()) and sum(stages.values()) <= report["wall_time_s"]
    assert report["config"]["snapshots"] == 4 and report["config"]["episodes"] == 8  # named, so kept
    assert report["config"]["stream_seed"] == 0 and report["per_seed"][0]["stream_seed"] == 0
    fallback = report["per_seed"][0]["fallback"]
    assert fallback["probe"] is True and isinstance(fallback["plans_probed"], int)  # how many depends on the graph
    # the fitted plan is the recency-weighted one where it gained by more than a standard error, else the plain mean's
    kept = fallback["recency_gain"] > fallback["recency_gain_standard_error"] or (
        fallback["recency_plan_actions"] == fallback["plain_plan_actions"])
    assert fallback["recency_plan_kept"] is kept
    errors = fallback["recency_gain_errors"]  # over snapshots and over the validation nodes; the larger decides
    assert fallback["recency_gain_standard_error"] == max(errors["snapshots"], errors["nodes"])
    assert fallback["plan_actions"] == fallback["recency_plan_actions" if kept else "plain_plan_actions"]
    # on GCN the searches leave out pruning that saves no modelled latency: with 16 hidden channels the second
    # layer's input fits one tile at every channel level, so its channel pruning is all costless
    assert fallback["costless_pruning_rule"] is True and fallback["costless_pruning_left_out"][1] > 0
    # held-out snapshots where the fitted plan cost what greedy search's does and greedy's kept the budget: greedy's
    # plan ran there (projection, rule 5)
    heldout = report["per_seed"][0]["heldout_snapshots"]
    policies = report["per_seed"][0]["policies"]
    assert set(fallback["greedy_plan_at_same_latency"]) <= set(heldout)
    for snapshot in fallback["greedy_plan_at_same_latency"]:
        position = heldout.index(snapshot)
        assert policies["greedy_projected"]["actions"][position] == policies["greedy"]["actions"][position]
    # the accuracy-first controller has a static fallback of its own; where its margin is inf it is that plan
    first = report["per_seed"][0]["accuracy_first_fallback"]
    labels = [ActionSpace()[a].label() for a in first["plan_actions"]]
    taken = report["per_seed"][0]["policies"]["dste_dqn_unbudgeted"]["actions"]
    assert float(first["margin"]) in {float(m) for m in first["margin_scores"]}  # one of the candidates it scored
    if float(first["margin"]) == float("inf"):  # written "inf": results.json is strict JSON
        assert all(snapshot == labels for snapshot in taken)


@pytest.mark.integration
def test_the_oracle_diagnostics_agree_where_two_paths_measure_the_same_plan(tmp_path):
    """``--oracle`` end to end on a changing budget: the cross-fit's in-sample choices (``dste.controller.crossfit``,
    every plan's per-node outcomes) equal the searches that report them elsewhere (``feasible_static_search``'s plan
    within every budget, ``snapshot_oracles``' best plan within each snapshot's budget), and a plan per snapshot is
    never behind the static one in sample."""
    from dste.data import make_graph, save_npz

    graph = make_graph("cora-like", seed=1, num_nodes=900, num_edges=2400, num_features=256, num_val=200,
                       num_test=300)
    bundle = save_npz(graph, tmp_path / "small.npz")
    out = tmp_path / "run"
    assert main(["run", "--quick", "--dataset", str(bundle), "--stream", "budget-shift", "--snapshots", "8",
                 "--seeds", "1", "--episodes", "8", "--epochs", "20", "--hidden", "16", "--oracle", "--no-frontier",
                 "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "results.json").read_text(), parse_constant=_refuse_non_standard_token)
    seed = report["per_seed"][0]
    fit, heldout = seed["cross_fit"], seed["heldout_snapshots"]
    assert len(heldout) == 2 and fit is not None
    feasible = seed["policies"]["static_hindsight_feasible"]
    assert fit["in_sample_reward"] == pytest.approx(feasible["reward"], abs=1e-9)
    assert fit["in_sample_accuracy"] == pytest.approx(feasible["accuracy"], abs=1e-9)
    within = seed["oracle_heldout_within_budget"]
    assert fit["per_snapshot_in_sample_reward"] == pytest.approx(np.mean([c["reward"] for c in within]), abs=1e-9)
    assert fit["per_snapshot_in_sample_reward"] >= fit["in_sample_reward"]
    assert fit["cross_fitted_adaptivity_gain"] == pytest.approx(
        fit["per_snapshot_cross_fitted_reward"] - fit["cross_fitted_reward"])
    assert report["oracle"]["cross_fit"]["cross_fitted_adaptivity_gain"] == fit["cross_fitted_adaptivity_gain"]


@pytest.mark.integration
def test_graphsage_fallback_searches_every_action(tmp_path):
    """On GraphSAGE the fallback keeps costless pruning (``COSTLESS_PRUNING_RULE_MODELS``): its plain-mean search is
    greedy search itself, so both find the same plan."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "frontier.png").write_text("an earlier run's")  # --overwrite without a frontier left it beside the results
    assert main(["run", "--quick", "--model", "sage", "--seeds", "1", "--snapshots", "4", "--episodes", "8",
                 "--epochs", "20", "--hidden", "16", "--out", str(out), "--no-progress", "--no-frontier",
                 "--overwrite"]) == 0
    assert not (out / "frontier.png").exists()
    fallback = json.loads((out / "results.json").read_text())["per_seed"][0]["fallback"]
    assert fallback["costless_pruning_rule"] is False and fallback["costless_pruning_left_out"] == [0, 0]
    assert fallback["plain_plan_actions"] == fallback["greedy_actions"]


def test_an_earlier_runs_outputs_are_kept_unless_overwrite_is_given(tmp_path, monkeypatch, capsys):
    """--out naming an earlier run's directory wrote over its results.json (and its plots and checkpoint) unasked."""
    import dste.experiments.pipeline as pipeline

    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2 and "already holds a run's results.json" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"

    class Reached(Exception):
        pass

    def load_base(config):
        raise Reached

    monkeypatch.setattr(pipeline, "_load_base", load_base)
    with pytest.raises(Reached):  # past the check: the job starts
        main(["run", "--out", str(tmp_path), "--overwrite", "--no-progress"])


def test_runs_started_in_the_same_second_get_directories_of_their_own(tmp_path, monkeypatch):
    from dste.experiments.pipeline import default_out_dir

    monkeypatch.chdir(tmp_path)
    first, second = default_out_dir(), default_out_dir()
    assert first.is_dir() and second.is_dir() and first != second


def test_a_fault_inside_dste_keeps_its_traceback(monkeypatch):
    """Bad options are one-line usage errors; a TypeError raised inside the job is a fault and propagates."""
    import dste.experiments.pipeline as pipeline

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(pipeline, "run", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["run", "--quick", "--no-progress"])


def test_every_subcommand_is_offered():
    from dste.cli import SUBCOMMANDS, build_parser

    help_text = build_parser().format_help()
    assert set(SUBCOMMANDS) == {"run", "bench"} and all(name in help_text for name in SUBCOMMANDS)


@pytest.mark.slow
def test_seeds_in_worker_processes_give_the_same_numbers(tmp_path):
    """--jobs 2 runs the seeds in spawned processes, each on one thread as the sequential job: every figure
    but the measured CPU times is the same."""
    reports = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["run", "--seeds", "2", "--snapshots", "4", "--episodes", "8", "--epochs", "10", "--hidden", "8",
                     "--no-frontier", "--jobs", str(jobs), "--out", str(out), "--no-progress"]) == 0
        reports[jobs] = json.loads((out / "results.json").read_text())
    for policy, row in reports[1]["summary"].items():
        for name, value in row.items():
            if "cpu" not in name:
                assert reports[2]["summary"][policy][name] == value, (policy, name)


def test_the_cli_refuses_a_run_the_memory_cannot_hold_as_a_usage_error(monkeypatch, tmp_path, capsys):
    from dste.experiments import env_layers

    monkeypatch.setattr(env_layers, "available_memory_bytes", lambda: 1 << 30)  # a default worker needs 2.4 GB
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--out", str(tmp_path), "--no-progress", "--seeds", "1"])
    assert exit_.value.code == 2
    assert "dste run: error: this machine cannot hold the run" in capsys.readouterr().err


def test_quick_keeps_a_smaller_snapshots_count():
    # --quick caps the snapshots at QUICK_SNAPSHOTS (6) but keeps an explicit smaller --snapshots (min of the two).
    assert run_config.QUICK_SNAPSHOTS == 6
    assert RunConfig(quick=True, snapshots=4).snapshots == 4
    assert RunConfig(quick=True).snapshots == 6


def test_fp32_teachers_with_training_snapshots_is_refused():
    # RunConfig: "--fp32-teachers distils a model trained on the first snapshot; it does not combine with
    # --fp32-snapshots training".
    with pytest.raises(ValueError, match="does not combine with --fp32-snapshots training"):
        RunConfig(fp32_snapshots="training", fp32_teachers=3)
