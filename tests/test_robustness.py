"""bbopt.robustness: the attacks raise a trained model's loss within their L-infinity bound, the
natural noises are seeded and stay in [0, 1], the model is left as it was, bad input."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from bbopt import robustness
from bbopt.policies import MLP


@pytest.fixture(scope="module")
def trained():
    images, labels = load_digits(return_X_y=True)
    images, labels = torch.tensor(images, dtype=torch.float32)[:600] / 16, torch.tensor(labels)[:600]
    model = MLP(64, 10, hidden=(32,), activation=nn.ReLU, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model, images[:200], labels[:200]


@pytest.mark.parametrize("kind", robustness.ATTACKS)
def test_attacks_raise_the_loss_within_the_bound(trained, kind):
    model, images, labels = trained
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    adversarial = robustness.attack(model, images, labels, kind, epsilon=0.1, steps=15, step_size=0.01)
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert float((adversarial - images).abs().max()) <= 0.1 + 1e-6
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    with torch.no_grad():
        clean = nn.functional.cross_entropy(model(images), labels)
        attacked = nn.functional.cross_entropy(model(adversarial), labels)
    assert float(attacked) > float(clean) + 0.5, (float(clean), float(attacked))


def test_evaluate_reports_every_condition_and_attacks_hurt_more_than_noise(trained):
    model, images, labels = trained
    scores = robustness.evaluate(model, images, labels, seed=0)
    assert list(scores) == ["clean", *robustness.NOISES, *robustness.ATTACKS]
    assert scores["clean"] > 0.9
    assert scores["ifgsm"] < scores["clean"] - 0.2 and scores["ifgsm"] < min(scores[k] for k in robustness.NOISES)
    assert scores == robustness.evaluate(model, images, labels, seed=0)  # seeded


@pytest.mark.parametrize("kind", robustness.NOISES)
def test_natural_noise_is_seeded_and_stays_in_the_unit_interval(kind):
    images = torch.rand(50, 64, generator=torch.Generator().manual_seed(0))
    first = robustness.natural_noise(images, kind, generator=torch.Generator().manual_seed(3))
    second = robustness.natural_noise(images, kind, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second) and not torch.equal(first, images)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_bad_kinds_and_bounds_are_refused(trained):
    model, images, labels = trained
    with pytest.raises(ValueError, match="Invalid attack: 'pgd'"):
        robustness.attack(model, images, labels, "pgd")
    with pytest.raises(ValueError, match="Invalid epsilon: 0"):
        robustness.attack(model, images, labels, "fgsm", epsilon=0)
    with pytest.raises(ValueError, match="Invalid noise: 'salt'"):
        robustness.natural_noise(images, "salt", generator=torch.Generator())


def test_bad_levels_steps_and_counts_are_refused(trained):
    model, images, labels = trained
    generator = torch.Generator().manual_seed(0)
    for options, message in [({"noise": float("nan")}, "Invalid noise: nan"), ({"noise": -0.1}, "Invalid noise"),
                             ({"photons": 0.0}, "Invalid photons: 0.0")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            robustness.natural_noise(images, "poisson", generator=generator, **options)
    for options in ({"steps": 0}, {"step_size": -0.01}, {"step_size": float("inf")}):
        with pytest.raises(ValueError, match="Invalid steps / step_size"):
            robustness.attack(model, images, labels, "ifgsm", **options)
    with pytest.raises(ValueError, match="Invalid epsilon: inf"):
        robustness.attack(model, images, labels, "fgsm", epsilon=float("inf"))
