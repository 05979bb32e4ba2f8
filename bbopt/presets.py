"""How each solver is set up for each use: a fixed problem, a batch of inputs, episodes.

Every solver file registers its presets beside its rule (``register_solver(name,
presets={...})``); the CLI, `bbopt.rollout.RunConfig`, the IOH, bin-packing and ALOHA runners,
the demo and the benchmarks all read them from here, so a new solver appears in each of them
with its own file. A caller adapts a preset to its problem with `Preset.replace` (e.g. the
initial step size in the problem's units, the same for every solver) and builds a solver:

    preset = bbopt.presets.get("ovlr", "problem").replace(sigma=2.0)
    solver = preset.build("ovlr", LearnedVector(d, init=x0), dimension=d, seed=0)

For a fixed problem `Preset.strategy` gives what `bbopt.minimize` runs: a solver, or a restart
strategy building one per run from a seeded start.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from bbopt.noise import Diagonal, FullCovariance, NoiseModel
from bbopt.registry import PRESETS, SOLVERS, canonical
from bbopt.restarts import Restarts, Run
from bbopt.sigma import CSA

__all__ = ["USES", "Preset", "cma_population", "diagonal", "full_covariance", "get", "log_loss", "names"]

USES = ("problem", "batch", "episodes")


def cma_population(dimension: int) -> int:
    """CMA-ES's default population ``4 + floor(3 ln d)``, rounded up to even (antithetic pairs)."""
    n = 4 + int(3 * math.log(dimension))
    return n + n % 2


def _full_covariance(sigma: float, *, rate: float, rank_one: bool) -> NoiseModel:
    return FullCovariance(CSA(sigma), rate=rate, rank_one=rank_one)


def full_covariance(*, rate: float = 1.0, rank_one: bool = True) -> Callable[[float], NoiseModel]:
    """A noise factory: ``sigma -> FullCovariance(CSA(sigma), rate=rate, rank_one=rank_one)``."""
    return functools.partial(_full_covariance, rate=rate, rank_one=rank_one)


def _diagonal(sigma: float, *, rate: float, rank_one: bool) -> NoiseModel:
    return Diagonal(CSA(sigma), rate=rate, rank_one=rank_one)


def diagonal(*, rate: float = 1.0, rank_one: bool = True) -> Callable[[float], NoiseModel]:
    """A noise factory: ``sigma -> Diagonal(CSA(sigma), rate=rate, rank_one=rank_one)`` (sep-CMA-ES's
    scheme: O(d) per candidate)."""
    return functools.partial(_diagonal, rate=rate, rank_one=rank_one)


def log_loss(losses) -> torch.Tensor:
    """``log(loss)`` for non-negative losses (a known optimum at 0), floored at 1e-300: the same
    minimizer, with weights that do not span the loss's orders of magnitude."""
    return torch.log(torch.as_tensor(losses, dtype=torch.float64).clamp_min(1e-300))


