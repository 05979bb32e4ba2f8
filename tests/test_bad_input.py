"""Every bad input gets a ValueError/RuntimeError that names the argument and what was expected."""

import pytest
import torch
from torch import nn

import bbopt
from bbopt.policies import MLP, LearnedVector
from tests.conftest import vector_policy


def adam(policy):
    return torch.optim.Adam(policy.parameters(), lr=0.1)


def construct(**options):
    def build():
        policy = options.pop("policy", None) or vector_policy(4)
        name = options.pop("name", "ovlr")
        optimizer = options.pop("optimizer", None) or adam(policy)
        return bbopt.make_solver(name, policy, optimizer, **options)

    return build


def after_ask(action, **options):
    def run():
        policy = vector_policy(4)
        solver = bbopt.make_solver(options.pop("name", "ovlr"), policy, adam(policy), samples=4, **options)
        candidates = solver.ask()
        action(solver, candidates)

    return run


def on_fresh(action, **options):
    def run():
        policy = options.pop("policy", None) or vector_policy(4)
        solver = bbopt.make_solver(options.pop("name", "ovlr"), policy, adam(policy), **options)
        action(solver)

    return run


def nan_losses(solver, candidates):
    losses = (candidates**2).sum(-1)
    losses[1] = float("nan")
    losses[3] = float("inf")
    solver.tell(losses)


class NoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(2, 3))

    def forward(self):
        return self.value


class DropsRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, inputs):
        return self.linear(inputs[:1])


