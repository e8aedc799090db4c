import numpy as np
import pytest
import torch

from dste.controller.actions import ActionSpace
from dste.controller.dqn import CheckpointError, DQNAgent, DQNConfig
from dste.controller.trainer import TrainConfig


def _trained_agent(seed=0):
    agent = DQNAgent(ActionSpace(), DQNConfig(seed=seed, learn_starts=8, batch_size=8))
    rng = np.random.default_rng(seed)
    for _ in range(20):
        s, s2 = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
        agent.remember(s, int(rng.integers(16)), float(rng.random()), s2, bool(rng.random() < 0.5))
        agent.learn()
    return agent


def test_same_seed_same_weights_and_actions():
    a, b = _trained_agent(3), _trained_agent(3)
    for (name, ta), (_, tb) in zip(a.q.state_dict().items(), b.q.state_dict().items()):
        assert torch.equal(ta, tb), name
    state = np.ones(64, np.float32)
    assert [a.act(state, 0.5) for _ in range(20)] == [b.act(state, 0.5) for _ in range(20)]
    c = _trained_agent(4)
    assert not torch.equal(a.q.trunk[0].weight, c.q.trunk[0].weight)


def test_the_multi_tensor_adam_step_gives_the_weights_of_torchs_default_loop(monkeypatch):
    """The agent's Adam runs foreach (fewer calls); the weights must be those of torch's per-parameter loop."""
    foreach = _trained_agent(5)
    adam = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda params, lr, foreach: adam(params, lr=lr, foreach=False))
    loop = _trained_agent(5)
    assert loop.optimizer.defaults["foreach"] is False and foreach.optimizer.defaults["foreach"] is True
    for (name, ta), (_, tb) in zip(foreach.q.state_dict().items(), loop.q.state_dict().items()):
        assert torch.equal(ta, tb), name


def test_agent_does_not_disturb_the_global_torch_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DQNAgent(ActionSpace(), DQNConfig(seed=9))
    assert torch.equal(torch.rand(3), expected)


