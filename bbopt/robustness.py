"""Robustness of a trained classifier, whatever trained it: accuracy on clean inputs, under
natural noise and under white-box gradient attacks (the LR-method paper's protocol).

Inputs live in [0, 1]. Natural noise: Gaussian (std ``noise``), uniform (in ``[-noise, noise]``)
and Poisson (shot noise at ``photons`` counts per unit intensity), clipped to [0, 1]. Attacks on
the cross-entropy of the model's logits, within an L-infinity ball of radius ``epsilon`` and
clipped to [0, 1]: FGSM (one step of ``epsilon``), I-FGSM (``steps`` steps of ``step_size``)
and MI-FGSM (I-FGSM with momentum ``decay`` on the L1-normalized gradient; Dong et al. 2018).
The paper's setting: epsilon 0.1, 15 iterations, step 0.01.

    scores = bbopt.robustness.evaluate(model, images, labels, seed=0)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ATTACKS", "NOISES", "attack", "evaluate", "natural_noise"]

NOISES = ("gaussian", "uniform", "poisson")
ATTACKS = ("fgsm", "ifgsm", "mifgsm")


def natural_noise(inputs: torch.Tensor, kind: str, *, noise: float = 0.1, photons: float = 30.0,
                  generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """``inputs`` with natural noise of ``kind``, clipped to [0, 1]."""
    if not 0 <= noise < float("inf"):
        raise ValueError(f"Invalid noise: {noise} (expected a finite level >= 0)")
    if not 0 < photons < float("inf"):
        raise ValueError(f"Invalid photons: {photons} (expected a finite count > 0)")
    if kind == "gaussian":
        noisy = inputs + noise * torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)
    elif kind == "uniform":
        noisy = inputs + noise * (2 * torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype) - 1)
    elif kind == "poisson":
        noisy = torch.poisson(inputs.clamp(0, 1) * photons, generator=generator) / photons
    else:
        raise ValueError(f"Invalid noise: {kind!r} (expected one of {NOISES})")
    return noisy.clamp(0.0, 1.0)


def attack(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, kind: str, *, epsilon: float = 0.1,
           steps: int = 15, step_size: float = 0.01, decay: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Adversarial inputs of ``kind`` against ``model`` (its parameters untouched)."""
    if kind not in ATTACKS:
        raise ValueError(f"Invalid attack: {kind!r} (expected one of {ATTACKS})")
    if not 0 < epsilon < float("inf"):
        raise ValueError(f"Invalid epsilon: {epsilon} (expected > 0)")
    if kind != "fgsm" and (not isinstance(steps, int) or steps < 1 or not 0 < step_size < float("inf")):
        raise ValueError(f"Invalid steps / step_size: {steps} / {step_size} (expected an int >= 1 and a size > 0)")
    was_training = model.training
    model.eval()
    try:
        if kind == "fgsm":
            return _step(inputs, _gradient(model, inputs, labels).sign(), epsilon, inputs, epsilon)
        adversarial, momentum = inputs.clone(), torch.zeros_like(inputs)
        for _ in range(steps):
            gradient = _gradient(model, adversarial, labels)
            if kind == "mifgsm":
                norm = gradient.abs().flatten(1).sum(1).clamp_min(1e-12).reshape(-1, *[1] * (inputs.dim() - 1))
                momentum = decay * momentum + gradient / norm
                gradient = momentum
            adversarial = _step(adversarial, gradient.sign(), step_size, inputs, epsilon)
        return adversarial
    finally:
        model.train(was_training)


def _gradient(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(inputs), labels)
        (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient


def _step(current, direction, size, origin, epsilon):
    moved = torch.max(torch.min(current + size * direction, origin + epsilon), origin - epsilon)
    return moved.clamp(0.0, 1.0).detach()


@torch.no_grad()
def _accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    try:
        return float((model(inputs).argmax(-1) == labels).double().mean())
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, noise: float = 0.1,
             epsilon: float = 0.1, steps: int = 15, step_size: float = 0.01,
             attack_model: nn.Module | None = None) -> dict[str, float]:  # fmt: skip
    """Accuracy: ``clean``, each of `NOISES` and each of `ATTACKS`. ``attack_model``: the
    network whose gradients the attacks follow (default ``model``); for a model whose input
    gradient is zero (hard spikes), a twin with a surrogate derivative and the same weights, so
    that a zero gradient does not pass for robustness."""
    generator = torch.Generator().manual_seed(seed)
    scores = {"clean": _accuracy(model, inputs, labels)}
    for kind in NOISES:
        scores[kind] = _accuracy(model, natural_noise(inputs, kind, noise=noise, generator=generator), labels)
    for kind in ATTACKS:
        adversarial = attack(model if attack_model is None else attack_model, inputs, labels, kind, epsilon=epsilon,
                             steps=steps, step_size=step_size)  # fmt: skip
        scores[kind] = _accuracy(model, adversarial, labels)
    return scores