CASES = {
    "policy not a module": (
        construct(policy=object(), optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1)),
        ValueError,
        r"Invalid policy: object \(expected a torch.nn.Module\)",
    ),
    "policy without parameters": (
        construct(policy=nn.Identity(), optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1)),
        ValueError,
        r"Invalid policy: it has no parameters",
    ),
    "optimizer not an optimizer": (
        construct(optimizer="adam"),
        ValueError,
        r"Invalid optimizer: str \(expected a torch.optim.Optimizer\)",
    ),
    "samples zero": (construct(samples=0), ValueError, r"Invalid samples: 0 \(expected an int >= 1\)"),
    "samples float": (construct(samples=8.0), ValueError, r"Invalid samples: 8.0 \(expected an int >= 1\)"),
    "samples odd with antithetic": (construct(samples=5), ValueError, r"Invalid samples: 5 with antithetic=True"),
    "samples with episodes": (construct(samples=4, episodes=8), ValueError, r"Invalid samples: episode mode"),
    "episodes one": (construct(episodes=1), ValueError, r"Invalid episodes: 1 \(expected an int >= 2\)"),
    "sigma negative": (
        construct(sigma=-0.1),
        ValueError,
        r"Invalid sigma: -0.1 \(every entry must be finite and > 0\)",
    ),
    "sigma nan": (construct(sigma=float("nan")), ValueError, r"Invalid sigma: nan"),
    "sigma matrix": (construct(sigma=[[0.1]]), ValueError, r"Invalid sigma: shape \(1, 1\)"),
    "sigma wrong length": (
        on_fresh(lambda s: s.ask(), sigma=[0.1, 0.2, 0.3]),
        ValueError,
        r"Invalid sigma: 3 entries for a policy output of dimension 4",
    ),
    "learned lr": (lambda: bbopt.sigma.Learned(0.1, lr=0.0), ValueError, r"Invalid lr: 0.0"),
    "learned floor": (
        lambda: bbopt.sigma.Learned(0.1, floor=1.0, ceiling=0.5),
        ValueError,
        r"Invalid ceiling: 0.5 \(expected a float > 1.0\)",
    ),
    "schedule not callable": (lambda: bbopt.sigma.Scheduled(0.1), ValueError, r"Invalid schedule: 0.1"),
    "linear start": (lambda: bbopt.sigma.Linear(0.0, 0.1, 10), ValueError, r"Invalid start: 0.0"),
    "linear end": (lambda: bbopt.sigma.Linear(0.5, float("inf"), 10), ValueError, r"Invalid end: inf"),
    "linear updates": (lambda: bbopt.sigma.Linear(0.5, 0.1, 0), ValueError, r"Invalid updates: 0"),
    "linear updates bool": (lambda: bbopt.sigma.Linear(0.5, 0.1, True), ValueError, r"Invalid updates: True"),
    "noise unknown": (
        construct(noise="cauchy"),
        ValueError,
        r"Invalid noise: 'cauchy' \(expected one of \['gaussian', 'laplace', 'student_t'\]",
    ),
    "student df": (
        construct(noise="student_t", df=2.0),
        ValueError,
        r"Invalid df: 2.0 \(expected a finite float > 2.0\)",
    ),
    "nan_policy": (
        construct(nan_policy="ignore"),
        ValueError,
        r"Invalid nan_policy: 'ignore' \(expected one of \['raise', 'worst'\]\)",
    ),
    "seed and generator": (
        construct(seed=0, generator=torch.Generator()),
        ValueError,
        r"Invalid seed/generator: give at most one",
    ),
    "generator type": (construct(generator=0), ValueError, r"Invalid generator: int"),
    "solver name": (
        construct(name="pso"),
        ValueError,
        r"Invalid solver name: 'pso' \(expected one of \['cem', 'es', 'ovlr', 'param_es'\]\)",
    ),
    "elite fraction": (
        construct(name="cem", elite_fraction=1.5),
        ValueError,
        r"Invalid elite_fraction: 1.5 \(expected a finite float > 0.0 and <= 1.0\)",
    ),
    "too few elites": (
        construct(name="cem", samples=4, elite_fraction=0.25),
        ValueError,
        r"Invalid elite_fraction: 0.25 keeps 1 of 4 samples",
    ),
    "sigma floor": (construct(name="cem", sigma_floor=0.0), ValueError, r"Invalid sigma_floor: 0.0"),
    "sigma rate": (construct(name="cem", sigma_rate=2.0), ValueError, r"Invalid sigma_rate: 2.0"),
    "tell before ask": (on_fresh(lambda s: s.tell(torch.zeros(16))), RuntimeError, r"tell\(\) called before ask\(\)"),
    "ask twice": (on_fresh(lambda s: (s.ask(), s.ask())), RuntimeError, r"ask\(\) called twice without tell\(\)"),
    "state_dict mid-ask": (
        on_fresh(lambda s: (s.ask(), s.state_dict())),
        RuntimeError,
        r"state_dict\(\) between ask\(\) and tell\(\)",
    ),
    "losses wrong length": (
        after_ask(lambda s, c: s.tell(torch.zeros(3))),
        ValueError,
        r"Invalid losses: shape \[3\] \(expected \[4\]\)",
    ),
    "losses wrong rank": (
        after_ask(lambda s, c: s.tell(torch.zeros(1, 4))),
        ValueError,
        r"Invalid losses: shape \[1, 4\] \(expected \[4\]\)",
    ),
    "losses not numbers": (
        after_ask(lambda s, c: s.tell(["a", "b", "c", "d"])),
        ValueError,
        r"Invalid losses: str values",
    ),
    "losses non-finite": (
        after_ask(nan_losses),
        ValueError,
        r"Invalid losses: 2 non-finite value\(s\) at indices 1, 3 \(nan_policy='raise'",
    ),
    "policy output not a vector": (
        on_fresh(lambda s: s.ask(), policy=NoInput()),
        ValueError,
        r"Invalid policy output: shape \[2, 3\] from policy\(\) \(expected \[d\]\)",
    ),
    "policy output batch mismatch": (
        on_fresh(lambda s: s.ask(torch.zeros(5, 3)), policy=DropsRows()),
        ValueError,
        r"Invalid policy output: shape \[1, 2\] from policy\(inputs\[5, ...\]\) \(expected \[5, d\]\)",
    ),
    "scalar inputs": (
        on_fresh(lambda s: s.ask(torch.tensor(1.0)), policy=MLP(1, 2)),
        ValueError,
        r"Invalid inputs: a scalar",
    ),
    "episode ids outside episode mode": (
        on_fresh(lambda s: s.ask(episode_ids=[0])),
        ValueError,
        r"Invalid episode_ids: only episode mode",
    ),
    "episode ids count": (
        on_fresh(lambda s: s.ask(torch.zeros(3, 2), episode_ids=[0, 1]), policy=MLP(2, 2), episodes=4),
        ValueError,
        r"Invalid episode_ids: 2 ids for 3 inputs",
    ),
    "episode ids range": (
        on_fresh(lambda s: s.ask(torch.zeros(2, 2), episode_ids=[0, 4]), policy=MLP(2, 2), episodes=4),
        ValueError,
        r"Invalid episode_ids: \[0, 4\] \(expected ids in \[0, 4\)\)",
    ),
    "episode ids repeated": (
        on_fresh(lambda s: s.ask(torch.zeros(2, 2), episode_ids=[1, 1]), policy=MLP(2, 2), episodes=4),
        ValueError,
        r"each episode at most once per step",
    ),
    "episode tell before ask": (
        on_fresh(lambda s: s.tell(torch.zeros(4)), policy=MLP(2, 2), episodes=4),
        RuntimeError,
        r"tell\(\) called before ask\(\)",
    ),
    "episode that never stepped": (
        on_fresh(
            lambda s: (s.ask(torch.zeros(2, 2), episode_ids=[0, 2]), s.tell(torch.zeros(4))),
            policy=MLP(2, 2),
            episodes=4,
        ),
        ValueError,
        r"Invalid losses: episodes \[1, 3\] took no step",
    ),
    "episode without inputs": (
        on_fresh(lambda s: s.ask(), policy=MLP(2, 2), episodes=4),
        ValueError,
        r"Invalid inputs: episode mode needs the observations",
    ),
    "load state of another solver": (
        on_fresh(lambda s: s.load_state_dict({"solver": "CEM"})),
        ValueError,
        r"Invalid state: saved from 'CEM' \(expected 'OVLR'\)",
    ),
    "vector dimension": (lambda: LearnedVector(0), ValueError, r"Invalid dimension: 0"),
    "vector init": (
        lambda: LearnedVector(3, init=[1.0, 2.0]),
        ValueError,
        r"Invalid init: shape \[2\] \(expected \[3\]\)",
    ),
    "mlp width": (lambda: MLP(3, 2, hidden=(0,)), ValueError, r"Invalid hidden: 0"),
    "mlp output scale": (
        lambda: MLP(3, 2, output_scale=[1.0, 2.0, 3.0]),
        ValueError,
        r"Invalid output_scale: shape \[3\]",
    ),
    "minimize steps": (lambda: bbopt.minimize(lambda x: x.sum(-1), None, steps=0), ValueError, r"Invalid steps: 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case):
    action, exception, pattern = CASES[case]
    with pytest.raises(exception, match=pattern):
        action()
