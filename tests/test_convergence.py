"""Each solver reaches a stated loss on the 10-D sphere within a stated budget, 5 seeds, no retries.

Start: uniform in [-4, 4]^10 (seeded), so sphere(x0) is about 50. Budget: 1,000 updates of 16
candidates = 16,000 evaluations. The loss checked is that of the policy's mean output mu.
"""

import pytest
import torch

import bbopt
from bbopt.envs import sphere
from bbopt.policies import LearnedVector

DIMENSION, SAMPLES, STEPS = 10, 16, 1000


def ovlr(policy, seed):
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.1)
    sigma = bbopt.sigma.Learned(1.0, lr=0.1)
    return bbopt.OVLR(policy, optimizer, sigma=sigma, samples=SAMPLES, seed=seed), None


def es(policy, seed):
    # Rank utilities carry no step-size information: Adam's step must decay to converge.
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.1)
    sigma = bbopt.sigma.Learned(1.0, lr=0.1)
    solver = bbopt.ES(policy, optimizer, sigma=sigma, samples=SAMPLES, seed=seed)
    return solver, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)


def cem(policy, seed):
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)  # lr 1: mu <- elite mean
    return bbopt.CEM(policy, optimizer, sigma=1.0, samples=SAMPLES, elite_fraction=0.5, sigma_rate=0.5, seed=seed), None


# solver -> (factory, stated loss of mu after the budget)
SETTINGS = {"ovlr": (ovlr, 1e-10), "es": (es, 1e-6), "cem": (cem, 1e-10)}


def test_every_registered_solver_has_a_convergence_setting():
    assert set(SETTINGS) == set(bbopt.SOLVERS)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_reaches_stated_loss_on_10d_sphere(name, seed):
    factory, target = SETTINGS[name]
    start = torch.rand(DIMENSION, generator=torch.Generator().manual_seed(100 + seed)) * 8 - 4
    policy = LearnedVector(DIMENSION, init=start)
    solver, scheduler = factory(policy, seed)
    for _ in range(STEPS):
        solver.tell(sphere(solver.ask()))
        if scheduler is not None:
            scheduler.step()
    assert solver.evaluations == SAMPLES * STEPS
    assert float(sphere(policy.value.detach())) <= target
