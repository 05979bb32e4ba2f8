"""Noise models: the shape gradients against their closed forms (Monte Carlo z-scores), bits,
step-size control, state round trips and bad input."""

import io
import math

import pytest
import torch

import bbopt
from bbopt.noise import Bernoulli, Diagonal, FullCovariance, LowRank, Scaled, Tiled
from bbopt.policies import LearnedVector
from bbopt.sigma import CSA

# A quadratic loss L(x) = 1/2 (x - c)^T Q (x - c): for x = mu + sigma A z, E[L] = L(mu) +
# sigma^2 tr(Q A A^T) / 2, so d E[L] / d A = sigma^2 Q A and, in local coordinates
# (A expm(M), M symmetric, at M = 0), d E[L] / d M = sigma^2 A^T Q A.
Q = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
CENTER = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
FACTOR = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 1.2]], dtype=torch.float64)  # Cholesky
SIGMA, MU = 0.7, torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)


def quadratic(x):
    deviation = x - CENTER
    return 0.5 * ((deviation @ Q) * deviation).sum(-1)


def ovlr_weights(losses):
    """OVLR's leave-one-out weights (L_i - mean of the others) / n on [G, n] losses."""
    n = losses.shape[1]
    return (losses - (losses.sum(1, keepdim=True) - losses) / (n - 1)) / n


def z_scores(draws, truth):
    mean, error = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    return ((mean - truth) / error).abs()


def full_model(factor=FACTOR):
    model = FullCovariance(SIGMA, initial=factor)
    model.setup(3, 8)
    return model


def shape_draws(model, count=4000, samples=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        eps = model.draw(1, samples, generator=generator, dtype=torch.float64, antithetic=False)
        losses = quadratic(model.candidates(MU[None], eps)[0])
        rows.append(model.shape_gradient(ovlr_weights(losses[None]), eps))
    return torch.stack(rows)


def test_full_covariance_gradient_matches_its_closed_form():
    draws = shape_draws(full_model())
    local_truth = SIGMA**2 * FACTOR.T @ Q @ FACTOR
    assert float(z_scores(draws.reshape(len(draws), -1), local_truth.reshape(-1)).max()) < 4.5
    # The same estimate w.r.t. the Cholesky factor itself: d E[L] / d A = A^-T G = sigma^2 Q A.
    factor_draws = torch.linalg.solve(FACTOR.T, draws)  # A^-T G per draw
    factor_truth = SIGMA**2 * Q @ FACTOR
    assert float(z_scores(factor_draws.reshape(len(draws), -1), factor_truth.reshape(-1)).max()) < 4.5


def test_gradient_check_catches_a_wrong_moment():
    """Planted bug: the rank-mu moment without its -I term is biased; the same check fails."""

    class Biased(FullCovariance):
        def _second_moment(self, even, independent):
            return super()._second_moment(even, independent) + even.sum() * torch.eye(3, dtype=torch.float64)

    model = Biased(SIGMA, initial=FACTOR)
    model.setup(3, 8)
    draws = shape_draws(model, count=2000)
    truth = SIGMA**2 * FACTOR.T @ Q @ FACTOR
    # with leave-one-out weights sum(w) = 0: shift the weights so that the planted term shows
    shifted = []
    generator = torch.Generator().manual_seed(1)
    for _ in range(2000):
        eps = model.draw(1, 8, generator=generator, dtype=torch.float64, antithetic=False)
        losses = quadratic(model.candidates(MU[None], eps)[0])
        shifted.append(model.shape_gradient((losses / 8)[None], eps))  # no baseline: sum(w) != 0
    assert float(z_scores(torch.stack(shifted).reshape(2000, -1), truth.reshape(-1)).max()) > 8.0
    assert draws.shape == (2000, 3, 3)


def test_diagonal_gradient_matches_its_closed_form():
    scales = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    model = Diagonal(SIGMA)
    model.setup(3, 8)
    model.log_scale.copy_(scales.log())
    draws = shape_draws(model)
    truth = SIGMA**2 * scales**2 * torch.diagonal(Q)  # d E[L] / d log scale_i
    assert float(z_scores(draws, truth).max()) < 4.5


def test_low_rank_gradient_is_the_likelihood_ratio_gradient_of_its_parameters():
    """LowRank's autograd LR gradient of (log scale, directions, lengths) against the exact
    gradient of E[L] = L(mu) + sigma^2 tr(Q C) / 2 through the same parametrization."""
    model = LowRank(SIGMA, rank=1)
    model.setup(3, 8)
    parameters = [model.log_scale, model.unit_directions, model.log_lengths]
    generator = torch.Generator().manual_seed(2)
    rows = []
    for _ in range(4000):
        eps = model.draw(1, 8, generator=generator, dtype=torch.float64, antithetic=False)
        losses = quadratic(model.candidates(MU[None], eps)[0])
        a = eps[0, :, :3] + eps[0, :, 3:] @ model.directions.T
        log_prob = model._log_prob(a, model.log_scale, model._directions(model.unit_directions, model.log_lengths))
        gradients = torch.autograd.grad((ovlr_weights(losses[None])[0] * log_prob).sum(), parameters)
        rows.append(torch.cat([g.reshape(-1) for g in gradients]))
    directions = model._directions(model.unit_directions, model.log_lengths)
    scale = model.log_scale.exp()
    covariance = scale[:, None] * (torch.eye(3, dtype=torch.float64) + directions @ directions.T) * scale[None]
    truth = torch.autograd.grad(SIGMA**2 * (Q * covariance).sum() / 2, parameters)
    assert float(z_scores(torch.stack(rows), torch.cat([g.reshape(-1) for g in truth])).max()) < 4.5


def test_tiled_signal_is_the_projected_gradient_for_a_linear_loss():
    """x = mu + S B eps (eps of 2 numbers repeated over 3 blocks, a different sigma per entry), loss
    c . x: E[signal] is c projected on the explored directions, S B (B^T S^2 B)^-1 B^T S c, and the
    candidates move every block by the same eps."""
    sigma = torch.tensor([0.5, 1.0, 0.2, 2.0, 1.5, 0.4], dtype=torch.float64)
    model = Tiled(sigma, repeats=3)
    model.setup(6, 8)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.25], dtype=torch.float64)
    mu = torch.zeros(4000, 6, dtype=torch.float64)
    eps = model.draw(4000, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64, antithetic=False)
    assert eps.shape == (4000, 8, 2)
    candidates = model.candidates(mu, eps)
    torch.testing.assert_close(candidates / sigma, (candidates / sigma)[..., :2].repeat(1, 1, 3))
    draws = model.signal(mu, ovlr_weights(candidates @ c), eps, natural=False)
    tiling = torch.eye(2, dtype=torch.float64).repeat(3, 1)  # B [6, 2]
    explored = torch.diag(sigma) @ tiling
    truth = explored @ torch.linalg.solve(explored.T @ explored, explored.T @ c)
    assert z_scores(draws, truth).max() < 4.0
    assert (truth - c).abs().max() > 1.0  # the projection is not the identity here
    natural = model.signal(mu[:1], torch.ones(1, 8, dtype=torch.float64), eps[:1], natural=True)
    torch.testing.assert_close(natural[0], (candidates[0] - mu[0]).sum(0))


