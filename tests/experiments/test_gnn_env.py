import functools
from dataclasses import replace

import numpy as np
import pytest
import torch

from dste.controller import FP32_ACTION, DQNConfig, DQNPolicy, RewardConfig, TrainConfig, run_policy, train_controller
from dste.data import make_graph, make_stream
from dste.experiments.gnn_env import GNNCompressionEnv
from dste.gnn import gather_aware_keep, make_model, train_fp32
from dste.gnn.channel_fit import CHANNEL_FIT_RIDGE
from dste.gnn.train import graph_tensors


# A cora-like graph at under half the size: the env's cost is the modelled latency of every layer run, which
# grows with the graph's row windows. Still over 1,000 nodes (so the 99.9 % prediction agreement below allows
# one flipped row, as on Cora) and several 128-row windows per launch.
SMALL_CORA = dict(num_nodes=1_200, num_edges=2_340, num_features=500, num_val=300, num_test=600)


@functools.lru_cache(maxsize=None)
def _trained_env(kind: str) -> GNNCompressionEnv:
    """One environment per model kind and test process. pytest-xdist's work stealing can hand a worker this
    module's tests of one kind in several runs, between which a module fixture would be torn down and built
    again (training included), its layer runs and traced launch shapes lost; every test starts with its own
    ``reset``, as it did when the fixture's tests shared one instance."""
    stream = make_stream(make_graph("cora-like", seed=0, **SMALL_CORA), num_snapshots=5, seed=0)
    graphs = [s.graph for s in stream]
    model = make_model(graphs[0], kind, hidden=32, seed=0)
    train_fp32(model, graphs[0], epochs=30, patience=30)
    return GNNCompressionEnv(model, graphs, [0, 1, 2], [3, 4])


@pytest.fixture(scope="module", params=["gcn", "sage"])
def env(request):
    return _trained_env(request.param)


def _episode(env, snapshot, actions):
    env.reset(snapshot)
    states = []
    for layer, action in enumerate(actions):
        states.append(env.state(layer))
        env.step(layer, action)
    return states, env.outcome()


def test_states_are_64_dim_finite_and_see_the_upstream_action(env):
    space = env.action_space
    states_a, _ = _episode(env, 1, [space.nearest(0, 0), space.nearest(0, 0)])
    states_b, _ = _episode(env, 1, [space.nearest(0.75, 1.0), space.nearest(0, 0)])
    for state in states_a + states_b:
        assert state.shape == (64,) and state.dtype == np.float32 and np.isfinite(state).all()
    assert np.array_equal(states_a[0][:24], states_b[0][:24])  # same snapshot, same graph features
    assert not np.array_equal(states_a[1], states_b[1])  # layer 1 sees what layer 0 did


def test_fast_path_matches_the_torch_ops(env):
    space = env.action_space
    for actions in ([FP32_ACTION, FP32_ACTION], [space.nearest(0, 0), space.nearest(0.5, 0.2)],
                    [space.nearest(0.75, 1.0), space.nearest(0.25, 0.05)],
                    [space.nearest(0, 0, channel_sparsity=0.75), space.nearest(0.25, 1.0, channel_sparsity=0.5)]):
        _episode(env, 3, actions)
        fast = env.layers.layer_input(3, tuple(actions))
        ops = env.forward_ops(3, actions).numpy()
        # Same dequantized values and masks; only float32 summation order differs. That can flip a value
        # sitting on an INT8 rounding boundary of a re-quantized intermediate by one level (row max / 127), so
        # the bound is a fraction of one level, and the predictions must agree.
        assert np.abs(ops - fast).max() <= 1e-2 * np.abs(fast).max()
        assert np.mean(ops.argmax(1) == fast.argmax(1)) >= 0.999


