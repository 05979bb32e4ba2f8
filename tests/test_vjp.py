"""Unbiased randomized VJPs (issue 13, part 3): `bbopt.vjp.randomize`."""

import math

import pytest
import torch
from torch import nn

import bbopt
from bbopt.vjp import keep_probabilities, randomize


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 5)).double()


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 4, 3, stride=2), nn.Flatten(),
                         nn.Linear(36, 3)).double()  # fmt: skip


def gradients(model, inputs):
    model.zero_grad(set_to_none=True)
    (model(inputs) ** 2).sum().backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


INPUTS = {"mlp": torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
          "cnn": torch.randn(3, 2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))}  # fmt: skip
MODELS = {"mlp": mlp, "cnn": cnn}


@pytest.mark.parametrize("name", MODELS)
def test_keep_1_is_the_exact_backward_and_restores_it(name):
    exact = gradients(MODELS[name](), INPUTS[name])
    model = randomize(MODELS[name](), keep=1.0)
    torch.testing.assert_close(gradients(model, INPUTS[name]), exact)
    randomize(model, keep=0.5, seed=0)
    assert not torch.allclose(gradients(model, INPUTS[name]), exact)
    randomize(model, keep=1.0)
    assert all("forward" not in m.__dict__ for m in model.modules())
    torch.testing.assert_close(gradients(model, INPUTS[name]), exact)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("rule", ["magnitude", "uniform"])
def test_the_randomized_gradient_is_unbiased(name, rule):
    exact = gradients(MODELS[name](), INPUTS[name])
    model = randomize(MODELS[name](), keep=0.5, rule=rule, seed=3)
    draws = torch.stack([gradients(model, INPUTS[name]) for _ in range(3000)])
    error = draws.std(0) / math.sqrt(len(draws))
    moving = error > 1e-12  # entries that the randomization touches
    z = (draws.mean(0) - exact).abs()[moving] / error[moving]
    assert float(z.max()) < 5.0, float(z.max())
    torch.testing.assert_close(draws.mean(0)[~moving], exact[~moving])


def test_magnitude_probabilities_fill_the_budget_and_follow_the_scores():
    scores = torch.tensor([10.0, 1.0, 1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    p = keep_probabilities(scores, 0.5, "magnitude")
    assert float(p.sum()) == pytest.approx(3.0) and float(p.max()) <= 1.0 and p[4] == 0 and p[0] == 1.0
    assert p[5] > p[1] > p[3]  # proportional below the cap
    torch.testing.assert_close(p[1:4] / scores[1:4], torch.full((3,), float(p[1] / scores[1]), dtype=torch.float64))
    assert torch.equal(keep_probabilities(torch.tensor([0.0, 3.0, 0.0, 0.0]), 0.5, "magnitude"),
                       torch.tensor([0.0, 1.0, 0.0, 0.0]))  # fmt: skip


def test_ovlr_one_vjp_through_a_randomized_model_is_unbiased():
    inputs = INPUTS["mlp"]

    def ovlr_gradient(model, seed):
        solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.0), sigma=0.5, samples=4, seed=seed)
        candidates = solver.ask(inputs)
        solver.tell((candidates**2).sum(-1))
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    exact_model, random_model = mlp(), randomize(mlp(), keep=0.5, seed=1)
    difference = torch.stack([ovlr_gradient(random_model, s) - ovlr_gradient(exact_model, s) for s in range(1500)])
    z = difference.mean(0).abs() / (difference.std(0) / math.sqrt(len(difference))).clamp_min(1e-12)
    assert float(z.max()) < 5.0  # same noise, same v: the randomized VJP adds zero-mean error only


@pytest.mark.parametrize("keep, rule, message", [(0.0, "magnitude", "Invalid keep"), (1.5, "uniform", "Invalid keep"),
                                                 (0.5, "random", "Invalid rule")])  # fmt: skip
def test_bad_arguments(keep, rule, message):
    with pytest.raises(ValueError, match=message):
        randomize(mlp(), keep=keep, rule=rule)


def test_bad_layers():
    with pytest.raises(ValueError, match="not modules of the model"):
        randomize(mlp(), layers=["nope"])
    with pytest.raises(ValueError, match=r"not nn\.Linear or nn\.Conv2d"):
        randomize(mlp(), layers=["1"])
    with pytest.raises(ValueError, match="groups=1"):
        randomize(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), keep=0.5)


@pytest.mark.parametrize("rule", ["magnitude", "uniform"])
def test_a_nan_gradient_is_not_dropped(rule):
    model = randomize(mlp(), keep=0.25, rule=rule, seed=0)
    model.zero_grad(set_to_none=True)
    outputs = model(INPUTS["mlp"])
    (outputs * torch.tensor([float("nan"), 1, 1, 1, 1], dtype=torch.float64)).sum().backward()
    assert all(bool(torch.isnan(p.grad).any()) for p in model.parameters())  # as the exact backward has it
