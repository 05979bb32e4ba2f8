"""The cost work of issue 18 changes how things are computed, not what: each fast path gives
what the plain computation gives, under a seed (no test here times anything; the figures are
in benchmarks/profile_update.py and benchmarks/overhead.py)."""

import pytest
import torch
import torch.nn.functional as F

import bbopt
import bbopt.policies
from bbopt.losses import CrossEntropyLoss, cross_entropy
from bbopt.noise import Diagonal, FullCovariance, LowRank, Scaled
from bbopt.noise.model import NoiseModel

MODELS = {
    "scaled": lambda: Scaled(0.7),
    "scaled-per-dimension": lambda: Scaled([0.3, 0.5, 0.7, 0.9, 1.1]),
    "laplace": lambda: Scaled(0.7, family="laplace"),
    "student_t": lambda: Scaled(0.7, family="student_t"),
    "diagonal": lambda: Diagonal(0.7),
    "full": lambda: FullCovariance(0.7),
    "low_rank": lambda: LowRank(0.7, rank=2),
}


def set_up(name, samples=8):
    model = MODELS[name]()
    model.setup(5, samples)
    with torch.no_grad():  # a shape that is not the identity, so that the test sees it
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3),
                                             dtype=parameter.dtype))  # fmt: skip
    return model


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("natural", [False, True])
def test_the_paired_signal_equals_the_signal_of_all_samples(name, natural):
    model = set_up(name)
    generator = torch.Generator().manual_seed(0)
    eps = model.draw(3, 8, generator=generator, dtype=torch.float64, antithetic=True)
    mu = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    weights = torch.randn(3, 8, generator=generator, dtype=torch.float64)
    plain = model.signal(mu, weights, eps, natural=natural)
    paired = model.signal(mu, weights, eps, natural=natural, pairs=True)
    torch.testing.assert_close(paired, plain, rtol=1e-12, atol=1e-12)


def noise_and_mu(model, groups, samples, seed):
    """Independent noise ``[groups, samples, width]`` and ``mu[groups, 5]``, float32, seeded."""
    generator = torch.Generator().manual_seed(seed)
    eps = model.draw(groups, samples, generator=generator, dtype=torch.float32, antithetic=False)
    return eps, torch.randn(groups, 5, generator=generator)


@pytest.mark.parametrize("name", MODELS)
def test_candidates_are_mu_plus_the_perturbation(name):
    model = set_up(name)
    eps, mu = noise_and_mu(model, 4, 6, seed=1)
    expected = NoiseModel.candidates(model, mu, eps)  # the generic mu[:, None] + perturbation(eps)
    torch.testing.assert_close(model.candidates(mu, eps), expected)