def test_pruning_drops_the_requested_share_keeps_loops_and_row_mass(env):
    inference = env.layers.inference(1)
    plan = inference.plan
    message = inference.fp32_messages()[0]
    keep = gather_aware_keep(plan, message, 0.5)
    off = plan.rows != plan.cols
    assert (~keep).sum() == int(np.floor(0.5 * off.sum()))
    assert keep[~off].all()
    pruned = inference.adjacency(0, 0.5)
    base_rows = np.asarray(plan.base.decode().sum(axis=1)).ravel()
    pruned_rows = np.asarray(pruned.decode().sum(axis=1)).ravel()
    has_edges = pruned_rows > 0
    np.testing.assert_allclose(pruned_rows[has_edges], base_rows[has_edges], rtol=1e-5)
    assert pruned.stats()["x_rows_gathered"] < plan.base.stats()["x_rows_gathered"]


def _refit(weight, kept, h, ridge=CHANNEL_FIT_RIDGE):
    h_kept = h[:, kept]
    root = np.sqrt(ridge * np.mean(np.sum(h_kept**2, axis=0)))
    lhs = np.vstack([h_kept, root * np.eye(kept.size)])
    return np.linalg.lstsq(lhs, np.vstack([h @ weight, root * weight[kept]]), rcond=None)[0]


def test_channel_pruning_keeps_the_strongest_inputs_and_shrinks_the_weight_product(env):
    x = env.graphs[2].x.astype(np.float64)
    linears, _ = env.layers.model.layers[0]
    weight_norm = np.sqrt(sum((lin.weight.detach().numpy().astype(np.float64) ** 2).sum(axis=0) for lin in linears))
    score = weight_norm * np.sqrt((x ** 2).mean(axis=0))
    kept = env.layers.inference(2).kept_channels(0, 0.5)
    n_features = x.shape[1]
    assert kept.size == n_features - n_features // 2 and np.all(np.diff(kept) > 0)
    assert score[kept].min() >= np.delete(score, kept).max()  # nothing dropped outranks anything kept

    space = env.action_space
    full = space.nearest(0, 1.0)  # FP16 everywhere: the product is checked against FP32 NumPy
    pruned = space.nearest(0, 1.0, channel_sparsity=0.5)
    _, whole = _episode(env, 2, [full, full])
    _, narrow = _episode(env, 2, [pruned, full])
    layer_whole, layer_narrow = whole.layers[0], narrow.layers[0]
    assert layer_narrow.channel_sparsity == 0.5
    assert layer_narrow.bytes_by_kind["features"] < 0.55 * layer_whole.bytes_by_kind["features"]
    assert layer_narrow.bytes_by_kind["weights"] < layer_whole.bytes_by_kind["weights"]
    assert layer_narrow.latency_us < layer_whole.latency_us

    # The layer is the product over the kept channels with their weight rows re-fitted, on the snapshot's own
    # input, to the full product (ridge regression towards the trained rows, solved here by NumPy's lstsq on the
    # stacked system). FP16 rounding of the input, the weight and the message (relative 2^-11 each) bounds the
    # error by a few 1e-3 of the output's scale.
    out = env.layers.layer_input(2, (pruned,))
    a = env.layers.inference(2).plan.base.decode(effective=True).astype(np.float64)
    w = [lin.weight.detach().numpy().T.astype(np.float64) for lin in linears]
    bias = env.layers.model.bias(0)
    xk = x[:, kept]
    if env.layers.model.kind == "gcn":
        expected = a @ (xk @ _refit(w[0], kept, x)) + bias
    else:
        expected = (a @ xk) @ _refit(w[0], kept, a @ x) + xk @ _refit(w[1], kept, x) + bias
    expected = np.maximum(expected, 0.0)
    assert np.abs(out - expected).max() <= 5e-3 * np.abs(expected).max()


def test_outcome_reports_accuracy_latency_and_bytes(env):
    space = env.action_space
    _, int8 = _episode(env, 3, [space.nearest(0, 0)] * 2)
    _, fp16 = _episode(env, 3, [space.nearest(0, 1.0)] * 2)
    _, fp32 = _episode(env, 3, [FP32_ACTION] * 2)
    assert 0.0 <= int8.accuracy <= 1.0
    assert int8.latency_us == pytest.approx(env.reference_latency(3))
    assert fp16.latency_us > int8.latency_us  # FP16 rows add gathered bytes
    assert fp32.nbytes > 3 * int8.nbytes
    assert set(int8.bytes_by_kind) == {"graph", "features", "weights", "activations"}


