"""Per-instance search: a bbopt solver on a learned priority vector, one decode per candidate.

`search` spends at most ``budget`` decodes on one instance and stops early once a packing
reaches the instance's `best_bound` (its optimum, or the lower bound when no optimum is
known): no packing can do better. ``solver="random"`` samples the same Gaussian priorities
around the start without learning, the control that tells what the learning adds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

import bbopt
from bbopt.envs.binpacking.decoders import decode
from bbopt.envs.binpacking.instance import Instance
from bbopt.presets import Preset

__all__ = ["SIGMA", "SearchResult", "preset_for", "search"]


SIGMA = 1.0  # noise on the priorities; the start is all zeros, so every order is equally likely
SAMPLES = 50  # candidates per update (and per draw of the random control)


def preset_for(solver: str) -> Preset:
    """Solver ``solver``'s fixed-problem preset (`bbopt.presets`) adapted to priorities, the same
    way for every solver: a fixed sigma of 1 (the scaled model), Adam with lr 0.1, 50 samples, no
    restarts, no log transform (a packing's loss is a bin count, never 0). The decoders read only
    the order of the priorities, so a learned covariance buys nothing here and costs O(d^2) per
    candidate: on five triplet-120 tuning instances (seeds 1000-1004, which no benchmark uses) the
    full-covariance preset solved no more of them (OVLR 4/5, ES 3/5 against 4/5 and 5/5) and ran
    about ten times slower."""
    return bbopt.presets.get(solver, "problem").replace(sigma=SIGMA, noise=None, optimizer=torch.optim.Adam, lr=0.1,
                                                       samples=SAMPLES, restarts=None, log_loss=False)  # fmt: skip


@dataclass
class SearchResult:
    instance: str
    solver: str
    bins: int
    lower_bound: int
    optimum: int | None
    success: bool  # bins == optimum (or == the lower bound when no optimum is known)
    evaluations: int  # decodes spent
    evaluations_to_success: int | None
    seconds: float
    bin_of: np.ndarray = field(repr=False)  # the best packing found

    @classmethod
    def single(cls, instance: Instance, solver: str, packing, seconds: float) -> SearchResult:
        """The result of one decode (a heuristic, a network's zero-shot packing)."""
        bins = int(packing.bins[0])
        success = bins <= instance.best_bound
        return cls(instance.name, solver, bins, instance.lower_bound, instance.optimum, success, 1,
                   1 if success else None, seconds, packing.bin_of[0])  # fmt: skip

    def to_dict(self) -> dict:
        row = {k: v for k, v in vars(self).items() if k != "bin_of"}
        row["bin_of"] = self.bin_of.tolist()
        return row


def search(instance: Instance, solver: str = "ovlr", *, budget: int = 20_000, seed: int = 0,
           decoder: str = "completion", init=None, preset: Preset | None = None,
           stop_at_bound: bool = True) -> SearchResult:  # fmt: skip
    """Search priorities for ``instance`` with ``solver`` (any registered solver with a
    fixed-problem preset, or "random") within ``budget`` decodes, through `bbopt.minimize` with
    the solver's `preset_for` (or ``preset``), its restarts included.

    ``init``: starting priorities ``[items]`` (default zeros), e.g. a set network's output
    for a warm start; every run starts there. Returns the best packing found and when it was
    first reached; with ``stop_at_bound``, stops there (no packing can do better).
    """
    bbopt.checks.check_int(budget, "budget", minimum=1)
    if solver != "random" and preset is None:
        preset = preset_for(solver)
    start = torch.zeros(instance.items) if init is None else torch.as_tensor(init, dtype=torch.float32).flatten()
    if start.numel() != instance.items or not torch.isfinite(start).all():
        raise ValueError(f"Invalid init: expected {instance.items} finite priorities, got {list(start.shape)}")
    began = time.perf_counter()
    found = {"loss": math.inf, "bins": None, "bin_of": None, "hit": None, "used": 0}

    def objective(candidates: torch.Tensor) -> torch.Tensor:
        packing = decode(instance, candidates, decoder)
        index = int(np.argmin(packing.loss))
        if packing.loss[index] < found["loss"]:
            found.update(loss=float(packing.loss[index]), bins=int(packing.bins[index]), bin_of=packing.bin_of[index])
        if found["hit"] is None and found["bins"] <= instance.best_bound:
            found["hit"] = found["used"] + int(np.flatnonzero(packing.bins <= instance.best_bound)[0]) + 1
        found["used"] += len(candidates)
        return torch.as_tensor(packing.loss, dtype=torch.float64)

    def reached(step: int, stats: dict) -> bool:
        return stop_at_bound and found["hit"] is not None

    if solver == "random":  # the control: the same noise around the start, no learning
        generator = torch.Generator().manual_seed(seed)
        while found["used"] < budget and not reached(0, {}):
            take = min(SAMPLES, budget - found["used"])
            objective(start + SIGMA * torch.randn(take, instance.items, generator=generator))
        name = "random"
    else:
        strategy = preset.strategy(solver, lambda run_seed: start.clone(), dimension=instance.items, seed=seed)
        bbopt.minimize(objective, strategy, budget=budget, callback=reached, progress=False)
        name = solver
    success = found["bins"] <= instance.best_bound
    return SearchResult(instance.name, name, found["bins"], instance.lower_bound, instance.optimum, success,
                        found["used"], found["hit"], time.perf_counter() - began, found["bin_of"])  # fmt: skip
