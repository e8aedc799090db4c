"""The DQN controller: per snapshot and per layer, choose an edge sparsity level, an input-channel sparsity
level and an FP16 threshold.

    M_{n+1} = f(M_n, G_{n+1}, A_n)

``state`` builds the 64-dim state, ``actions`` the discrete grid, ``reward`` the accuracy-latency trade-off,
``dqn`` the learner, ``guard`` the latency-budget action mask, ``projection`` a static plan fitted to each
snapshot's budget (the controller's conservative fallback), ``evidence`` the standard errors its moves are judged by, ``crossfit`` how optimistic the best static plan in hindsight is, ``env`` the environment protocol, ``trainer`` the
training loop, ``fit`` the whole controller ``dste run`` fits (``fit_controller``) and ``baselines`` the static/random/greedy policies, the best static plan within every budget and the shared
evaluation harness.
"""

from dste.controller.actions import Action, ActionSpace
from dste.controller.baselines import (
    DQNPolicy,
    Policy,
    PolicyResult,
    RandomPolicy,
    StaticPolicy,
    feasible_static_search,
    fits_every_budget,
    greedy_search,
    recency_weights,
    run_policy,
    static_baselines,
)
from dste.controller.dqn import CheckpointError, DQNAgent, DQNConfig
from dste.controller.guard import BudgetGuard
from dste.controller.env import FP32_ACTION, CompressionEnv, EpisodeOutcome, LayerReport
from dste.controller.reward import RewardConfig
from dste.controller.projection import BudgetProjectedPlan, one_layer_trials, plan_node_errors, plan_values
from dste.controller.crossfit import CrossFit, cross_fitted_static
from dste.controller.oracle import FALLBACK_MARGINS, OracleChoice, calibrate_margin, dominates, pareto_front, snapshot_oracle, snapshot_oracles, static_sweep
from dste.controller.schedule import BudgetScheduleEnv, fixed_budget, int8_multiple_budget, microsecond_budget
from dste.controller.state import FEATURE_NAMES, STATE_DIM, MaskSummary, StateNormalizer
from dste.controller.trainer import TrainConfig, TrainResult, train_controller
from dste.controller.fit import FittedController, fit_controller

__all__ = [
    "Action", "ActionSpace", "BudgetGuard", "BudgetProjectedPlan", "BudgetScheduleEnv", "FALLBACK_MARGINS", "fixed_budget", "int8_multiple_budget", "microsecond_budget", "OracleChoice", "calibrate_margin",
    "dominates", "pareto_front", "snapshot_oracle", "snapshot_oracles", "static_sweep", "CheckpointError", "CompressionEnv", "DQNAgent", "DQNConfig", "DQNPolicy",
    "EpisodeOutcome", "FEATURE_NAMES", "FP32_ACTION", "LayerReport", "MaskSummary", "Policy", "PolicyResult",
    "RandomPolicy", "RewardConfig", "STATE_DIM", "StateNormalizer", "StaticPolicy", "TrainConfig",
    "TrainResult", "CrossFit", "cross_fitted_static", "feasible_static_search", "fits_every_budget", "greedy_search", "recency_weights", "run_policy", "static_baselines", "train_controller", "one_layer_trials", "plan_node_errors", "plan_values",
    "FittedController", "fit_controller",
]