def test_save_load_round_trip(tmp_path):
    agent = _trained_agent()
    path = agent.save(tmp_path / "controller.pt")
    loaded = DQNAgent.load(path)
    state = np.linspace(-1, 1, 64).astype(np.float32)
    assert np.array_equal(agent.q_values(state), loaded.q_values(state))
    assert loaded.action_space == agent.action_space
    assert loaded.config == agent.config


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    path = _trained_agent().save(tmp_path / "controller.pt")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        DQNAgent.load(truncated)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        DQNAgent.load(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        DQNAgent.load(tmp_path)

    payload = torch.load(path, weights_only=True)
    payload["q_network"]["trunk.0.weight"][0, 0] += 1.0
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(CheckpointError, match="SHA-256"):
        DQNAgent.load(tampered)

    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match="version 99"):
        DQNAgent.load(future)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="format tag"):
        DQNAgent.load(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        DQNAgent.load(tmp_path / "missing.pt")


def test_bad_config_and_state_are_refused():
    with pytest.raises(ValueError, match="seed"):
        DQNConfig(seed=-1)
    with pytest.raises(ValueError, match="epsilon"):
        DQNConfig(epsilon_start=0.1, epsilon_end=0.5)
    for clip in (-10.0, 0.0, float("nan"), float("inf")):  # -10 reversed every step: training climbed the loss
        with pytest.raises(ValueError, match="grad_clip"):
            DQNConfig(grad_clip=clip)
    agent = DQNAgent(ActionSpace())
    with pytest.raises(IndexError, match=r"action index must lie in \[0, 48\), got 48"):  # failed at learn() before
        agent.remember(np.zeros(64, np.float32), 48, 0.0, np.zeros(64, np.float32), True)
    with pytest.raises(TypeError, match="DQNConfig and a RewardConfig"):
        TrainConfig(dqn=None)
    with pytest.raises(ValueError, match="episodes must be a positive int"):
        TrainConfig(episodes=True)
    with pytest.raises(ValueError, match=r"shape \(64,\)"):
        agent.act(np.zeros(63, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        agent.act(np.full(64, np.nan, np.float32))


def test_epsilon_schedule_decays_linearly():
    cfg = DQNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_fraction=0.5)
    assert cfg.epsilon(0, 100) == 1.0
    assert cfg.epsilon(25, 100) == pytest.approx(0.55)
    assert cfg.epsilon(50, 100) == pytest.approx(0.1)
    assert cfg.epsilon(99, 100) == pytest.approx(0.1)


def test_branching_q_is_additive_over_the_action_axes_at_initialisation():
    # The joint head starts at zero, so Q(i, j, k) - Q(i', j, k) must not depend on (j, k): each axis's
    # advantage is shared by every action using that level.
    space = ActionSpace()
    agent = DQNAgent(space, DQNConfig(seed=4))
    q = agent.q_values(np.linspace(-1, 1, 64).astype(np.float32)).reshape(space.axes())
    edge_effect = q[1] - q[0]
    assert np.allclose(edge_effect, edge_effect[0, 0], atol=1e-5)
    assert np.ptp(q) > 0  # and the network is not constant


def test_axes_that_do_not_factor_the_actions_are_refused():
    from dste.controller.dqn import QNetwork

    with pytest.raises(ValueError, match="multiply"):
        QNetwork(10, axes=(4, 3))


def test_a_checkpoint_ensemble_acts_on_the_mean_q_and_round_trips(tmp_path):
    first, second, third = _trained_agent(0), _trained_agent(1), _trained_agent(2)
    weights = [agent.q.state_dict() for agent in (first, second, third)]
    ensemble = DQNAgent(ActionSpace(), DQNConfig(seed=0, learn_starts=8, batch_size=8), first.normalizer)
    ensemble.use_checkpoints(weights)
    assert ensemble.ensemble_size == 3
    states = np.random.default_rng(5).normal(size=(10, 64)).astype(np.float32)
    for state in states:
        mean = np.mean([agent.q_values(state) for agent in (first, second, third)], axis=0)
        np.testing.assert_allclose(ensemble.q_values(state), mean, rtol=1e-5, atol=1e-6)
        assert ensemble.act(state) == int(np.argmax(mean))
    loaded = DQNAgent.load(ensemble.save(tmp_path / "ensemble.pt"))
    assert loaded.ensemble_size == 3
    for state in states:
        assert np.array_equal(loaded.q_values(state), ensemble.q_values(state))
    with pytest.raises(RuntimeError, match="does not learn"):
        ensemble.learn()
    single = DQNAgent(ActionSpace(), DQNConfig(seed=0))
    single.use_checkpoints(weights[:1])
    assert single.ensemble_size == 1
    with pytest.raises(ValueError, match="at least one"):
        single.use_checkpoints([])


def test_an_agent_on_one_checkpoint_acts_on_it_and_goes_on_learning():
    # one checkpoint is loaded into the network the optimizer tracks: before, a fresh network replaced it and later
    # learn() calls moved the old, unused one
    agent, other = _trained_agent(0), _trained_agent(1)
    agent.use_checkpoints([other.q.state_dict()])
    state = np.random.default_rng(3).normal(size=64).astype(np.float32)
    np.testing.assert_array_equal(agent.q_values(state), other.q_values(state))
    before = agent.q_values(state)
    assert agent.learn() is not None
    assert not np.array_equal(agent.q_values(state), before)
    back = _trained_agent(2)  # an ensemble, then one checkpoint: a network of its own and an optimizer for it
    back.use_checkpoints([agent.q.state_dict(), other.q.state_dict()])
    back.use_checkpoints([other.q.state_dict()])
    before = back.q_values(state)
    assert back.learn() is not None and not np.array_equal(back.q_values(state), before)


def test_exploration_is_uniform_over_the_allowed_actions():
    """With epsilon = 1 every allowed action is drawn equally often, also where their count does not divide the
    action space's (a draw over all actions mapped onto the allowed ones gives some 2 and others 3 of 48 draws)."""
    agent = DQNAgent(ActionSpace(), DQNConfig(seed=0))
    n = len(agent.action_space)
    allowed = np.zeros(n, dtype=bool)
    allowed[np.arange(0, n, 2)[:20]] = True  # 20 allowed, which does not divide n
    state = np.zeros(64, np.float32)
    draws = 40_000
    counts = np.bincount([agent.act(state, 1.0, allowed) for _ in range(draws)], minlength=n)
    assert counts[~allowed].sum() == 0
    expected = draws / allowed.sum()  # 2,000; one draw's count has a standard deviation of about 44
    assert np.abs(counts[allowed] - expected).max() < 0.1 * expected, counts[allowed]