@pytest.mark.parametrize("sigma", [1e-25, 1e25])
def test_tiled_signal_stays_finite_where_sigma_squared_leaves_float32(sigma):
    """Regression: the projection squared sigma in the policy's float32, so sigma 1e-25 gave an
    inf signal (Scaled's eps / sigma is finite there); it is formed in float64 now."""
    model, scaled = Tiled(sigma, repeats=2), Scaled(sigma)
    model.setup(4, 4)
    scaled.setup(2, 4)
    eps, weights = torch.randn(1, 4, 2, generator=torch.Generator().manual_seed(0)), torch.ones(1, 4)
    signal = model.signal(torch.zeros(1, 4), weights, eps, natural=False)
    assert signal.dtype == torch.float32 and bool(torch.isfinite(signal).all())
    expected = scaled.signal(torch.zeros(1, 2), weights, eps, natural=False) / 2  # g / (k sigma)
    torch.testing.assert_close(signal, expected.repeat(1, 2))


def leave_pair_out_weights(losses):
    """OVLR's weights with antithetic pairs (partner of i is i + n/2): the baseline excludes both."""
    n = losses.shape[1]
    others = losses.sum(1, keepdim=True) - losses - losses.roll(n // 2, dims=1)
    return (losses - others / (n - 2)) / n


@pytest.mark.parametrize("antithetic", [False, True], ids=["independent", "antithetic"])
def test_bernoulli_signal_is_unbiased_for_a_linear_loss(antithetic):
    """E[sum_j c_j x_j] = sum_j c_j p_j, so d E / d mu_j = c_j (1 - 2m) s_j (1 - s_j). (With
    complementary draws the baseline must leave the partner out, as OVLR's does.)"""
    coefficients = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.0]], dtype=torch.float64)
    model = Bernoulli(margin=0.05)
    model.setup(4, 10)
    generator = torch.Generator().manual_seed(3)
    rows = []
    for _ in range(4000):
        eps = model.draw(1, 10, generator=generator, dtype=torch.float64, antithetic=antithetic)
        bits = model.candidates(logits, eps)
        assert set(bits.unique().tolist()) <= {0.0, 1.0}
        weights = (leave_pair_out_weights if antithetic else ovlr_weights)(bits @ coefficients)
        rows.append(model.signal(logits, weights, eps, natural=False)[0])
    s = torch.sigmoid(logits[0])
    truth = coefficients * 0.9 * s * (1 - s)
    assert float(z_scores(torch.stack(rows), truth).max()) < 4.5


