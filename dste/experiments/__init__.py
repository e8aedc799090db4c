"""The main job (``dste run``) and the controller's environment on the real GNN layers."""

from dste.experiments.gnn_env import GNNCompressionEnv
from dste.experiments.pipeline import RunConfig, format_table, run

__all__ = ["GNNCompressionEnv", "RunConfig", "format_table", "run"]