def test_outcome_bytes_store_the_graph_once_per_form_its_layers_read(env):
    """An episode mixing an FP32 layer and an INT8 layer over the unpruned graph stores it twice, as FP32 CSR and
    as DSTE tiles; two INT8 layers share the tiles and two FP32 layers the CSR; FP16 rows are 2 B per value."""
    space = env.action_space
    int8 = space.nearest(0, 0)
    inference = env.layers.inference(3)
    n = inference.graph.num_nodes
    base = inference.plan.base
    csr = 4 * (n + 1) + 8 * base.nnz_kept
    tiles = base.nbytes()["device_total"]
    for actions, graph_bytes in (([FP32_ACTION, int8], csr + tiles), ([int8, FP32_ACTION], csr + tiles),
                                 ([int8, int8], tiles), ([FP32_ACTION, FP32_ACTION], csr)):
        _, outcome = _episode(env, 3, actions)
        assert outcome.bytes_by_kind["graph"] == graph_bytes
        assert outcome.nbytes == sum(outcome.bytes_by_kind.values())
    _, fp16 = _episode(env, 3, [space.nearest(0, 1.0)] * 2)
    assert fp16.bytes_by_kind["features"] == 2 * inference.graph.x.size


def test_outcome_carries_the_correctness_of_each_node_the_accuracy_averages(env):
    """Per evaluation node, in node order: the test split on a held-out snapshot, the validation split on a training
    one, every node (against the FP32 model's predictions) under the agreement term; checked against the torch ops'
    predictions."""
    actions = [env.action_space.nearest(0.5, 0.0), env.action_space.nearest(0.25, 0.0)]
    for snapshot, split in ((3, "test_mask"), (1, "val_mask")):
        graph = env.graphs[snapshot]
        mask = getattr(graph, split)
        _, outcome = _episode(env, snapshot, actions)
        assert outcome.correct.dtype == bool and outcome.correct.shape == (int(mask.sum()),)
        assert outcome.accuracy == pytest.approx(outcome.correct.mean())
        np.testing.assert_array_equal(outcome.nodes, np.flatnonzero(mask))
        expected = env.forward_ops(snapshot, actions).numpy().argmax(1)[mask] == graph.y[mask]
        assert np.sum(outcome.correct != expected) <= 2  # a row may flip on an INT8 rounding boundary
    agreement = env.variant(train_accuracy="agreement")
    _, outcome = _episode(agreement, 1, actions)
    assert outcome.correct.shape == (env.graphs[1].num_nodes,)
    np.testing.assert_array_equal(outcome.nodes, np.arange(env.graphs[1].num_nodes))
    assert outcome.accuracy == pytest.approx(agreement.agreement(1, actions))


def test_agreement_is_the_share_of_nodes_predicted_as_the_fp32_model_predicts(env):
    space = env.action_space
    graph = env.graphs[4]
    model = env.layers.model.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            fp32 = model(graph_tensors(graph)[0], graph.adj).argmax(1).numpy()
    finally:
        model.train(was_training)
    light = [space.nearest(0, 0), space.nearest(0, 0)]
    heavy = [space.nearest(0.75, 0.0, channel_sparsity=0.75), space.nearest(0.75, 0.0)]
    measured = {}
    for actions in (light, heavy):
        expected = np.mean(env.forward_ops(4, actions).numpy().argmax(1) == fp32)
        measured[tuple(actions)] = env.agreement(4, actions)
        # the torch ops and the fast path may flip a row on an INT8 rounding boundary (see the test above)
        assert measured[tuple(actions)] == pytest.approx(expected, abs=2 / graph.num_nodes + 1e-12)
    assert measured[tuple(heavy)] < measured[tuple(light)]
    for snapshot, actions, error, message in ((4, [0], ValueError, "2 action indices"),
                                              (4, [0, 48], ValueError, "action indices"),
                                              (4, [FP32_ACTION, 0], ValueError, "action indices"),
                                              (9, light, ValueError, "outside"),
                                              (4, [0.5, 0], TypeError, "int indices")):
        with pytest.raises(error, match=message):
            env.agreement(snapshot, actions)


