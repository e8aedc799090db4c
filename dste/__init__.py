"""DSTE: Dynamic Sparse Tensor Encoding for GNN inference on AWS NeuronCores.

Data flows one way: encode (``dste.format``) -> kernel (``dste.kernels``) ->
op (``dste.bindings``) -> layer (``dste.gnn``) -> controller (``dste.controller``).
"""

__version__ = "0.1.0"
