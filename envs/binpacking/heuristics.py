"""Classic baselines: first fit decreasing (FFD) and best fit decreasing (BFD).

Both sort the items by decreasing size (ties: lower index first) and place them with first or
best fit; they are the `first_fit` / `best_fit` decoders applied to the sizes as priorities.
FFD uses at most 11/9 OPT + 6/9 bins (Dosa 2007).
"""

from __future__ import annotations

from bbopt.envs.binpacking.decoders import Packing, decode
from bbopt.envs.binpacking.instance import Instance

__all__ = ["HEURISTICS", "best_fit_decreasing", "first_fit_decreasing"]


def first_fit_decreasing(instance: Instance) -> Packing:
    return decode(instance, instance.sizes, "first_fit")


def best_fit_decreasing(instance: Instance) -> Packing:
    return decode(instance, instance.sizes, "best_fit")


HEURISTICS = {"ffd": first_fit_decreasing, "bfd": best_fit_decreasing}