def test_a_planted_sign_error_in_the_paired_signal_is_caught():
    model = set_up("scaled")
    generator = torch.Generator().manual_seed(0)
    eps = model.draw(2, 8, generator=generator, dtype=torch.float64, antithetic=True)
    mu, weights = torch.zeros(2, 5, dtype=torch.float64), torch.randn(2, 8, generator=generator, dtype=torch.float64)
    wrong = model.gradient_signal(mu, weights[:, :4] + weights[:, 4:], eps[:, :4])  # even parts instead of odd
    assert not torch.allclose(wrong, model.signal(mu, weights, eps, natural=False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cross_entropy_equals_torch_on_candidates_and_on_a_batch(dtype):
    generator = torch.Generator().manual_seed(0)
    candidates = 30 * torch.randn(16, 12, 10, generator=generator, dtype=dtype)  # large logits too
    targets = torch.randint(0, 10, (16,), generator=generator)
    expected = F.cross_entropy(candidates.reshape(-1, 10), targets.repeat_interleave(12), reduction="none")
    torch.testing.assert_close(cross_entropy(candidates, targets[:, None]), expected.reshape(16, 12))
    torch.testing.assert_close(CrossEntropyLoss()(candidates[:, 0], targets), expected.reshape(16, 12)[:, 0])


def test_cross_entropy_gradient_equals_torch():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 5, (8,), generator=generator)
    ours = torch.autograd.grad(cross_entropy(logits, targets).mean(), logits)[0]
    theirs = torch.autograd.grad(F.cross_entropy(logits, targets), logits)[0]
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("targets", [torch.zeros(4), torch.zeros(4, dtype=torch.bool)])
def test_cross_entropy_refuses_targets_that_are_not_class_indices(targets):
    with pytest.raises(ValueError, match="Invalid targets"):
        cross_entropy(torch.zeros(4, 3), targets)


def test_a_seeded_batch_update_is_what_the_plain_computation_gives():
    """One OVLR batch update (antithetic pairs, the paired signal) against the same update
    written out from its definition: v = sum_i w_i eps_i / sigma, then mu.backward(v), SGD."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()
    reference = [p.detach().clone() for p in model.parameters()]
    inputs = torch.randn(5, 6, dtype=torch.float64)
    targets = torch.randint(0, 4, (5,))
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), sigma=0.5, samples=6, seed=7)
    candidates = solver.ask(inputs)
    losses = cross_entropy(candidates, targets[:, None])
    eps = (candidates - model(inputs).detach()[:, None]) / 0.5
    solver.tell(losses)

    n = 6
    total, partner = losses.sum(1, keepdim=True), losses.roll(n // 2, dims=1)
    weights = (losses - (total - losses - partner) / (n - 2)) / n / losses.shape[0]
    v = torch.einsum("gn,gnd->gd", weights, eps) / 0.5
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()
    with torch.no_grad():
        for parameter, value in zip(fresh.parameters(), reference, strict=True):
            parameter.copy_(value)
    fresh(inputs).backward(v)
    for parameter, updated in zip(fresh.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(updated.detach(), parameter.detach() - 0.1 * parameter.grad)


@pytest.mark.parametrize("name", MODELS)
def test_paired_candidates_are_the_candidates_of_the_negated_pairs(name):
    model = set_up(name)
    half, mu = noise_and_mu(model, 3, 4, seed=2)
    expected = model.candidates(mu, torch.cat([half, -half], dim=1))
    if name.startswith("scaled") or name in ("laplace", "student_t"):
        assert torch.equal(model.paired_candidates(mu, half), expected)  # bit for bit: the same operations
    else:
        torch.testing.assert_close(model.paired_candidates(mu, half), expected)


@pytest.mark.parametrize("batched", [False, True])
def test_a_seeded_solver_asks_the_candidates_of_the_plain_antithetic_draw(batched):
    """The solver keeps only the first half of each pair; its candidates are those of the full
    draw cat([eps, -eps]) from the same generator state, and the noise it keeps is half."""
    policy = torch.nn.Linear(3, 5) if batched else bbopt.policies.LearnedVector(5)
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters()), sigma=0.3, samples=8, seed=11)
    inputs = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)) if batched else None
    generator = torch.Generator().manual_seed(11)
    candidates = solver.ask(inputs)
    with torch.no_grad():
        mu = policy(inputs) if batched else policy()[None]
    model = Scaled(0.3)
    model.setup(5, 8)
    eps = model.draw(mu.shape[0], 8, generator=generator, dtype=torch.float32, antithetic=True)
    expected = model.candidates(mu, eps)
    assert torch.equal(candidates, expected if batched else expected[0])
    assert solver._asked.noise.shape == (mu.shape[0], 4, 5)


@pytest.mark.parametrize("power", [2.0, 1.0, 1.5])
def test_the_truncated_loss_in_place_equals_its_definition_and_keeps_its_gradient(power):
    from bbopt.losses import TruncatedLoss

    generator = torch.Generator().manual_seed(4)
    outputs = torch.randn(6, 5, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(6, 1, 3, generator=generator, dtype=torch.float64)
    loss = TruncatedLoss(2.0, power=power)
    expected = (outputs - targets).abs().pow(power).sum(-1).clamp(max=2.0)
    torch.testing.assert_close(loss(outputs, targets), expected)
    leaf = outputs.clone().requires_grad_()
    ours = torch.autograd.grad(loss(leaf, targets).sum(), leaf)[0]
    plain = torch.autograd.grad((leaf - targets).abs().pow(power).sum(-1).clamp(max=2.0).sum(), leaf)[0]
    torch.testing.assert_close(ours, plain)
    before = outputs.clone()
    loss(outputs, targets)
    assert torch.equal(outputs, before)  # the candidates are not touched


def test_a_model_not_declared_paired_gets_the_signal_of_all_its_samples():
    """The half-noise form of the signal holds only for negated pairs of an odd family; a model
    with ``paired = False`` gets the plain sum over its n samples (here its "pairs" are not
    negations, so the half form would be wrong)."""

    class Unpaired(Scaled):
        paired = False

        def draw(self, groups, samples, *, generator, dtype, antithetic):
            return super().draw(groups, samples, generator=generator, dtype=dtype, antithetic=False)

    policy = bbopt.policies.LearnedVector(3, init=torch.tensor([1.0, -2.0, 0.5]))
    solver = bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.0), noise=Unpaired(0.5), samples=6,
                        baseline=False, seed=0)  # fmt: skip
    candidates = solver.ask()
    losses = (candidates**2).sum(1)
    eps = (candidates - policy().detach()) / 0.5
    solver.tell(losses)
    torch.testing.assert_close(policy.value.grad, (losses / 6) @ eps / 0.5)