def test_bad_use_is_refused(env):
    with pytest.raises(RuntimeError, match="reset"):
        GNNCompressionEnv(env.layers.model.model, env.graphs, [0], [1]).state(0)
    env.reset(0)
    with pytest.raises(ValueError, match="out of turn"):
        env.step(1, 0)
    with pytest.raises(IndexError, match="action index"):
        env.step(0, 99)
    with pytest.raises(RuntimeError, match="every layer"):
        env.outcome()
    with pytest.raises(ValueError, match="disjoint"):
        GNNCompressionEnv(env.layers.model.model, env.graphs, [0, 1], [1])
    with pytest.raises(ValueError, match="outside"):
        GNNCompressionEnv(env.layers.model.model, env.graphs, [0], [7])
    with pytest.raises(TypeError, match="train_ids must be int indices"):  # int(1.5) made it the held-out snapshot
        GNNCompressionEnv(env.layers.model.model, env.graphs, [1.5], [1])
    with pytest.raises(TypeError, match="budget_actions must be int indices"):
        GNNCompressionEnv(env.layers.model.model, env.graphs, [0], [1], budget_actions=[1.9, 0.5])
    with pytest.raises(TypeError, match="snapshot must be int indices"):
        env.reset(2.9)
    with pytest.raises(TypeError, match="TwoLayerGNN"):
        GNNCompressionEnv(torch.nn.Linear(2, 2), env.graphs, [0], [1])
    narrow = replace(env.graphs[1], x=env.graphs[1].x[:, :3].copy())
    with pytest.raises(ValueError, match="snapshot 1's x has shape"):  # refused when built, not at its first step
        GNNCompressionEnv(env.layers.model.model, [env.graphs[0], narrow], [0], [1])


def test_a_streams_own_index_arrays_name_the_snapshots(env):
    """SnapshotStream.train_indices / heldout_indices are NumPy arrays: `if not ids` raised "The truth value of an
    array with more than one element is ambiguous"."""
    model = env.layers.model.model
    from_arrays = GNNCompressionEnv(model, env.graphs, np.array([0, 1, 2]), np.array([3, 4]))
    assert from_arrays.snapshots("train") == [0, 1, 2] and from_arrays.snapshots("heldout") == [3, 4]


@pytest.mark.integration
def test_short_training_on_the_real_env_is_reproducible(env):
    config = TrainConfig(episodes=24, normalizer_episodes=4, select_every=8, dqn=DQNConfig(seed=5, learn_starts=8),
                         reward=RewardConfig(0.2))
    first = train_controller(env, config)
    second = train_controller(env, config)
    for key, tensor in first.agent.q.state_dict().items():
        assert torch.equal(tensor, second.agent.q.state_dict()[key]), key
    held = env.snapshots("heldout")
    assert [o.actions for o in run_policy(env, DQNPolicy(first.agent), held).outcomes] == [
        o.actions for o in run_policy(env, DQNPolicy(second.agent), held).outcomes
    ]


def test_vectorised_row_sensitivity_is_the_rms_int8_error_over_the_mean_magnitude():
    from dste.gnn.settings import row_sensitivity

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 24)).astype(np.float32)
    x[5, 3] = 80.0  # an outlier row: large S
    x[7] = 0.0  # an all-zero row: S = 0
    # Independent float64 loop of the formula: scale max|x| / 127 (float32), round half to even, clip to int8.
    expected = np.zeros(x.shape[0])
    for i, row in enumerate(x):
        amax = np.float32(np.abs(row).max())
        scale = np.float32(amax / np.float32(127.0)) if amax > 0 else np.float32(1.0)
        deq = (np.clip(np.rint(row / scale), -128, 127).astype(np.float32) * scale).astype(np.float64)
        mean_abs = np.abs(row.astype(np.float64)).mean()
        expected[i] = np.sqrt(np.mean((row - deq) ** 2)) / mean_abs if mean_abs > 0 else 0.0
    np.testing.assert_allclose(row_sensitivity(x), expected, rtol=1e-9, atol=1e-12)
    assert row_sensitivity(x)[7] == 0.0 and row_sensitivity(x)[5] > 5 * np.median(row_sensitivity(x))


