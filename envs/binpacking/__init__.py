"""Bin packing for bbopt (installed as ``bbopt.envs.binpacking``): instances and generators,
vectorized priority decoders, FFD/BFD, per-instance search, Gymnasium envs
``bbopt/BinPacking-v0`` and ``bbopt/BinPackingOnline-v0``."""

from bbopt.envs.binpacking.decoders import DECODERS, Packing, decode, fill_tiebreak, max_bins, packing_loss
from bbopt.envs.binpacking.env import FAMILIES, BinPackingEnv, BinPackingOnlineEnv, make_instance
from bbopt.envs.binpacking.heuristics import HEURISTICS, best_fit_decreasing, first_fit_decreasing
from bbopt.envs.binpacking.instance import (
    Instance,
    lower_bound_l1,
    lower_bound_l2,
    read_bpplib,
    read_instances,
    read_optima,
    triplet,
    uniform,
    write_bpplib,
)
from bbopt.envs.binpacking.search import SearchResult, preset_for, search

__all__ = [
    "DECODERS",
    "FAMILIES",
    "HEURISTICS",
    "BinPackingEnv",
    "BinPackingOnlineEnv",
    "Instance",
    "Packing",
    "SearchResult",
    "best_fit_decreasing",
    "decode",
    "fill_tiebreak",
    "first_fit_decreasing",
    "lower_bound_l1",
    "lower_bound_l2",
    "make_instance",
    "max_bins",
    "packing_loss",
    "preset_for",
    "read_bpplib",
    "read_instances",
    "read_optima",
    "search",
    "triplet",
    "uniform",
    "write_bpplib",
]
