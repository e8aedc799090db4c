"""A small, seeded DQN: MLP Q-network, replay buffer, target network, epsilon-greedy, Huber loss, Adam.

Everything random draws from generators seeded by ``DQNConfig.seed`` (network init from a private torch
generator, exploration and replay sampling from NumPy generators), so the same seed and the same
environment give the same weights and the same actions. Double-DQN targets (online net picks, target net
values) reduce the over-estimation plain DQN shows with few, noisy rewards.

Checkpoints are single ``torch.save`` files read back with ``weights_only=True`` (no pickled code runs) and
validated: format tag, version, shapes, finiteness and a SHA-256 of the parameters.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dste.controller.actions import ActionSpace
from dste.controller.state import STATE_DIM, StateNormalizer

__all__ = ["DQNConfig", "QNetwork", "QEnsemble", "ReplayBuffer", "DQNAgent", "CheckpointError"]

CHECKPOINT_FORMAT = "dste-dqn-controller"
CHECKPOINT_VERSION = 4  # 2: three-axis action space, branching Q-network; 3: Q-networks may be checkpoint ensembles;
# 4: the SHA-256 covers the whole payload (config, action space, normalizer, weights), not the weights alone


class CheckpointError(ValueError):
    """A controller checkpoint that is missing, corrupt, or does not match what is expected."""


@dataclass(frozen=True)
class DQNConfig:
    seed: int = 0
    hidden: int = 128
    learning_rate: float = 1e-3
    gamma: float = 1.0  # episodes are L layer steps long; undiscounted, the return is the episode reward
    batch_size: int = 64
    replay_capacity: int = 20000
    target_sync_steps: int = 50
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_fraction: float = 0.6  # of the episodes, linearly
    learn_starts: int = 64
    updates_per_step: int = 1
    grad_clip: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        positive_ints = ("hidden", "batch_size", "replay_capacity", "target_sync_steps", "updates_per_step")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (0 < self.learning_rate < 1):
            raise ValueError(f"learning_rate must lie in (0, 1), got {self.learning_rate}")
        if not (0 <= self.gamma <= 1):
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not (0 <= self.epsilon_end <= self.epsilon_start <= 1):
            raise ValueError("need 0 <= epsilon_end <= epsilon_start <= 1")
        if not (0 < self.epsilon_decay_fraction <= 1):
            raise ValueError(f"epsilon_decay_fraction must lie in (0, 1], got {self.epsilon_decay_fraction}")
        if not (isinstance(self.grad_clip, (int, float)) and math.isfinite(self.grad_clip) and self.grad_clip > 0):
            # a negative clip reverses every gradient step (training climbs the loss), 0 freezes learning
            raise ValueError(f"grad_clip (the gradient-norm bound) must be a finite number > 0, got {self.grad_clip!r}")

    def epsilon(self, episode: int, total_episodes: int) -> float:
        """Linear decay from epsilon_start to epsilon_end over the first decay fraction of the episodes."""
        horizon = max(1.0, self.epsilon_decay_fraction * total_episodes)
        progress = min(1.0, episode / horizon)
        return self.epsilon_start + progress * (self.epsilon_end - self.epsilon_start)


class QNetwork(nn.Module):
    """state [B, 64] -> Q-values [B, n_actions]: two hidden ReLU layers, then branching heads.

    With ``axes`` (the grid sizes of a factored action space, edge-major as ``ActionSpace`` indexes it)
    the Q-value of action (i, j, k) is ``V + A_0[i] + A_1[j] + A_2[k] + J[(i, j, k)]``: a state value, one
    mean-centred advantage per axis, and a joint term whose head starts at zero. Most of an action's effect
    on latency and accuracy is a sum of what its levels do, so every transition teaches the levels it used
    on all the actions that share them; the joint term learns the interactions on top. Without ``axes`` it
    is a plain ``n_actions``-way head.
    """

    def __init__(
        self, n_actions: int, hidden: int = 128, state_dim: int = STATE_DIM, axes: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        if axes is not None and math.prod(axes) != n_actions:
            raise ValueError(f"action axes {axes} do not multiply to {n_actions} actions")
        self.trunk = nn.Sequential(
            nn.Linear(state_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )
        self.joint = nn.Linear(hidden, n_actions)
        self.axes = tuple(int(a) for a in axes) if axes is not None else None
        if self.axes is not None:
            nn.init.zeros_(self.joint.weight)
            nn.init.zeros_(self.joint.bias)
            self.value = nn.Linear(hidden, 1)
            self.branches = nn.ModuleList(nn.Linear(hidden, size) for size in self.axes)
            grid = np.indices(self.axes).reshape(len(self.axes), -1)  # level of each axis, per action index
            for axis, levels in enumerate(grid):
                self.register_buffer(f"levels_{axis}", torch.from_numpy(levels.astype(np.int64)), persistent=False)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        features = self.trunk(state)
        q = self.joint(features)
        if self.axes is None:
            return q
        q = q + self.value(features)
        for axis, branch in enumerate(self.branches):
            advantage = branch(features)
            advantage = advantage - advantage.mean(dim=1, keepdim=True)
            q = q + advantage[:, getattr(self, f"levels_{axis}")]
        return q


class QEnsemble(nn.Module):
    """The mean Q-values of several Q-networks (checkpoints of one training run that score alike)."""

    def __init__(self, members: list[QNetwork]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 Q-networks, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(state) for member in self.members]).mean(dim=0)


class ReplayBuffer:
    """Fixed-capacity ring buffer of (state, action, reward, next_state, done, next_allowed) transitions.

    ``next_allowed`` masks the actions the next state may bootstrap from (all of them unless a
    ``BudgetGuard`` restricts them)."""

    def __init__(self, capacity: int, state_dim: int = STATE_DIM, seed: int = 0, n_actions: int = 1) -> None:
        self.capacity = capacity
        self.next_allowed = np.ones((capacity, n_actions), np.bool_)
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, np.float32)
        self.size = 0
        self._cursor = 0
        self._rng = np.random.default_rng(seed)

    def add(self, state, action: int, reward: float, next_state, done: bool, next_allowed=None) -> None:
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        i = self._cursor
        self.next_allowed[i] = True if next_allowed is None else next_allowed
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.dones[i] = next_state, float(done)
        self._cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int):
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self._rng.integers(0, self.size, size=batch_size)
        return (
            self.states[idx], self.actions[idx], self.rewards[idx], self.next_states[idx], self.dones[idx],
            self.next_allowed[idx],
        )

    def __len__(self) -> int:
        return self.size


def _load_failure(error: Exception) -> str:
    """What torch's refusal of a file means here, without its advice to unpickle the file unrestricted (which would
    run whatever code the file holds)."""
    text = str(error).strip()
    if text.startswith("Weights only load failed"):
        return ("it holds Python objects beyond tensors and plain containers, which a controller checkpoint never "
                "does and DSTE does not unpickle")
    first_line = text.splitlines()[0] if text else ""
    return f"truncated or not a torch file ({type(error).__name__}: {first_line})"


class DQNAgent:
    """The controller's learner and policy. ``act(state)`` is greedy; ``act(state, epsilon)`` explores."""

    def __init__(
        self,
        action_space: ActionSpace,
        config: DQNConfig | None = None,
        normalizer: StateNormalizer | None = None,
    ) -> None:
        self.action_space = action_space
        self.config = config or DQNConfig()
        self.normalizer = normalizer or StateNormalizer()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.config.seed)
        try:
            self.q, self.target = self._new_network(), self._new_network()
        finally:
            torch.random.set_rng_state(generator_state)
        self.target.load_state_dict(self.q.state_dict())
        self.optimizer = self._new_optimizer()
        self.replay = ReplayBuffer(self.config.replay_capacity, seed=self.config.seed + 1, n_actions=len(action_space))
        self._explore_rng = np.random.default_rng(self.config.seed + 2)
        self.learn_steps = 0
        self.losses: list[float] = []

    def _new_network(self) -> QNetwork:
        return QNetwork(len(self.action_space), self.config.hidden, axes=self.action_space.axes())

    def _new_optimizer(self) -> torch.optim.Optimizer:
        # foreach: the multi-tensor step, the same arithmetic per element as the default per-parameter loop (the
        # same weights bit for bit) in fewer calls; on CPU torch takes the loop unless asked.
        return torch.optim.Adam(self.q.parameters(), lr=self.config.learning_rate, foreach=True)

    @property
    def ensemble_size(self) -> int:
        """How many Q-networks the agent acts on (1 unless ``use_checkpoints`` gave it several)."""
        return len(self.q.members) if isinstance(self.q, QEnsemble) else 1

    def use_checkpoints(self, state_dicts: list[dict]) -> None:
        """Act on these Q-network weights: one becomes the network, several a ``QEnsemble`` of their mean.

        An agent with an ensemble acts and saves but no longer learns (its optimizer tracked one network); one set of
        weights is loaded into the network the optimizer tracks, so such an agent can go on learning.
        """
        if len(state_dicts) == 0:
            raise ValueError("use_checkpoints needs at least one set of Q-network weights")
        if len(state_dicts) == 1:
            if isinstance(self.q, QEnsemble):  # back from an ensemble: a network and an optimizer of its own
                self.q = self._new_network()
                self.optimizer = self._new_optimizer()
            self.q.load_state_dict(state_dicts[0])
        else:
            networks = []
            for weights in state_dicts:
                network = self._new_network()
                network.load_state_dict(weights)
                networks.append(network)
            self.q = QEnsemble(networks)
        self.target = copy.deepcopy(self.q)

    # -- acting ---------------------------------------------------------------------------------
    def q_values(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (STATE_DIM,):
            raise ValueError(f"state must have shape ({STATE_DIM},), got {state.shape}")
        if not np.isfinite(state).all():
            raise ValueError("state contains NaN or Inf")
        with torch.no_grad():
            return self.q(torch.from_numpy(self.normalizer(state))[None])[0].numpy()

    def act(self, state: np.ndarray, epsilon: float = 0.0, allowed: np.ndarray | None = None) -> int:
        """Greedy (or, with probability ``epsilon``, uniformly random) over the actions ``allowed`` marks (all if
        None)."""
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        allowed = self._check_mask(allowed)
        # Both draws every call, so the random stream does not depend on epsilon's value nor on the mask.
        coin, pick = self._explore_rng.random(), self._explore_rng.random()
        if coin < epsilon:
            candidates = np.arange(len(self.action_space)) if allowed is None else np.flatnonzero(allowed)
            return int(candidates[min(int(pick * candidates.size), candidates.size - 1)])
        q = self.q_values(state)
        return int(np.argmax(q if allowed is None else np.where(allowed, q, -np.inf)))

    def _check_mask(self, allowed):
        if allowed is None:
            return None
        allowed = np.asarray(allowed)
        if allowed.dtype != np.bool_ or allowed.shape != (len(self.action_space),):
            raise ValueError(f"allowed must be a bool array of shape ({len(self.action_space)},), got "
                             f"{allowed.dtype} {allowed.shape}")
        if not allowed.any():
            raise ValueError("allowed must mark at least one action")
        return allowed

    # -- learning -------------------------------------------------------------------------------
    def remember(self, state, action: int, reward: float, next_state, done: bool, next_allowed=None) -> None:
        """Store a transition; ``next_allowed`` masks the actions the next state may bootstrap from."""
        next_allowed = self._check_mask(next_allowed)
        self.action_space[action]  # refuses a non-int or out-of-grid index now, not at learn() as a torch error
        self.replay.add(self.normalizer(state), action, reward, self.normalizer(next_state), done, next_allowed)

    @torch.no_grad()
    def targets(self, rewards, next_states, dones, next_allowed) -> torch.Tensor:
        """Double-DQN targets: the online net picks the best allowed next action, the target net values it."""
        next_q = self.q(next_states).masked_fill(~next_allowed, -torch.inf)
        best_next = next_q.argmax(dim=1, keepdim=True)
        next_value = self.target(next_states).gather(1, best_next)[:, 0]
        return rewards + self.config.gamma * (1.0 - dones) * next_value

    def learn(self) -> float | None:
        """One or more gradient steps on replayed transitions; returns the last loss (None before warm-up)."""
        cfg = self.config
        if isinstance(self.q, QEnsemble):
            raise RuntimeError("an agent acting on a checkpoint ensemble does not learn; train a new DQNAgent")
        if len(self.replay) < cfg.learn_starts:
            return None
        loss_value = None
        for _ in range(cfg.updates_per_step):
            batch = (torch.from_numpy(a) for a in self.replay.sample(cfg.batch_size))
            states, actions, rewards, next_states, dones, next_allowed = batch
            q_taken = self.q(states).gather(1, actions[:, None])[:, 0]
            target = self.targets(rewards, next_states, dones, next_allowed)
            loss = nn.functional.smooth_l1_loss(q_taken, target)
            self.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.q.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.learn_steps += 1
            if self.learn_steps % cfg.target_sync_steps == 0:
                self.target.load_state_dict(self.q.state_dict())
            loss_value = float(loss.detach())
        self.losses.append(loss_value)
        return loss_value

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (``dste.format.io.atomic_write``): a failed save keeps the old file."""
        from dste.format.io import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "state_dim": STATE_DIM,
            "config": asdict(self.config),
            "action_space": self.action_space.to_dict(),
            "normalizer_mean": torch.from_numpy(self.normalizer.mean.copy()),
            "normalizer_std": torch.from_numpy(self.normalizer.std.copy()),
            "ensemble_size": self.ensemble_size,
            "q_network": self.q.state_dict(),
        }
        payload["sha256"] = payload_digest(payload)
        atomic_write(path, lambda handle: torch.save(payload, handle))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DQNAgent":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"controller checkpoint {path} is a directory, not a file" if path.is_dir()
                                  else f"controller checkpoint {path} does not exist")
        if path.stat().st_size == 0:
            raise CheckpointError(f"controller checkpoint {path} is empty (0 bytes): an interrupted save?")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for truncated or foreign files
            reason = _load_failure(error)
            raise CheckpointError(f"{path} is not a readable DSTE controller checkpoint: {reason}") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a DSTE controller checkpoint (format tag missing or wrong)")
        if type(payload.get("version")) is not int or payload.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint version {payload.get('version')!r}; this DSTE reads version {CHECKPOINT_VERSION}"
            )
        stored, computed = payload.get("sha256"), _digest_or_none(payload)
        # both None (no stored digest, a payload that cannot be hashed) compared equal and let the payload through
        if not isinstance(stored, str) or computed is None or stored != computed:
            raise CheckpointError(
                f"{path} failed its SHA-256 check: its weights, configuration or action space were altered or corrupted"
            )
        if payload.get("state_dim") != STATE_DIM:
            raise CheckpointError(f"{path} was trained on {payload.get('state_dim')}-dim states, expected {STATE_DIM}")
        try:
            known = {f.name for f in fields(DQNConfig)}
            config = DQNConfig(**{k: v for k, v in payload["config"].items() if k in known})
            action_space = ActionSpace.from_dict(payload["action_space"])
            normalizer = StateNormalizer(payload["normalizer_mean"].numpy(), payload["normalizer_std"].numpy())
            agent = cls(action_space, config, normalizer)
            size = payload.get("ensemble_size")
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"ensemble_size must be a positive int, got {size!r}")
            if size > 1:  # an ensemble of the right size first, so the strict load below checks every key
                agent.use_checkpoints([agent.q.state_dict()] * size)
            agent.q.load_state_dict(payload["q_network"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path} has a malformed controller payload: {error}") from None
        if not all(torch.isfinite(t).all() for t in agent.q.state_dict().values()):
            raise CheckpointError(f"{path} holds non-finite Q-network weights")
        agent.target.load_state_dict(agent.q.state_dict())
        return agent


def payload_digest(payload: dict) -> str:
    """SHA-256 of everything a loaded agent depends on: tags, configuration, action space, normalizer, weights.

    Plain values are hashed as canonical JSON; tensors by name, dtype, shape and bytes.
    """
    digest = hashlib.sha256()
    plain = {key: payload[key] for key in ("format", "version", "state_dim", "config", "action_space", "ensemble_size")}
    digest.update(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    tensors = {"normalizer_mean": payload["normalizer_mean"], "normalizer_std": payload["normalizer_std"]}
    tensors.update({f"q_network.{name}": value for name, value in payload["q_network"].items()})
    for name in sorted(tensors):
        value = tensors[name].detach().contiguous()
        digest.update(f"|{name}|{value.dtype}|{tuple(value.shape)}|".encode("utf-8"))
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def _digest_or_none(payload: dict):
    try:
        return payload_digest(payload)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError):
        return None  # a malformed payload cannot match any stored digest