def test_bernoulli_antithetic_draws_are_complements_and_keep_the_margin():
    model = Bernoulli()
    model.setup(100, 4)
    assert model.margin == pytest.approx(0.01)
    eps = model.draw(1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64, antithetic=True)
    torch.testing.assert_close(eps[:, 2:], 1 - eps[:, :2])
    p = model.probability(torch.tensor([[50.0, -50.0]], dtype=torch.float64))
    torch.testing.assert_close(p, torch.tensor([[0.99, 0.01]], dtype=torch.float64))


def run_csa(losses_of, steps, seed=0, dimension=10, start=0.0):
    policy = LearnedVector(dimension, init=torch.full((dimension,), start))
    solver = bbopt.ES(policy, torch.optim.SGD(policy.parameters(), lr=1.0), noise=Scaled(CSA(1.0)), samples=12,
                      natural=True, normalize=True, seed=seed)  # fmt: skip
    for _ in range(steps):
        candidates = solver.ask()
        solver.tell(losses_of(candidates))
    return float(solver.sigma.value())


def test_csa_grows_sigma_on_a_slope_and_leaves_it_alone_on_noise():
    assert run_csa(lambda x: x[:, 0], 40) > 20.0  # consecutive steps agree: sigma grows fast
    # no signal: a random walk without drift (log sigma after 200 updates, over 20 seeds; its
    # spread is about 1.3 per seed, so the mean is within +-0.75 unless it drifts)
    generator = torch.Generator().manual_seed(5)
    final = torch.tensor([math.log(run_csa(lambda x: torch.rand(len(x), generator=generator), 200, seed=s))
                          for s in range(20)])  # fmt: skip
    assert abs(float(final.mean())) < 0.75 and float(final.abs().max()) < 4.0
    # the sphere, from a distance of sqrt(10) (at its center, the exact optimum, the mean has nowhere to go and
    # sigma walks at random: every antithetic pair ties)
    assert run_csa(lambda x: (x * x).sum(1), 150, start=1.0) < 1e-3  # sigma follows the distance down


