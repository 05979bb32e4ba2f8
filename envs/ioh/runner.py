"""Run a bbopt solver on an ioh problem within a budget; the default settings per solver.

`SolverSettings` holds the one setting per solver used for every function of a suite (CLI,
benchmark, `IOHAlgorithm`). `optimize` spends the budget exactly: full ask/tell batches, then
the first candidates of one more batch for the remainder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

import bbopt
from bbopt.envs.ioh.problems import Objective
from bbopt.policies import LearnedVector
from bbopt.schedules import LRFollowsSigma

__all__ = ["DEFAULT_SETTINGS", "IOHAlgorithm", "SolverSettings", "build", "optimize"]


@dataclass(frozen=True)
class SolverSettings:
    """How a solver is set up on a problem of dimension d (one setting for all functions)."""

    name: str
    lr: float
    sigma: float  # initial sigma, in the problem's units (BBOB domain [-5, 5])
    per_dimension: bool = False  # one sigma per coordinate (diagonal adaptation)
    sigma_lr: float = 0.1
    sigma_floor: float = 1e-12
    follow_sigma: bool = True  # lr shrinks with sigma (bbopt.schedules.LRFollowsSigma)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's; a short second-moment memory suits
    # losses that fall by orders of magnitude within a run
    sigma_betas: tuple[float, float] = (0.9, 0.999)  # the same for the learned sigma's Adam
    restarts: bool = False  # IPOP: restart a stagnating run with twice the samples
    patience: int = 50  # updates without a new best (plus 30 d / n) before a restart
    log_loss: bool = False  # tell log(loss + 1e-300) where the optimum is known (loss >= 0): same minimizer
    extra: dict = field(default_factory=dict)

    def samples(self, dimension: int, restart: int = 0) -> int:
        """CMA-ES's population size 4 + 3 ln d, rounded up to even (antithetic pairs),
        doubled at every restart."""
        n = (4 + int(3 * math.log(dimension))) * 2**restart
        return n + n % 2


# Tuned on BBOB f1-f24, instance 1 only (d = 5, checked at d = 20); instances 2-5 unseen.
# Adam with a short second-moment memory for the policy and for log sigma (the losses fall by
# orders of magnitude within a run), a per-dimension learned sigma, a step that shrinks with
# sigma; OVLR tells log(precision) (same minimizer; its raw-loss weights otherwise span 12
# orders of magnitude), ES and CEM restart with doubled samples when a run stagnates (IPOP).
_ADAPTIVE = {"sigma": 2.0, "sigma_lr": 0.1, "per_dimension": True, "betas": (0.9, 0.9), "sigma_betas": (0.5, 0.9)}
DEFAULT_SETTINGS = {
    "ovlr": SolverSettings("ovlr", lr=1.0, log_loss=True, **_ADAPTIVE),
    "es": SolverSettings("es", lr=0.5, restarts=True, patience=100, **_ADAPTIVE),
    "cem": SolverSettings(
        "cem", lr=1.0, sigma=2.0, follow_sigma=False, restarts=True, extra={"elite_fraction": 0.5, "sigma_rate": 0.5}
    ),
}


@dataclass
class Setup:
    solver: bbopt.Solver
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    log_loss: bool = False


def build(settings: SolverSettings, objective: Objective, seed: int, restart: int = 0) -> Setup:
    """Policy (a learned vector), optimizer and solver for ``objective``.

    Real problems start at a uniform point of [-4, 4]^d; bit problems at 0 (every bit a coin
    flip under the noise).
    """
    generator = torch.Generator().manual_seed(seed)
    dimension = objective.dimension
    start = torch.zeros(dimension) if objective.binary else torch.rand(dimension, generator=generator) * 8 - 4
    policy = LearnedVector(dimension, init=start)
    samples = settings.samples(dimension, restart)
    if settings.name == "cem":
        optimizer = torch.optim.SGD(policy.parameters(), lr=settings.lr)
        solver = bbopt.CEM(policy, optimizer, sigma=settings.sigma, samples=samples, seed=seed,
                           sigma_floor=settings.sigma_floor, **settings.extra)  # fmt: skip
    else:
        optimizer = torch.optim.Adam(policy.parameters(), lr=settings.lr, betas=settings.betas)
        initial = [settings.sigma] * dimension if settings.per_dimension else settings.sigma
        sigma = bbopt.sigma.Learned(initial, lr=settings.sigma_lr, floor=settings.sigma_floor,
                                    betas=settings.sigma_betas)  # fmt: skip
        solver = bbopt.make_solver(settings.name, policy, optimizer, sigma=sigma, samples=samples, seed=seed,
                                   **settings.extra)  # fmt: skip
    scheduler = LRFollowsSigma(optimizer, solver) if settings.follow_sigma else None
    return Setup(solver, scheduler, settings.log_loss)


def optimize(objective: Objective, setup: Setup, *, patience: int | None = None) -> float:
    """Ask/tell until ``objective.budget`` is spent exactly; returns the best precision.

    With ``patience``, stop early (returning) once ``patience`` updates in a row brought no
    new best loss of this run; the budget may then be left for a restart.
    """
    if objective.budget is None:
        raise ValueError("Invalid objective: optimize() needs an objective with a budget")
    solver = setup.solver
    best, stalled = math.inf, 0
    log_loss = setup.log_loss and objective.optimum is not None  # losses >= 0 only with a known optimum
    while objective.remaining >= solver.samples:
        losses = objective(solver.ask())
        solver.tell(torch.log(losses + 1e-300) if log_loss else losses)
        if setup.scheduler is not None:
            setup.scheduler.step()
        stalled = 0 if float(losses.min()) < best else stalled + 1
        best = min(best, float(losses.min()))
        if patience is not None and stalled >= patience:
            return objective.best
    if objective.remaining > 0:  # the rest of the budget: part of one more batch, no update
        objective(solver.ask()[: objective.remaining])
    return objective.best


def solve(objective: Objective, settings: SolverSettings, seed: int) -> float:
    """`optimize` with ``settings``; with ``settings.restarts``, IPOP restarts: a run that
    finds no new best for ``50 + 30 d / n`` updates is restarted from a fresh random start with
    twice the samples, until the budget is spent (``50`` is ``settings.patience``)."""
    restart = 0
    while objective.remaining > 0:
        setup = build(settings, objective, seed + 7919 * restart, restart)
        n = setup.solver.samples
        patience = settings.patience + int(30 * objective.dimension / n) if settings.restarts else None
        if settings.restarts and objective.remaining < 2 * n:
            patience = None  # too little left for another restart: spend it here
        optimize(objective, setup, patience=patience)
        restart += 1
    return objective.best


class IOHAlgorithm:
    """A bbopt solver as an ``ioh.Experiment`` algorithm: ``IOHAlgorithm("ovlr")(problem)``.

    Each call optimizes the problem with a fresh solver for ``budget_per_dimension * d``
    evaluations; ``seed`` advances by one per call, so repetitions differ but the experiment
    is reproducible. Hyper-parameters are attributes, so ioh can log them as run attributes.
    """

    def __init__(self, name: str = "ovlr", *, budget_per_dimension: int = 1000, seed: int = 0,
                 settings: SolverSettings | None = None):  # fmt: skip
        if name not in DEFAULT_SETTINGS and settings is None:
            raise ValueError(f"Invalid name: {name!r} (expected one of {sorted(DEFAULT_SETTINGS)} or settings=)")
        if (
            isinstance(budget_per_dimension, bool)
            or not isinstance(budget_per_dimension, int)
            or budget_per_dimension < 1
        ):
            raise ValueError(f"Invalid budget_per_dimension: {budget_per_dimension!r} (expected an int >= 1)")
        self.settings = settings or DEFAULT_SETTINGS[name]
        self.budget_per_dimension = budget_per_dimension
        self.initial_seed = self.seed = seed
        self.lr, self.sigma0 = self.settings.lr, self.settings.sigma  # logged as run attributes

    def __call__(self, problem) -> None:
        objective = Objective(problem, budget=self.budget_per_dimension * problem.meta_data.n_variables)
        solve(objective, self.settings, self.seed)
        self.seed += 1

    def reset(self) -> None:
        """Called by ioh.Experiment between problems; seeds keep advancing."""