@dataclass(frozen=True)
class Preset:
    """How one solver is set up for one use.

    Attributes:
        optimizer, lr, optimizer_options: the policy's ``torch.optim`` optimizer.
        sigma: the initial step size, in the output's units (a caller sets its problem's).
        noise: ``sigma -> NoiseModel`` (None: the solver's default model with ``sigma``).
        samples: candidates per group, or ``d -> n`` (episodes: the population).
        restarts: a `bbopt.restarts.Restarts` class for fixed problems, or None.
        log_loss: tell ``log(loss)`` where losses are non-negative (`log_loss`).
        options: the solver's own keyword options.
    """

    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam
    lr: float = 1e-3
    optimizer_options: Mapping = field(default_factory=dict)
    sigma: float = 0.1
    noise: Callable[[float], NoiseModel] | None = None
    samples: int | Callable[[int], int] = 16
    restarts: type[Restarts] | None = None
    log_loss: bool = False
    options: Mapping = field(default_factory=dict)

    def replace(self, **changes) -> Preset:
        """A copy with ``changes``; ``options`` are merged into the preset's."""
        if "options" in changes:
            changes["options"] = {**self.options, **changes["options"]}
        return dataclasses.replace(self, **changes)

    def samples_for(self, dimension: int | None) -> int:
        if callable(self.samples):
            if dimension is None:
                raise ValueError("Invalid dimension: this preset's sample count depends on d; pass dimension=")
            return int(self.samples(dimension))
        return int(self.samples)

    def build(self, name: str, policy: nn.Module, *, dimension: int | None = None, seed: int | None = None,
              episodes: int | None = None, samples: int | None = None, sigma_factor: float = 1.0,
              **extra):  # fmt: skip
        """The solver ``name`` for ``policy`` with this preset (``episodes=N`` for episode mode;
        ``samples`` overrides the preset's count, ``sigma_factor`` scales its step size; ``extra``
        solver options, e.g. ``correlation=``, over the preset's)."""
        cls = _solver_class(name)
        optimizer = self.optimizer(policy.parameters(), lr=self.lr, **self.optimizer_options)
        sigma = self.sigma * sigma_factor
        options = dict(self.options) | extra
        if self.noise is not None:
            options["noise"] = self.noise(sigma)
        else:  # a sigma in extra (a rule, e.g. bbopt.sigma.Linear) over the preset's
            options.setdefault("sigma", sigma)
        if episodes is not None:
            options["episodes"] = episodes
        else:
            options["samples"] = samples if samples is not None else self.samples_for(dimension)
        return cls(policy, optimizer, seed=seed, **options)

    def strategy(self, name: str, start: Callable[[int], torch.Tensor], *, dimension: int, seed: int,
                 make_policy: Callable[[torch.Tensor], nn.Module] | None = None):  # fmt: skip
        """For a fixed problem: a solver, or (with ``restarts``) a restart strategy, each run
        starting at ``start(run_seed)`` with a `bbopt.policies.LearnedVector` (or
        ``make_policy(start)``)."""
        if make_policy is None:
            from bbopt.policies import LearnedVector

            def make_policy(x0):
                return LearnedVector(dimension, init=x0)

        def make(run: Run):
            return self.build(name, make_policy(start(run.seed)), dimension=dimension, seed=run.seed,
                              samples=run.samples, sigma_factor=run.sigma_factor)  # fmt: skip

        samples = self.samples_for(dimension)
        if self.restarts is None:
            return make(Run(index=0, samples=samples, sigma_factor=1.0, seed=seed))
        return self.restarts(make, samples=samples + samples % 2, seed=seed)


def _solver_class(name: str) -> type:
    key = name.lower() if isinstance(name, str) else name
    if key not in SOLVERS:
        raise ValueError(f"Invalid solver name: {name!r} (expected one of {sorted(SOLVERS)})")
    return SOLVERS[key]


def get(name: str, use: str) -> Preset:
    """The preset of solver ``name`` for ``use`` (``"problem" | "batch" | "episodes"``)."""
    if use not in USES:
        raise ValueError(f"Invalid use: {use!r} (expected one of {USES})")
    name = canonical(name)
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"Invalid solver name: {name!r} (expected one of {names(use)})")
    presets = PRESETS.get(name, {})
    if use not in presets:
        raise ValueError(f"Invalid use: solver {name!r} has no {use!r} preset (it has {sorted(presets)})")
    return presets[use]


def names(use: str | None = None, *, output_space: bool = False) -> list[str]:
    """Registered solver names, sorted; with ``use``, those that have a preset for it; with
    ``output_space``, only the solvers whose noise is on the policy's output (`bbopt.Solver`s,
    not parameter-space baselines)."""
    from bbopt.solver import Solver

    return sorted(
        name
        for name, cls in SOLVERS.items()
        if (use is None or use in PRESETS.get(name, {})) and (not output_space or issubclass(cls, Solver))
    )
