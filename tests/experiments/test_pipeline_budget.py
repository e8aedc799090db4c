"""dste run's budget modes, stream presets and generated-dataset specs (parsing and validation only)."""

import numpy as np
import pytest

from dste.cli import main
from dste.experiments.pipeline import _load_base
from dste.experiments.run_config import RunConfig, csbm_spec, fp32_budget_fraction


@pytest.mark.parametrize("text, value", [("0.33fp32", 0.33), ("1FP32", 1.0), ("0.5fp32", 0.5)])
def test_fp32_budget_parses_the_fraction(text, value):
    assert fp32_budget_fraction(text) == pytest.approx(value)
    assert RunConfig(budget=text).budget == f"{value:g}fp32"


def test_an_fp32_budget_keeps_every_digit_given():
    # '{:g}' kept six significant digits: 0.1234567fp32 ran (and was recorded) as 0.123457fp32
    assert RunConfig(budget="0.1234567fp32").budget == "0.1234567fp32"
    assert RunConfig(budget="1.0000004fp32").budget == "1.0000004fp32"


def test_an_empty_output_directory_is_refused():
    with pytest.raises(ValueError, match="--out must name a directory"):
        RunConfig(out="")


@pytest.mark.parametrize("text", ["static50", "STATIC50", "Static50"])
def test_static50_budget_is_recognised_in_any_case(text):
    # spelled otherwise it was accepted, then compared as "static50" and silently run without a budget
    assert RunConfig(budget=text).budget == "static50"


@pytest.mark.parametrize("text", ["fp32", "-1fp32", "0fp32", "abcfp32"])
def test_bad_fp32_budgets_are_refused_with_the_form_expected(text):
    with pytest.raises(ValueError, match="fp32"):
        RunConfig(budget=text)


def test_unknown_stream_is_refused_naming_the_presets():
    with pytest.raises(ValueError, match="bursty"):
        RunConfig(stream="sideways")


def test_csbm_spec_builds_the_requested_graph():
    spec = "csbm:num_nodes=2000,num_edges=5000,num_classes=4,num_features=64,homophily=0.7,locality=0.5"
    assert csbm_spec(spec)["homophily"] == 0.7 and csbm_spec(spec)["num_nodes"] == 2000
    graph = _load_base(RunConfig(dataset=spec))
    assert graph.num_nodes == 2000 and graph.num_classes == 4 and graph.x.shape[1] == 64
    assert abs(graph.edge_homophily() - 0.7) < 0.05  # the generator hits its homophily to a few edges in 100


def test_csbm_spec_refuses_unknown_keys():
    with pytest.raises(ValueError, match="CSBMParams"):
        csbm_spec("csbm:nodes=10")


def test_csbm_spec_takes_the_generators_shortfall_limit():
    # the generator's error names edge_shortfall_limit as the way out; a csbm: spec refused it as "not a key"
    spec = "csbm:num_nodes=400,num_edges=5000,community_size=2-2"
    with pytest.raises(ValueError, match="edge_shortfall_limit"):
        _load_base(RunConfig(dataset=spec))
    graph = _load_base(RunConfig(dataset=spec + ",edge_shortfall_limit=0.9"))
    assert 0 < graph.num_edges < 5000


def test_csbm_spec_takes_a_community_size_range_and_refuses_malformed_values():
    knobs = csbm_spec("csbm:num_nodes=1500,num_edges=4000,community_size=16-64")
    assert knobs == {"num_nodes": 1500, "num_edges": 4000, "community_size": (16, 64)}
    graph = _load_base(RunConfig(dataset="csbm:num_nodes=1500,num_edges=4000,num_classes=3,community_size=16-64"))
    sizes = np.bincount(graph.communities)
    assert sizes[sizes > 0].min() >= 16 and sizes.max() <= 64
    for spec, message in (("csbm:num_nodes=abc", "num_nodes must be a number, got 'abc'"),
                          ("csbm:num_nodes=1000.5", "num_nodes must be a whole number"),
                          ("csbm:community_size=16", "community_size must be MIN-MAX"),
                          ("csbm:community_size=a-b", "community_size must be MIN-MAX")):
        with pytest.raises(ValueError, match=message):
            csbm_spec(spec)
    with pytest.raises(ValueError, match="community_size must be \\(min, max\\) with 2 <= min <= max"):
        _load_base(RunConfig(dataset="csbm:community_size=64-16"))


def test_cli_refuses_a_bad_stream(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--stream", "sideways", "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert "--stream must be one of" in capsys.readouterr().err


def test_every_judged_policy_is_led_in_through_the_last_training_snapshot(monkeypatch):
    # pipeline._run_seed: "The held-out snapshots continue the stream: each policy first passes (unscored) through the
    # last training snapshot". The controller's fit is stubbed out (only the lead-in is checked) and the first
    # held-out run stops the job; the training ids come from the stream itself.
    from types import SimpleNamespace

    from tqdm.auto import tqdm

    import dste.experiments.pipeline as pipeline
    from dste.controller import StaticPolicy
    from dste.data import SnapshotStream, make_graph
    from dste.data.stream import stream_params

    class Stop(Exception):
        pass

    def fit_controller(env, *args, **kwargs):
        plan = StaticPolicy("stub", [env.action_space.nearest(0.0, 0.0)] * env.num_layers)
        return SimpleNamespace(trained=None, greedy=plan, guard=None, projected=plan, policy=plan, allowed=None,
                               recent=None, plain=None, plan=None, recency_choice=None, margin=0.0, margin_scores={})

    runs = []

    def run_policy(env, policy, snapshots, lead_in=()):
        runs.append((list(snapshots), list(lead_in)))
        raise Stop

    monkeypatch.setattr(pipeline, "fit_controller", fit_controller)
    monkeypatch.setattr(pipeline, "run_policy", run_policy)
    base = make_graph("cora-like", seed=0, num_nodes=500, num_edges=1200, num_features=16, num_val=100, num_test=200)
    config = RunConfig(quick=True, snapshots=4, epochs=1, hidden=8, progress=False)
    stream = SnapshotStream(base, stream_params(config.stream, config.snapshots), seed=0)
    train, heldout = [int(i) for i in stream.train_indices], [int(i) for i in stream.heldout_indices]
    assert len(train) >= 2  # else first and last training snapshot are the same
    with pytest.raises(Stop):
        pipeline._run_seed(config, base, 0, tqdm(disable=True))
    assert runs == [(heldout, train[-1:])]