@pytest.mark.parametrize(
    "model",
    [lambda: Scaled(bbopt.sigma.Learned([0.5, 0.4, 0.3, 0.6])), lambda: Diagonal(CSA(0.5), rank_one=True),
     lambda: FullCovariance(CSA(0.5), rank_one=True, rate=2.0), lambda: LowRank(CSA(0.5), rank=2), Bernoulli,
     lambda: Tiled([0.5, 0.4, 0.3, 0.6], repeats=2)],
    ids=["scaled", "diagonal", "full", "low_rank", "bernoulli", "tiled"],
)  # fmt: skip
def test_model_state_round_trips_through_a_weights_only_load(model):
    def build(seed):
        policy = LearnedVector(4, init=torch.full((4,), 2.0))
        return bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.5), noise=model(), samples=8,
                          natural=True, normalize=True, seed=seed)  # fmt: skip

    solver = build(0)
    for _ in range(7):
        solver.tell((solver.ask() ** 2).sum(1))
    buffer = io.BytesIO()
    torch.save(solver.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(20):
        a, b = solver.ask(), fresh.ask()
        assert torch.equal(a, b)
        assert solver.tell((a**2).sum(1)) == fresh.tell((b**2).sum(1))
    assert torch.equal(solver.noise.sigma.value(), fresh.noise.sigma.value())


BAD = {
    "not positive definite": (lambda: FullCovariance(1.0, initial=[[1.0, 2.0], [2.0, 1.0]], initial_is_covariance=True),
                              r"Invalid initial: the covariance is not positive definite"),
    "not symmetric": (lambda: FullCovariance(1.0, initial=[[1.0, 0.5], [0.0, 1.0]], initial_is_covariance=True),
                      r"Invalid initial: the covariance is not symmetric"),
    "singular factor": (lambda: FullCovariance(1.0, initial=[[1.0, 2.0], [2.0, 4.0]]),
                        r"Invalid initial: the factor is singular"),
    "not square": (lambda: FullCovariance(1.0, initial=[[1.0, 0.0, 0.0]]), r"Invalid initial: shape \[1, 3\]"),
    "wrong size": (lambda: bbopt.OVLR(LearnedVector(3), torch.optim.SGD(LearnedVector(3).parameters(), lr=0.1),
                                      noise=FullCovariance(1.0, initial=torch.eye(2))).ask(),
                   r"Invalid initial: a \[2, 2\] factor for a policy output of dimension 3"),
    "per-dimension sigma": (lambda: FullCovariance(bbopt.sigma.Fixed([1.0, 2.0])).setup(2, 4),
                            r"Invalid sigma: shape \(2,\) \(FullCovariance takes a scalar step size"),
    "csa vector": (lambda: CSA([1.0, 2.0]), r"Invalid sigma: shape \(2,\) \(CSA adapts a scalar sigma\)"),
    "rank": (lambda: LowRank(1.0, rank=3).setup(3, 4), r"Invalid rank: 3 for dimension 3"),
    "margin": (lambda: Bernoulli(margin=0.5), r"Invalid margin: 0.5 \(expected a finite float > 0.0 and < 0.5\)"),
    "rate": (lambda: FullCovariance(1.0, rate=0.0), r"Invalid rate: 0.0"),
    "sigma and model": (lambda: bbopt.OVLR(LearnedVector(2), torch.optim.SGD(LearnedVector(2).parameters(), lr=0.1),
                                           sigma=0.5, noise=FullCovariance(1.0)),
                        r"Invalid sigma: the noise model holds its own step-size rule"),
    "tiled learned sigma": (lambda: Tiled(CSA(0.5), repeats=2), r"Invalid sigma: Tiled takes a fixed or scheduled"),
    "tiled repeats": (lambda: Tiled(0.5, repeats=0), r"Invalid repeats: 0"),
    "tiled blocks": (lambda: Tiled(0.5, repeats=2).setup(3, 4), r"Invalid policy output: dimension 3 is not 2 blocks"),
    "tiled reuse": (lambda: bbopt.OVLR(LearnedVector(2), torch.optim.SGD(LearnedVector(2).parameters(), lr=0.1),
                                       noise=Tiled(0.5, repeats=2), episodes=4, reuse=2),
                    r"Invalid reuse: the likelihood ratios need the default model"),
    "learned bits": (lambda: _tell_once(Bernoulli, bbopt.sigma.Learned(1.0)), r"Invalid sigma: Bernoulli noise has no"),
}  # fmt: skip


def _tell_once(model, sigma):
    noise = model()
    noise.sigma = sigma
    policy = LearnedVector(3)
    solver = bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.1), noise=noise, samples=4)
    solver.tell(solver.ask().sum(1))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case):
    action, pattern = BAD[case]
    with pytest.raises(ValueError, match=pattern):
        action()


SHAPES = [lambda: Diagonal(CSA(0.3)), lambda: FullCovariance(CSA(0.3), rate=2.0), lambda: LowRank(CSA(0.3), rank=1)]


@pytest.mark.parametrize("model", SHAPES, ids=["diagonal", "full", "low_rank"])
def test_shape_models_work_in_batch_and_episode_modes(model):
    """One shape over the output dimensions, shared by every input: a batch of inputs (each a
    group) and episodes (the population one group of its recorded steps) both learn it."""
    from bbopt.policies import MLP

    network = MLP(3, 4, hidden=(8,), seed=0)
    batch = bbopt.OVLR(network, torch.optim.SGD(network.parameters(), lr=0.01), noise=model(), samples=6, seed=0)
    inputs = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        candidates = batch.ask(inputs)
        assert candidates.shape == (5, 6, 4)
        batch.tell((candidates**2).sum(-1))
    network = MLP(3, 4, hidden=(8,), seed=0)
    episodes = bbopt.ES(network, torch.optim.SGD(network.parameters(), lr=0.01), noise=model(), episodes=6, seed=0)
    for _ in range(5):
        for step in range(3):
            live = torch.tensor([0, 1, 2, 3, 4, 5]) if step < 2 else torch.tensor([1, 4])
            actions = episodes.ask(torch.randn(len(live), 3), episode_ids=live)
            assert actions.shape == (len(live), 4)
        episodes.tell(torch.arange(6.0))
    for solver in (batch, episodes):
        learned = solver.noise
        assert learned.dimension == 4 and math.isfinite(learned.spread()) and math.isfinite(learned.condition())
        assert learned.condition() > 1.0  # the shape has moved off the identity