def test_latency_table_prices_actions_as_the_step_then_reports(env):
    space = env.action_space
    prefix_action = space.nearest(0.5, 0.0, channel_sparsity=0.25)  # layer 1 sees a non-reference input
    env.reset(2)
    table_0, table_1 = env.latency_table(2, 0), env.latency_table(2, 1)
    assert table_0.shape == table_1.shape == (len(space),) and np.isfinite(table_1).all()
    # Layer 0's input never depends on an earlier choice: every entry is exact.
    for action in (0, prefix_action, len(space) - 1):
        env.reset(2)
        assert env.step(0, action).latency_us == pytest.approx(table_0[action], rel=1e-12)
    # Layer 1: exact for all-INT8 and all-FP16 rows, whatever layer 0 ran with.
    for action in range(len(space)):
        if space[action].fp16_fraction not in (0.0, 1.0):
            continue
        env.reset(2)
        env.step(0, prefix_action)
        assert env.step(1, action).latency_us == pytest.approx(table_1[action], rel=1e-12)
    with pytest.raises(ValueError, match="layer"):
        env.latency_table(2, 2)


def test_action_latency_is_the_price_the_step_then_reports(env):
    space = env.action_space
    env.reset(2)
    with pytest.raises(ValueError, match="out of turn"):
        env.action_latency(1, 0)
    assert env.action_latency(0, 0) == pytest.approx(env.latency_table(2, 0)[0], rel=1e-12)
    env.step(0, space.nearest(0.5, 0.0, channel_sparsity=0.25))  # layer 1 sees a non-reference input
    partly_fp16 = space.nearest(0.25, 0.05)
    price = env.action_latency(1, partly_fp16)
    assert env.step(1, partly_fp16).latency_us == price  # the table may estimate it; this is exact


def test_a_variant_changes_the_goal_not_the_original_and_shares_the_layer_runs(env):
    space = env.action_space
    budgeted = env.variant(budget_actions=[space.nearest(0.5, 0.0)] * 2)
    agreement = budgeted.variant(budget_actions=None, train_accuracy="agreement")
    assert env.budget_actions is None and env.budget_fraction(1) is None and env.train_accuracy == "val"
    assert 0.0 < budgeted.budget_fraction(1) < 1.0  # static 50 % sparse INT8 is cheaper than uniform INT8
    assert agreement.budget_fraction(1) is None and budgeted.train_accuracy == "val"
    assert agreement.layers is budgeted.layers is env.layers
    _, fp32_on_train = _episode(agreement, 1, [FP32_ACTION] * 2)
    assert fp32_on_train.accuracy == 1.0  # the FP32 model agrees with itself on every node
    with pytest.raises(ValueError, match="train_accuracy"):
        env.variant(train_accuracy="test")


def test_layer_run_cache_is_held_to_its_byte_budget(env):
    from dste.experiments import env_layers

    layers = env_layers.LayerEvaluator(env.layers.model.model, env.graphs[:1], env.action_space)
    assert layers.run_bytes_kept == env_layers.LAYER_RUN_BYTES_KEPT
    one_output = layers.run_layer(0, 0, (), env.action_space.nearest(0, 0))[0].nbytes
    layers.run_bytes_kept = 3 * one_output
    for action in range(6):
        layers.run_layer(0, 0, (), action)
    held = sum(output.nbytes for output, _ in layers._runs.values())
    assert held <= 3 * one_output and len(layers._runs) >= 2
    assert held == layers._run_bytes  # the running total follows what is held
    assert layers.run_layer(0, 0, (), 0)[0].shape[0] == env.graphs[0].num_nodes  # a dropped run is recomputed


