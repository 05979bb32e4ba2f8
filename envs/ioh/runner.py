"""Run a bbopt solver on an ioh problem within its budget, from the solver's fixed-problem preset.

`preset_for` adapts the solver's ``"problem"`` preset (`bbopt.presets`) to the problem, the
same way for every solver: on a real box (BBOB's [-5, 5]^d) the initial step size is 2 (a fifth
of the width; pycma gets the same in the benchmark) and each run starts at a uniform point of
[-4, 4]^d; on bits the noise is `bbopt.noise.Bernoulli` on logits starting at 0 (every bit a
coin flip), stepped by SGD with lr 20 (one good sample saturates a logit; the 1/d margin then
flips bits like the (1+1)-EA's standard mutation), 16 samples, no restarts. `solve` spends the
budget exactly with `bbopt.minimize` (and the preset's restarts).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

import bbopt
from bbopt.envs.ioh.problems import Objective
from bbopt.noise import Bernoulli
from bbopt.presets import Preset, log_loss

__all__ = ["BOX_SIGMA", "IOHAlgorithm", "preset_for", "solve"]

BOX_SIGMA = 2.0  # initial step size on a real box of width 10
START = 4.0  # runs start uniformly in [-START, START]^d


def _bernoulli(sigma: float) -> Bernoulli:
    return Bernoulli()


def preset_for(name: str, objective: Objective) -> Preset:
    """Solver ``name``'s ``"problem"`` preset adapted to ``objective`` (real box or bits)."""
    preset = bbopt.presets.get(name, "problem")
    if objective.binary:  # large steps saturate the logits: the 1/d margin then mutates like a (1+lambda)-EA
        return preset.replace(noise=_bernoulli, sigma=1.0, restarts=None, log_loss=False, optimizer=torch.optim.SGD,
                              lr=20.0, samples=16)  # fmt: skip
    return preset.replace(sigma=BOX_SIGMA)


def _start(dimension: int, binary: bool, seed: int) -> torch.Tensor:
    if binary:
        return torch.zeros(dimension)
    return torch.from_numpy(np.random.default_rng(seed).uniform(-START, START, dimension)).float()


def solve(objective: Objective, name: str = "ovlr", seed: int = 0, *, preset: Preset | None = None) -> float:
    """Optimize ``objective`` with solver ``name`` until its budget is spent; the best precision.

    ``preset`` replaces `preset_for`'s (e.g. a variant without restarts)."""
    if objective.budget is None:
        raise ValueError("Invalid objective: solve() needs an objective with a budget")
    preset = preset if preset is not None else preset_for(name, objective)
    dimension = objective.dimension
    strategy = preset.strategy(name, functools.partial(_start, dimension, objective.binary), dimension=dimension,
                               seed=seed)  # fmt: skip
    if preset.log_loss and objective.optimum is not None:  # log precision, penalty in log units
        function, transform = (objective, log_loss) if objective.binary else (objective.log_loss, None)
    else:
        function, transform = objective, None
    bbopt.minimize(function, strategy, budget=objective.remaining, transform=transform, progress=False)
    return objective.best


class IOHAlgorithm:
    """A bbopt solver as an ``ioh.Experiment`` algorithm: ``IOHAlgorithm("ovlr")(problem)``.

    Each call optimizes the problem with fresh solvers for ``budget_per_dimension * d``
    evaluations; ``seed`` advances by one per call, so repetitions differ but the experiment
    is reproducible. Hyper-parameters are attributes, so ioh can log them as run attributes.
    """

    def __init__(self, name: str = "ovlr", *, budget_per_dimension: int = 1000, seed: int = 0,
                 preset: Preset | None = None):  # fmt: skip
        if preset is None:
            bbopt.presets.get(name, "problem")  # refuses an unknown name
        bbopt.checks.check_int(budget_per_dimension, "budget_per_dimension", minimum=1)
        self.name, self.preset = name, preset
        self.budget_per_dimension = budget_per_dimension
        self.initial_seed = self.seed = seed
        shown = preset or bbopt.presets.get(name, "problem")
        self.lr, self.sigma0 = shown.lr, BOX_SIGMA  # logged as run attributes

    def __call__(self, problem) -> None:
        objective = Objective(problem, budget=self.budget_per_dimension * problem.meta_data.n_variables)
        solve(objective, self.name, self.seed, preset=self.preset)
        self.seed += 1

    def reset(self) -> None:
        """Called by ioh.Experiment between problems; seeds keep advancing."""