PLATEAU_MODELS = [
    lambda: Diagonal(CSA(1.0), rate=3.0, rank_one=True),
    lambda: FullCovariance(CSA(1.0), rate=3.0, rank_one=True),
]


@pytest.mark.parametrize("model", PLATEAU_MODELS, ids=["diagonal", "full"])
def test_shapes_stay_finite_with_a_large_population_on_a_plateau(model):
    """Regression (BBOB f7 in a BIPOP large run): rate * c_mu above 1 and weights concentrated
    on one pair drove a log-scale to 172 in five updates and the candidates to inf."""
    policy = LearnedVector(5, init=torch.full((5,), 2.0))
    solver = bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=1.5), noise=model(), samples=128,
                        natural=True, normalize=True, seed=0)  # fmt: skip
    for _ in range(60):
        candidates = solver.ask()
        assert bool(torch.isfinite(candidates).all())
        solver.tell(torch.floor((candidates**2).sum(1) / 4))  # a staircase: plateaus and ties
    assert solver.noise.condition() < 1e8


@pytest.mark.parametrize("pairs", [True, False], ids=["pairs", "independent"])
def test_selected_step_is_standard_normal_under_random_selection(pairs):
    """Weights that ignore the draws (losses independent of eps): the step CSA follows and the
    direction the rank-one path follows must be N(0, I), or sigma and the shape drift on noise.
    Mean 0 and E|s|^2 = d by Monte Carlo z-scores."""
    from bbopt.noise.model import selected_steps

    generator = torch.Generator().manual_seed(3)
    dimension, samples, groups = 4, 12, 2
    steps = []
    for _ in range(6000):
        half = torch.randn(groups, samples // 2, dimension, generator=generator, dtype=torch.float64)
        eps = torch.cat([half, -half], 1) if pairs else torch.randn(groups, samples, dimension, generator=generator,
                                                                   dtype=torch.float64)  # fmt: skip
        losses = torch.rand(groups, samples, generator=generator, dtype=torch.float64) ** 3  # skewed, not centred
        steps.append(torch.stack(selected_steps(ovlr_weights(losses), eps, pairs)))
    for draws in torch.stack(steps).unbind(1):  # step, direction
        assert float(z_scores(draws, torch.zeros(dimension)).max()) < 4.5
        assert float(z_scores(draws.square().sum(1, keepdim=True) / dimension, torch.ones(1)).max()) < 4.5


@pytest.mark.parametrize("name", ["ovlr", "es", "cem"])
def test_full_covariance_presets_converge_with_a_large_population(name):
    """Regression: with antithetic pairs the step CSA saw was normalized by the pairs' own weight
    differences, which vanish when sigma overshoots the optimum (the loss is then all in the even
    part): sigma grew without end and the candidates reached inf within 400 updates at n >= 32."""
    policy = LearnedVector(10, init=torch.full((10,), 1.0))
    solver = bbopt.presets.get(name, "problem").replace(sigma=0.5, restarts=None).build(name, policy, samples=128,
                                                                                         seed=0)  # fmt: skip
    best = math.inf
    for _ in range(400):
        candidates = solver.ask()
        losses = (candidates.double() ** 2).sum(1)
        best = min(best, float(losses.min()))
        solver.tell(losses)
    assert best < 1e-8
    assert float(solver.sigma.value()) < 0.5


@pytest.mark.parametrize("model", [lambda: Diagonal(CSA(0.5)), lambda: FullCovariance(CSA(0.5), rate=3.0)],
                         ids=["diagonal", "full"])  # fmt: skip
def test_rank_mu_shapes_leave_the_scale_to_the_step_size_rule(model):
    """The rank-mu step is trace-free (xNES's split): det A stays 1 and sigma alone sets the scale."""
    policy = LearnedVector(6, init=torch.full((6,), 2.0))
    solver = bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=1.0), noise=model(), samples=16,
                        natural=True, normalize=True, seed=0)  # fmt: skip
    for _ in range(50):
        candidates = solver.ask()
        solver.tell((candidates * torch.arange(1.0, 7.0)).square().sum(1))
    noise = solver.noise
    log_det = noise.log_scale.sum() if isinstance(noise, Diagonal) else torch.linalg.slogdet(noise.factor)[1]
    assert noise.condition() > 2.0  # it did learn a shape
    assert abs(float(log_det)) < 1e-8
