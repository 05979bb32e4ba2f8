"""The estimators against autograd: unbiasedness (z-score over many draws) and the VJP itself."""

import math

import pytest
import torch

import bbopt
from bbopt.noise import Gaussian, Laplace, StudentT
from tests.conftest import mlp_policy

# A smooth loss whose Gaussian-smoothed value is known in closed form for every symmetric,
# unit-variance noise family: E[a x + b x^2 + c x^3] at x = mu + sigma eps is
# a mu + b (mu^2 + sigma^2) + c (mu^3 + 3 mu sigma^2).
A = torch.tensor([0.5, -1.0, 0.3, 0.8])
B = torch.tensor([1.0, 0.5, 2.0, 0.7])
C = torch.tensor([0.2, -0.1, 0.05, 0.1])
INPUTS = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.3, -0.7], [-0.4, 0.9, 0.1]])
SIGMA = torch.tensor([0.5, 0.3, 0.8, 0.4], dtype=torch.float64)


def loss(x):
    return (A * x + B * x**2 + C * x**3).sum(-1)


def smoothed(mu, sigma):
    return (A * mu + B * (mu**2 + sigma**2) + C * (mu**3 + 3 * mu * sigma**2)).sum(-1)


def true_gradients(policy):
    """Autograd gradients of mean_B E[loss] w.r.t. the parameters and per-dimension log sigma."""
    log_sigma = SIGMA.log().float().requires_grad_()
    objective = smoothed(policy(INPUTS), log_sigma.exp()).mean()
    params = list(policy.parameters())
    grads = torch.autograd.grad(objective, [*params, log_sigma])
    return torch.cat([g.reshape(-1) for g in grads[:-1]]), grads[-1]


def estimates(noise, antithetic, draws, recording_sigma, samples=8, seed=0):
    policy = mlp_policy()
    sigma = recording_sigma(SIGMA)
    solver = bbopt.OVLR(
        policy,
        torch.optim.SGD(policy.parameters(), lr=0.0),
        sigma=sigma,
        samples=samples,
        noise=noise,
        antithetic=antithetic,
        seed=seed,
    )
    rows = []
    for _ in range(draws):
        solver.tell(loss(solver.ask(INPUTS)))
        rows.append(torch.cat([p.grad.reshape(-1) for p in policy.parameters()]))
    return policy, torch.stack(rows).double(), torch.stack(sigma.gradients).double()


def max_z(samples, truth):
    mean = samples.mean(0)
    standard_error = samples.std(0) / math.sqrt(samples.shape[0])
    return float(((mean - truth.double()).abs() / standard_error).max())


FAMILIES = [Gaussian(), Laplace(), StudentT(df=10.0)]


@pytest.mark.parametrize("antithetic", [True, False], ids=["antithetic", "plain"])
@pytest.mark.parametrize("noise", FAMILIES, ids=lambda n: n.name)
def test_ovlr_is_unbiased_for_parameters_and_log_sigma(noise, antithetic, recording_sigma):
    policy, parameter_estimates, sigma_estimates = estimates(noise, antithetic, 3000, recording_sigma)
    parameter_truth, sigma_truth = true_gradients(policy)
    # ~40 coordinates: a max |z| above 4.5 has probability < 1e-3 for an unbiased estimator.
    assert max_z(parameter_estimates, parameter_truth) < 4.5
    assert max_z(sigma_estimates, sigma_truth) < 4.5


class WrongScore(Laplace):
    """Laplace samples with the Gaussian score: a biased estimator the test must catch.

    (On the quadratic part it is still unbiased for mu, as E[eps^2] = 1 for both; the log-sigma
    score eps^2 - 1 instead of sqrt(2)|eps| - 1 is far off: E[eps^2 (eps^2 - 1)] = 5 vs 2.)"""

    def score(self, eps):
        return eps


def test_unbiasedness_check_catches_a_wrong_score(recording_sigma):
    policy, _, sigma_estimates = estimates(WrongScore(), False, 3000, recording_sigma)
    _, sigma_truth = true_gradients(policy)
    assert max_z(sigma_estimates, sigma_truth) > 8.0


def test_plain_estimator_without_baseline_is_unbiased(recording_sigma):
    policy = mlp_policy()
    solver = bbopt.OVLR(
        policy,
        torch.optim.SGD(policy.parameters(), lr=0.0),
        sigma=SIGMA,
        samples=4,
        baseline=False,
        antithetic=False,
        seed=1,
    )
    rows = []
    for _ in range(4000):
        solver.tell(loss(solver.ask(INPUTS)))
        rows.append(torch.cat([p.grad.reshape(-1) for p in policy.parameters()]))
    truth, _ = true_gradients(policy)
    assert max_z(torch.stack(rows).double(), truth) < 4.5


def test_tell_runs_exactly_the_vjp_of_the_output_signal():
    """p.grad after tell equals autograd.grad((mu * v).sum(), params) with v built by hand."""
    policy = mlp_policy()
    solver = bbopt.OVLR(
        policy, torch.optim.SGD(policy.parameters(), lr=0.0), sigma=0.5, samples=6, antithetic=True, seed=3
    )
    candidates = solver.ask(INPUTS)
    losses = loss(candidates)
    mu = policy(INPUTS).detach()
    eps = (candidates - mu[:, None]) / 0.5
    total = losses.sum(1, keepdim=True)
    baseline = (total - losses - losses.roll(3, dims=1)) / 4  # leave-pair-out, n = 6
    v = ((losses - baseline)[..., None] * eps).sum(1) / (6 * 0.5) / INPUTS.shape[0]
    solver.tell(losses)
    expected = torch.autograd.grad((policy(INPUTS) * v).sum(), list(policy.parameters()))
    for parameter, grad in zip(policy.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("noise", FAMILIES, ids=lambda n: n.name)
def test_noise_families_are_standardized(noise):
    generator = torch.Generator().manual_seed(0)
    eps = noise.sample((200_000,), generator=generator, dtype=torch.float64)
    assert abs(float(eps.mean())) < 0.01
    assert abs(float(eps.var()) - 1.0) < 0.03
    # Stein's identity E[score(eps) * g(eps)] = E[g'(eps)] with g = tanh checks the score.
    lhs = float((noise.score(eps) * torch.tanh(eps)).mean())
    rhs = float((1 - torch.tanh(eps) ** 2).mean())
    assert abs(lhs - rhs) < 0.02
