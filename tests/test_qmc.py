"""Quasi-Monte Carlo noise (issue 13, part 1): scrambled Sobol points through each family's
inverse CDF, an option of every noise model and solver (qmc=True)."""

import io
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import qmc as scipy_qmc

import bbopt
from bbopt.noise import Bernoulli, FullCovariance, Scaled
from bbopt.noise.families import Gaussian, Laplace, StudentT
from bbopt.noise.qmc import Sobol
from bbopt.policies import LearnedVector

FAMILIES = {"gaussian": Gaussian(), "laplace": Laplace(), "student_t": StudentT(5.0)}
SCIPY = {"gaussian": stats.norm(), "laplace": stats.laplace(scale=1 / math.sqrt(2)),
         "student_t": stats.t(5.0, scale=math.sqrt(3 / 5))}  # fmt: skip


def test_sobol_points_are_lower_in_discrepancy_than_independent_ones():
    generator = torch.Generator().manual_seed(0)
    sobol = Sobol().uniforms(1, 64, 5, generator=generator)[0].numpy()
    independent = [torch.rand(64, 5, generator=generator, dtype=torch.float64).numpy() for _ in range(20)]
    assert scipy_qmc.discrepancy(sobol) < 0.5 * min(scipy_qmc.discrepancy(points) for points in independent)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_quantiles_are_the_families_inverse_cdfs(name):
    u = torch.linspace(1e-6, 1 - 1e-6, 1001, dtype=torch.float64)
    torch.testing.assert_close(FAMILIES[name].quantile(u), torch.from_numpy(SCIPY[name].ppf(u.numpy())))


@pytest.mark.parametrize("name", FAMILIES)
def test_qmc_noise_has_the_familys_moments_and_antithetic_pairs(name):
    model = Scaled(1.0, family=FAMILIES[name]).use_qmc()
    model.setup(4, 8)
    eps = model.draw(512, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64, antithetic=True)
    assert torch.equal(eps[:, 4:], -eps[:, :4])
    first = eps[:, :4].reshape(-1, 4)
    # 4 standard errors of independent draws (QMC's are smaller): the mean's 1/sqrt(N), the
    # variance's sqrt((kurtosis - 1) / N) with the family's kurtosis (3, 6, and 9 for t with 5 df)
    count, kurtosis = first.shape[0], {"gaussian": 3.0, "laplace": 6.0, "student_t": 9.0}[name]
    assert float(first.mean(0).abs().max()) < 4 / math.sqrt(count)
    assert float((first.var(0) - 1).abs().max()) < 4 * math.sqrt((kurtosis - 1) / count)
    # each coordinate is distributed as the family: Kolmogorov-Smirnov against scipy's
    assert stats.kstest(first[:, 0].numpy(), SCIPY[name].cdf).pvalue > 1e-3


def solver(seed=0, qmc=True, name="ovlr", noise=None, samples=8):
    policy = LearnedVector(3, init=torch.tensor([1.0, -2.0, 0.5]))
    options = {"noise": noise} if noise is not None else {"sigma": 0.5}
    return bbopt.make_solver(name, policy, torch.optim.Adam(policy.parameters(), lr=0.1), samples=samples,
                             seed=seed, qmc=qmc, **options)  # fmt: skip


def run(s, steps):
    asked = []
    for _ in range(steps):
        x = s.ask()
        asked.append(x)
        s.tell((x**2).sum(1))
    return asked


@pytest.mark.parametrize("name", ["ovlr", "es", "cem"])
def test_qmc_is_deterministic_under_a_seed_and_round_trips_through_state_dict(name):
    a, b = solver(0, name=name), solver(0, name=name)
    for x, y in zip(run(a, 4), run(b, 4), strict=True):
        assert torch.equal(x, y)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    fresh = solver(5, name=name)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for x, y in zip(run(a, 3), run(fresh, 3), strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(run(solver(1, name=name), 1)[0], run(solver(0, name=name), 1)[0])  # the seed matters


def test_qmc_state_does_not_load_into_a_solver_without_it():
    with_qmc = solver(0)
    run(with_qmc, 1)
    plain = solver(0, qmc=False)
    with pytest.raises(ValueError, match="Invalid state"):
        plain.load_state_dict(with_qmc.state_dict())


def quadratic_signals(qmc: bool, samples: int, replicates: int = 1500):
    """OVLR's plain signal sum_i (L_i / n) eps_i / sigma for L(x) = 1/2 |x - c|^2 at mu, each
    replicate with its own scramble; E = grad of E[L] at mu = mu - c."""
    mu, center, sigma = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64), torch.tensor([0.3, 0.1, -0.4]), 0.5
    generator = torch.Generator().manual_seed(7)
    rows = []
    for _ in range(replicates):
        model = Scaled(sigma)
        if qmc:
            model.use_qmc()
        model.setup(3, samples)
        eps = model.draw(1, samples, generator=generator, dtype=torch.float64, antithetic=False)
        losses = 0.5 * ((model.candidates(mu, eps) - center) ** 2).sum(-1)
        rows.append(model.signal(mu, losses / samples, eps, natural=False)[0])
    return torch.stack(rows), (mu - center)[0]


