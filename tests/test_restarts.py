"""Restarts and the budget loop: exact budgets, population schedules, the best kept, stop rules."""

import math

import numpy as np
import pytest
import torch

import bbopt
from bbopt.policies import LearnedVector
from bbopt.restarts import BIPOP, IPOP, Restarts, Run, Stagnation


def rastrigin(x):
    x = torch.as_tensor(x, dtype=torch.float64)
    return 10 * x.shape[-1] + (x * x - 10 * torch.cos(2 * math.pi * x)).sum(-1)


def factory(made, dimension=4):
    """A preset-built solver per run, each starting at a point drawn from the run's seed."""
    preset = bbopt.presets.get("es", "problem").replace(sigma=1.0)

    def make(run: Run):
        start = torch.from_numpy(np.random.default_rng(run.seed).uniform(-3, 3, dimension)).float()
        made.append(run)
        return preset.build("es", LearnedVector(dimension, init=start), dimension=dimension, seed=run.seed,
                            samples=run.samples, sigma_factor=run.sigma_factor)  # fmt: skip

    return make


def test_ipop_spends_the_budget_exactly_doubles_the_population_and_keeps_the_best():
    made = []
    calls = []

    def counted(x):
        calls.append(len(x))
        return rastrigin(x)

    result = bbopt.minimize(counted, IPOP(factory(made, 4), samples=8, seed=3), budget=8001, progress=False)
    assert sum(calls) == result.evaluations == 8001
    assert [run.samples for run in made] == [8 * 2**k for k in range(len(made))]
    assert len(made) >= 3 and [run.index for run in made] == list(range(len(made)))
    assert len({run.seed for run in made}) == len(made)  # every run its own seed
    assert result.loss == min(run["best"] for run in result.runs)  # the best over all runs is kept
    assert float(rastrigin(result.x[None])[0]) == pytest.approx(result.loss)
    assert all(run["stop"] != "budget" for run in result.runs[:-1]) and result.runs[-1]["stop"] == "budget"


def test_bipop_alternates_regimes_by_the_evaluations_each_used():
    made = []
    result = bbopt.minimize(rastrigin, BIPOP(factory(made, 4), samples=8, seed=1), budget=8000, progress=False)
    regimes = [run.regime for run in made]
    assert regimes[:2] == ["first", "large"] and "small" in regimes
    strategy_used = {"large": 0, "small": 0}
    for run, summary in zip(made, result.runs, strict=True):
        if run.regime == "small":  # every small run started when the small regime had used less
            assert strategy_used["small"] < strategy_used["large"]
            assert 8 <= run.samples <= 8 * 2 ** sum(r.regime == "large" for r in made[: run.index])
            assert 0.01 <= run.sigma_factor <= 1.0
        if run.regime in strategy_used:
            strategy_used[run.regime] += summary["evaluations"]
    large = [run.samples for run in made if run.regime == "large"]
    assert large == [16 * 2**k for k in range(len(large))]


def test_same_seed_same_restarts():
    def runs(seed):
        made = []
        bbopt.minimize(rastrigin, BIPOP(factory(made, 2), samples=8, seed=seed), budget=5000, progress=False)
        return [(r.samples, r.sigma_factor, r.seed) for r in made]

    assert runs(4) == runs(4) and runs(4) != runs(5)


def test_stagnation_reasons():
    class Flat:  # a model whose spread and condition the test sets
        dimension, spread_value, condition_value = 4, 1.0, 1.0

        def spread(self):
            return self.spread_value

        def condition(self):
            return self.condition_value

    rule, model = Stagnation(), Flat()
    assert rule.reason([1.0] * 100, np.ones(8), model, 1.0, 8) == "tol_fun"  # flat losses
    improving = list(np.linspace(10, 1, 40))
    assert rule.reason(improving, np.ones(8), model, 1.0, 8) is None
    model.spread_value = 1e-13
    assert rule.reason(improving, np.ones(8), model, 1.0, 8) == "tol_x"
    model.spread_value = 2e4
    assert rule.reason(improving, np.ones(8), model, 1.0, 8) == "tol_x_up"  # diverging
    assert rule.reason(improving, np.ones(8), model, 10.0, 8) is None  # relative to the initial spread
    model.spread_value, model.condition_value = 1.0, 1e15
    assert rule.reason(improving, np.ones(8), model, 1.0, 8) == "condition"
    model.condition_value = 1.0
    noisy = list(1 + 0.1 * np.random.default_rng(0).random(200) + np.linspace(0, 0.05, 200))  # no progress
    assert rule.reason(noisy, np.ones(8) * 1.5, model, 1.0, 8) == "stagnation"


def test_a_single_solver_and_steps_without_restarts():
    policy = LearnedVector(3, init=torch.ones(3))
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=0.1), sigma=0.3, samples=6, seed=0)
    result = bbopt.minimize(rastrigin, solver, steps=7, progress=False)
    assert len(result.history) == 7 and result.evaluations == 42 and len(result.runs) == 1
    result = bbopt.minimize(rastrigin, solver, budget=10, progress=False)  # 6, then 4 of the next batch
    assert result.evaluations == 10 and result.runs[0]["stop"] == "budget"


BAD = {
    "no budget": (lambda: bbopt.minimize(rastrigin, IPOP(lambda run: None, samples=8), steps=3),
                  r"Invalid budget: restarts need an evaluation budget"),
    "neither": (lambda: bbopt.minimize(rastrigin, None), r"Invalid steps/budget: give at least one of them"),
    "odd samples": (lambda: IPOP(lambda run: None, samples=7), r"Invalid samples: 7 \(expected an even int >= 2\)"),
    "factory": (lambda: Restarts(3, samples=8), r"Invalid make: 3"),
    "factory result": (lambda: bbopt.minimize(rastrigin, IPOP(lambda run: "x", samples=8), budget=10),
                       r"Invalid solver: str"),
    "tol": (lambda: Stagnation(tol_fun=-1.0), r"Invalid tol_fun: -1.0"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case):
    action, pattern = BAD[case]
    with pytest.raises(ValueError, match=pattern):
        action()
