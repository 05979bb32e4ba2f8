"""Policies: plain ``torch.nn.Module``s whose output a solver perturbs (installed as ``bbopt.policies``)."""

from bbopt.policies.chunking import ChunkMLP
from bbopt.policies.mlp import MLP
from bbopt.policies.set_network import SetNetwork
from bbopt.policies.spiking import SpikingMLP
from bbopt.policies.vector import FixedInput, LearnedVector

__all__ = ["MLP", "ChunkMLP", "FixedInput", "LearnedVector", "SetNetwork", "SpikingMLP"]