def test_the_qmc_estimate_is_unbiased_and_less_variable():
    draws, truth = quadratic_signals(True, 16)
    z = (draws.mean(0) - truth).abs() / (draws.std(0) / math.sqrt(len(draws)))
    assert float(z.max()) < 4.5, z
    plain, _ = quadratic_signals(False, 16)
    assert float(draws.var(0).sum()) < 0.5 * float(plain.var(0).sum())


def test_qmc_works_with_a_shape_model_in_episode_mode_and_with_bits():
    s = solver(noise=FullCovariance(0.5))
    run(s, 3)
    policy = torch.nn.Linear(2, 3)
    episodes = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters()), sigma=0.3, episodes=8, seed=0, qmc=True)
    episodes.ask(torch.zeros(8, 2))
    episodes.tell(torch.arange(8.0))
    model = Bernoulli().use_qmc()
    model.setup(6, 64)
    u = model.draw(1, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64, antithetic=True)
    x = model.candidates(torch.zeros(1, 6, dtype=torch.float64), u)
    assert float((x.mean(1) - 0.5).abs().max()) < 0.05 and torch.equal(u[:, 32:], 1 - u[:, :32])


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_qmc_values(value):
    if value is None:
        s = solver()
        s.ask()
        with pytest.raises(ValueError, match="switch it before the first ask"):
            s.noise.use_qmc(False)
        return
    with pytest.raises(ValueError, match="Invalid qmc"):
        solver(qmc=value)


def test_a_width_beyond_sobols_dimensions_is_refused():
    with pytest.raises(ValueError, match="Sobol points exist up to dimension"):
        Sobol().uniforms(1, 4, Sobol.MAX_WIDTH + 1, generator=torch.Generator().manual_seed(0))


def test_uniforms_stay_inside_the_unit_interval():
    u = Sobol().uniforms(8, 512, 2, generator=torch.Generator().manual_seed(3))
    assert float(u.min()) > 0 and float(u.max()) < 1 and np.isfinite(Gaussian().quantile(u).numpy()).all()


def test_the_default_ovlr_signal_with_qmc_is_unbiased():
    """OVLR's defaults (antithetic pairs, leave-pair-out baseline) with QMC, through the solver:
    the mean of the one-VJP gradients equals the gradient of the expected loss."""
    center = torch.tensor([0.3, 0.1, -0.4])
    rows = []
    for seed in range(1500):
        policy = LearnedVector(3, init=torch.tensor([1.0, -2.0, 0.5]))
        s = bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.0), sigma=0.5, samples=8, seed=seed, qmc=True)
        x = s.ask()
        s.tell(0.5 * ((x - center) ** 2).sum(1))
        rows.append(policy.value.grad.clone())
    draws, truth = torch.stack(rows).double(), (torch.tensor([1.0, -2.0, 0.5]) - center).double()
    z = (draws.mean(0) - truth).abs() / (draws.std(0) / math.sqrt(len(draws)))
    assert float(z.max()) < 4.5, z


def test_a_baseline_without_pairs_is_refused_with_qmc():
    with pytest.raises(ValueError, match="QMC noise needs antithetic=True"):
        bbopt.OVLR(LearnedVector(3), torch.optim.SGD(LearnedVector(3).parameters(), lr=0.1), sigma=0.5,
                   antithetic=False, qmc=True)  # fmt: skip
    bbopt.OVLR(LearnedVector(3), torch.optim.SGD(LearnedVector(3).parameters(), lr=0.1), sigma=0.5,
               antithetic=False, baseline=False, qmc=True)  # fmt: skip