def test_activation_state_uses_every_node_of_small_graphs_and_a_fixed_sample_of_large_ones():
    from dste.controller.state import activation_features
    from dste.experiments.env_layers import STATE_ROWS, state_rows

    assert state_rows(STATE_ROWS) is None
    rows = state_rows(5 * STATE_ROWS)
    assert rows.size == STATE_ROWS and np.all(np.diff(rows) > 0) and np.array_equal(rows, state_rows(5 * STATE_ROWS))
    h = np.random.default_rng(0).standard_normal((5 * STATE_ROWS, 16)).astype(np.float32)
    full, sampled = activation_features(h), activation_features(h[rows])
    # statistics of i.i.d. rows: the sample's mean and std within a few standard errors of the whole
    assert abs(full[0] - sampled[0]) < 5 / np.sqrt(STATE_ROWS * 16) and abs(full[1] - sampled[1]) < 0.02


def test_the_fitted_plan_keeps_the_budget_at_the_exact_price_and_the_network_never_replaces_it():
    """The latency tables estimate actions with 5 % FP16 rows; on snapshot 3 the plan (40, 16) fits by the tables and
    overspends by 0.21 us at its exact price. The fitted plan, asked for it, overspent when run alone, and under
    DQNPolicy (margin inf) the guard masked its action and the untrained network's argmax took its place."""
    from dste.controller import BudgetGuard, BudgetProjectedPlan, DQNAgent
    from dste.controller.guard import budget_slack_us

    base = _trained_env("gcn")
    space = base.action_space
    env = base.variant(budget_actions=[space.nearest(0.5, 0.0)] * 2)
    guard = BudgetGuard(env, RewardConfig(lambda_latency=0.05, budget_penalty=5.0))
    snapshot = 3
    budget = guard.budget_us(snapshot) + budget_slack_us(guard.budget_us(snapshot))
    first, second = np.asarray(env.latency_table(snapshot, 0)), np.asarray(env.latency_table(snapshot, 1))
    env.reset(snapshot)
    env.step(0, 40)
    assert first[40] + second[16] <= budget < first[40] + env.action_latency(1, 16)  # the tables let it through
    values = np.zeros((2, len(space)))
    values[0, 40] = values[1, 16] = 1.0  # (40, 16): the most valuable plan
    plan = BudgetProjectedPlan([40, 16], values, guard)
    alone = run_policy(env, plan, [snapshot]).outcomes[0]
    assert alone.latency_us <= budget and alone.actions[0] == 40 and alone.actions[1] != 16
    policy = DQNPolicy(DQNAgent(space, DQNConfig(seed=0, hidden=16)), guard=guard, fallback=plan, margin=float("inf"))
    guarded = run_policy(env, policy, [snapshot]).outcomes[0]
    assert guarded.actions == alone.actions and guarded.latency_us <= budget


def test_controller_calls_slightly_wrong_get_a_clear_answer(env):
    """Each was a raw AttributeError, an IndexError mid-run, or a silent run under another environment's budget."""
    from dste.controller import BudgetGuard, RandomPolicy
    from dste.controller.dqn import DQNAgent

    with pytest.raises(TypeError, match=r"takes a TrainConfig, got RewardConfig \(a RewardConfig goes inside"):
        train_controller(env, RewardConfig())
    with pytest.raises(ValueError, match="draws from 100 actions; the environment has 48"):
        run_policy(env, RandomPolicy(100), env.snapshots("heldout"))
    other = env.variant(budget_actions=[0, 0])
    agent = DQNAgent(env.action_space, DQNConfig(seed=0))
    guarded = DQNPolicy(agent, guard=BudgetGuard(other, RewardConfig(budget=1.0)))
    with pytest.raises(ValueError, match="guard is bound to another environment"):
        run_policy(env, guarded, env.snapshots("heldout"))
    assert TrainConfig(episodes=np.int64(5)).episodes == 5 and type(TrainConfig(episodes=np.int64(5)).episodes) is int
    assert RewardConfig(lambda_latency=np.float32(0.05)).lambda_latency == pytest.approx(0.05)
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        TrainConfig(episodes=2.5)


