"""Restarts for any solver on a fixed objective: IPOP and BIPOP.

A restart strategy builds a fresh solver for each run from a factory, ``make(run) -> Solver``,
where `Run` says the run's index, population size, step-size factor and seed; `bbopt.minimize`
runs it until the budget is spent, stopping a run when `Stagnation` says it has stalled. Any
fixed objective can use it: IOH problems, bin packing, a user's own function.

* `IPOP` (Auger & Hansen, "A restart CMA evolution strategy with increasing population size",
  CEC 2005): every restart doubles the population.
* `BIPOP` (Hansen, "Benchmarking a BI-population CMA-ES on the BBOB-2009 function testbed",
  GECCO 2009): after a first run with the default population, two regimes take turns, each
  time the one that has used fewer evaluations: *large* (IPOP: the population doubles at each
  large restart) and *small* (population ``n0 (n_large / (2 n0)) ** (U^2)``, step size
  ``10 ** (-2 U)`` times the initial one, U uniform in [0, 1]), where n_large is the last large
  population.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bbopt.checks import check_float, check_int

__all__ = ["BIPOP", "IPOP", "Restarts", "Run", "Stagnation"]


@dataclass(frozen=True)
class Run:
    """What a restart strategy asks its factory for."""

    index: int  # 0 for the first run
    samples: int  # population size (even: antithetic pairs)
    sigma_factor: float  # multiply the initial step size (BIPOP's small regime: < 1)
    seed: int  # the run's own seed (numpy SeedSequence.spawn of the strategy's seed)
    regime: str = "first"  # "first", "large" or "small"


@dataclass
class Stagnation:
    """When a run has stalled (checked after every update), after CMA-ES's termination criteria
    (Hansen 2016, Appendix B.3), with ``k = 10 + ceil(30 d / n)`` for dimension d and population n:

    * ``tol_fun``: over the last k updates, the best losses per update, and the losses of the
      last update, all lie within ``tol_fun`` of each other (no measurable change);
    * ``tol_x``: the noise's largest standard deviation fell below ``tol_x`` times its
      initial value (the search has collapsed); ``tol_x_up``: it grew above ``tol_x_up`` times
      its initial value (the run diverges: the initial step size was far too small, or the
      step-size rule ran away);
    * ``stagnation``: over the last ``120 + ceil(30 d / n)`` updates (at least that many), the
      median of the best losses in the latest 20% is not below the median in the first 20%;
    * ``condition``: the noise covariance's condition number exceeds ``max_condition``.

    A run that meets any of them is stopped and the reason recorded.
    """

    tol_fun: float = 1e-12
    tol_x: float = 1e-12
    tol_x_up: float = 1e4
    max_condition: float = 1e14
    use_stagnation: bool = True

    def __post_init__(self):
        check_float(self.tol_fun, "tol_fun", at_least=0.0)
        check_float(self.tol_x, "tol_x", at_least=0.0)
        check_float(self.tol_x_up, "tol_x_up", above=1.0, finite=False)
        check_float(self.max_condition, "max_condition", above=1.0, finite=False)

    def reason(self, best_per_update: list[float], last_losses: np.ndarray, noise, initial_spread: float,
               samples: int) -> str | None:  # fmt: skip
        """The reason a run is over, or None; ``noise`` is the run's noise model (its ``spread``,
        ``condition`` (checked every 10 updates: it costs a decomposition) and ``dimension``)."""
        dimension = noise.dimension
        history = math.ceil(30 * dimension / samples)
        k = 10 + history
        if len(best_per_update) >= k:
            recent = [*best_per_update[-k:], *np.asarray(last_losses).tolist()]
            if max(recent) - min(recent) <= self.tol_fun:
                return "tol_fun"
        spread = noise.spread()
        if spread <= self.tol_x * initial_spread:
            return "tol_x"
        if spread > self.tol_x_up * initial_spread:
            return "tol_x_up"
        if len(best_per_update) % 10 == 0 and noise.condition() > self.max_condition:
            return "condition"
        window = 120 + history
        if self.use_stagnation and len(best_per_update) >= window:
            recent = best_per_update[-window:]
            fifth = max(1, len(recent) // 5)
            if np.median(recent[-fifth:]) >= np.median(recent[:fifth]):
                return "stagnation"
        return None


@dataclass
class Restarts:
    """One run after another, each from ``make(run)``, until the budget is spent.

    Args:
        make: the factory ``Run -> Solver`` (a fresh policy, optimizer and solver each time).
        samples: the first run's population size (even).
        seed: the strategy's seed; run seeds are ``numpy.random.SeedSequence(seed).spawn``.
        stagnation: when a run is over (`Stagnation` defaults).
        max_runs: stop after this many runs (None: until the budget is spent).
    """

    make: Callable[[Run], object]
    samples: int
    seed: int = 0
    stagnation: Stagnation = field(default_factory=Stagnation)
    max_runs: int | None = None

    def __post_init__(self):
        if not callable(self.make):
            raise ValueError(f"Invalid make: {self.make!r} (expected a callable Run -> Solver)")
        check_int(self.samples, "samples", minimum=2, even=True)
        check_int(self.seed, "seed")
        if self.max_runs is not None:
            check_int(self.max_runs, "max_runs", minimum=1)
        self._seeds = np.random.SeedSequence(self.seed)
        self._rng = np.random.default_rng(self._seeds.spawn(1)[0])
        self.used = {"first": 0, "large": 0, "small": 0}  # evaluations per regime
        self.runs: list[Run] = []

    def next_run(self) -> Run | None:
        """The next run, or None when ``max_runs`` is reached."""
        index = len(self.runs)
        if self.max_runs is not None and index >= self.max_runs:
            return None
        samples, sigma_factor, regime = self._plan(index)
        seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        run = Run(index=index, samples=samples, sigma_factor=sigma_factor, seed=seed, regime=regime)
        self.runs.append(run)
        return run

    def record(self, run: Run, evaluations: int) -> None:
        """Account ``evaluations`` spent by ``run`` to its regime."""
        self.used[run.regime] += evaluations

    def _plan(self, index: int) -> tuple[int, float, str]:
        return self.samples, 1.0, "first"


def _even(value: float) -> int:
    value = int(value)
    return value + value % 2


class IPOP(Restarts):
    """Restarts with the population doubled each time (``increase``, default 2)."""

    increase: float = 2.0

    def _plan(self, index):
        if index == 0:
            return self.samples, 1.0, "first"
        return _even(self.samples * self.increase**index), 1.0, "large"


class BIPOP(Restarts):
    """IPOP's large-population restarts interleaved with small-population, small-step ones."""

    def _plan(self, index):
        large_runs = sum(run.regime == "large" for run in self.runs)
        if index == 0:
            return self.samples, 1.0, "first"
        if index == 1 or self.used["large"] <= self.used["small"]:
            return _even(self.samples * 2 ** (large_runs + 1)), 1.0, "large"
        largest = self.samples * 2 ** max(large_runs, 1)
        u = float(self._rng.random())
        samples = max(self.samples, _even(self.samples * (0.5 * largest / self.samples) ** (u * u)))
        return samples, 10 ** (-2 * float(self._rng.random())), "small"
