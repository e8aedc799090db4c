"""Controller checkpoints: atomic saves and a checksum over everything the loaded agent depends on."""

import os

import numpy as np
import pytest
import torch

from dste.controller.actions import ActionSpace
from dste.controller.dqn import CheckpointError, DQNAgent, DQNConfig


def _agent():
    return DQNAgent(ActionSpace(), DQNConfig(seed=1, learn_starts=8, batch_size=8))


def test_a_save_that_fails_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    agent = _agent()
    path = agent.save(tmp_path / "controller.pt")
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial pickle")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        agent.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["controller.pt"]  # the temporary file is gone
    state = np.ones(64, np.float32)
    assert np.array_equal(DQNAgent.load(path).q_values(state), agent.q_values(state))


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p["action_space"]["sparsity_levels"].__setitem__(1, p["action_space"]["sparsity_levels"][1] + 0.25),
        lambda p: p["action_space"]["fp16_fractions"].reverse(),
        lambda p: p["config"].__setitem__("gamma", 0.5),
        lambda p: p.__setitem__("ensemble_size", 2),
        lambda p: p["normalizer_std"].mul_(2.0),
    ],
)
def test_a_changed_action_level_or_config_fails_the_checksum(tmp_path, edit):
    path = _agent().save(tmp_path / "controller.pt")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(CheckpointError, match="SHA-256"):
        DQNAgent.load(tampered)


def test_weights_changed_with_the_digest_removed_and_the_payload_made_unhashable_are_refused(tmp_path):
    """No stored digest (None) and a payload the digest cannot hash (None) compared equal: altered weights loaded."""
    path = _agent().save(tmp_path / "controller.pt")
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]
    payload["config"][0] = "not JSON-keyable beside str keys"  # json.dumps(sort_keys=True) fails on mixed keys
    payload["q_network"]["joint.bias"] += 5.0
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(CheckpointError, match="SHA-256"):
        DQNAgent.load(tampered)


@pytest.mark.parametrize("version", [4.0, True, "4"])
def test_only_the_exact_integer_version_loads(tmp_path, version):
    path = _agent().save(tmp_path / "controller.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = version
    torch.save(payload, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version"):
        DQNAgent.load(tmp_path / "v.pt")


def test_every_flipped_byte_is_refused_or_loads_the_same_agent(tmp_path):
    agent = _agent()
    path = agent.save(tmp_path / "controller.pt")
    data = path.read_bytes()
    state = np.linspace(-1, 1, 64).astype(np.float32)
    expected = agent.q_values(state)
    rng = np.random.default_rng(0)
    for offset in rng.choice(len(data), size=40, replace=False):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x5A
        bad = tmp_path / "bad.pt"
        bad.write_bytes(bytes(corrupt))
        try:
            loaded = DQNAgent.load(bad)
        except CheckpointError:
            continue
        # a byte the zip container does not use (padding): the agent must be unchanged
        assert np.array_equal(loaded.q_values(state), expected)
        assert loaded.action_space == agent.action_space and loaded.config == agent.config


def test_a_checkpoint_recorded_for_another_state_layout_is_refused(tmp_path):
    # DQNAgent.load refuses a payload whose state_dim is not this build's STATE_DIM, even with a consistent digest.
    from dste.controller.dqn import payload_digest
    from dste.controller.state import STATE_DIM

    path = tmp_path / "agent.pt"
    _agent().save(path)
    payload = torch.load(path, weights_only=True)
    payload["state_dim"] = STATE_DIM + 8
    payload.pop("sha256")
    payload["sha256"] = payload_digest(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"{STATE_DIM + 8}-dim states"):
        DQNAgent.load(path)