def test_prev_latency_share_is_over_the_previous_snapshots_uniform_int8_latency(env):
    # The state's prev_latency_share: the layer's modelled latency on the previous snapshot over that snapshot's
    # reference latency (uniform INT8, no pruning). Reference: uniform INT8 run on snapshot 1 and summed here.
    from dste.controller.state import FEATURE_NAMES

    space = env.action_space
    env.begin_stream()
    _, int8 = _episode(env, 1, [space.nearest(0.0, 0.0)] * env.num_layers)
    plan = [space.nearest(0.5, 0.0), space.nearest(0.25, 0.0)]
    env.begin_stream()
    _, outcome = _episode(env, 1, plan)
    env.reset(2)
    share = float(env.state(0)[FEATURE_NAMES.index("prev_latency_share")])
    expected = outcome.layers[0].latency_us / int8.latency_us
    assert expected < 0.9  # layer 0 over the latency spent when it ran (itself) would read 1.0
    assert share == pytest.approx(float(np.clip(expected, -5, 5)), rel=1e-5)


def test_snapshot_one_carries_its_churn_against_snapshot_zero(env):
    # graph_state(n) compares snapshot n with snapshot n - 1 where the node set is the same, snapshot 1 included.
    # Reference: entries added by set arithmetic, 10 * |E1 - E0| / |E0| (clipped to 5).
    from dste.controller.state import GRAPH_FEATURES

    g0, g1 = env.graphs[0], env.graphs[1]
    assert g0.num_nodes == g1.num_nodes

    def entries(adj):
        adj = adj.tocoo()
        return set(zip(adj.row.tolist(), adj.col.tolist()))

    e0, e1 = entries(g0.adj), entries(g1.adj)
    expected = float(np.clip(10 * len(e1 - e0) / len(e0), -5, 5))
    assert expected > 0
    got = float(env.layers.graph_state(1)[list(GRAPH_FEATURES).index("edges_added_fraction")])
    assert got == pytest.approx(expected, rel=1e-5)


def test_the_state_carries_each_layers_previous_channel_sparsity(env):
    # MASK_FEATURES' prev_channel_sparsity: what share of its input channels the layer pruned on the previous snapshot
    # (it read 0 whatever ran before, so the network could not tell channel pruning from none)
    from dste.controller.state import FEATURE_NAMES

    space = env.action_space
    column = FEATURE_NAMES.index("prev_channel_sparsity")
    plan = [space.nearest(0.0, 0.0, channel_sparsity=0.5), space.nearest(0.0, 0.0, channel_sparsity=0.25)]
    env.begin_stream()
    _episode(env, 1, plan)
    env.reset(2)
    assert float(env.state(0)[column]) == pytest.approx(0.5)
    env.step(0, space.nearest(0.0, 0.0))
    assert float(env.state(1)[column]) == pytest.approx(0.25)
    env.begin_stream()
    env.reset(2)
    assert float(env.state(0)[column]) == 0.0  # a new stream: nothing ran before


def test_generator_ids_and_budget_actions_outside_the_space_are_refused_when_built(env):
    """A generator of ids was used up by the checks (snapshots("train") came back empty), and a budget action past
    the action space failed with an IndexError only where a budget was first read."""
    model = env.layers.model.model
    from_generators = GNNCompressionEnv(model, env.graphs, (i for i in range(3)), (i for i in (3, 4)))
    assert from_generators.snapshots("train") == [0, 1, 2] and from_generators.snapshots("heldout") == [3, 4]
    with pytest.raises(ValueError, match=r"budget_actions \[999, -5\] are outside the action space \[0, 48\)"):
        GNNCompressionEnv(model, env.graphs, [0], [1], budget_actions=[999, -5])
