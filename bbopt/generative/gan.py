"""GAN training where the generator learns from the discriminator as a black box.

Per step, with ``B`` real images and ``B`` latents ``z ~ N(0, I)``:

1. the discriminator learns from the real batch and the generator's clean images
   ``G(z)`` (detached);
2. the generator, on fresh latents: with a bbopt ``solver``, ``x = solver.ask(z)`` gives
   ``[B, n, d]`` perturbed images around ``G(z)``, the discriminator scores them under
   ``torch.no_grad()`` and ``solver.tell(generator_loss(logits))`` makes one VJP through the
   generator only; with ``optimizer`` (backprop, the baseline) the same loss on ``G(z)`` is
   differentiated through the discriminator.

The generator's loss is the non-saturating ``-log D(x) = softplus(-logit)`` (Goodfellow et al.
2014). Both ways share data order, latents, networks and step count; the solver queries the
discriminator ``n`` times per latent where backprop queries it once and differentiates it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional
from tqdm.auto import tqdm

from bbopt.checks import check_int
from bbopt.generative.discriminators import Discriminator, check_image_rows
from bbopt.tracking import Tracker

__all__ = ["generator_loss", "train_gan"]


def generator_loss(logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss ``-log sigmoid(logit)`` per image."""
    return functional.softplus(-logits)


def train_gan(
    generator: nn.Module,
    discriminator: Discriminator,
    images: torch.Tensor,
    *,
    steps: int,
    latent: int,
    batch_size: int = 64,
    solver=None,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    evaluate_every: int | None = None,
    progress: bool = True,
    tracker: Tracker | None = None,
) -> list[dict[str, float]]:
    """Train ``generator`` (``z[B, latent] -> [B, d]``) against ``discriminator`` on the real
    ``images[N, d]`` for ``steps`` steps.

    Give exactly one of ``solver`` (a bbopt solver over ``generator`` in batch mode: the
    black-box path) or ``optimizer`` (backprop through a differentiable discriminator).
    ``seed`` draws the real batches and the latents (the solver has its own seed).
    ``evaluate(generator) -> metrics`` runs under ``torch.no_grad()`` before the first step,
    every ``evaluate_every`` steps and after the last. Returns one record per evaluation: ``step``,
    ``discriminator_loss`` and ``generator_loss`` (means since the previous record),
    ``seconds`` (training time since the previous record) and the metrics; ``tracker`` gets
    each record at its step.
    """
    if (solver is None) == (optimizer is None):
        raise ValueError("Invalid solver/optimizer: give exactly one (a bbopt solver, or an optimizer for backprop)")
    if solver is not None and solver.policy is not generator:
        raise ValueError("Invalid solver: it must be built on the generator being trained")
    if not isinstance(discriminator, Discriminator):
        raise ValueError(f"Invalid discriminator: {type(discriminator).__name__} (expected logits() and update())")
    if optimizer is not None and not discriminator.differentiable:
        raise ValueError(
            f"Invalid optimizer: {type(discriminator).__name__} is not differentiable, so backprop cannot train "
            "the generator against it; use a bbopt solver"
        )
    check_int(steps, "steps", minimum=1)
    check_int(latent, "latent", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    if evaluate_every is not None:
        check_int(evaluate_every, "evaluate_every", minimum=1)
    check_image_rows(images, "images")
    generator_rng = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, float]] = []
    totals = {"discriminator_loss": 0.0, "generator_loss": 0.0, "seconds": 0.0}
    since = 0

    def record(step: int) -> None:
        nonlocal totals, since
        entry = {"step": float(step)}
        entry |= {key: (value / since if since and key != "seconds" else value) for key, value in totals.items()}
        if evaluate is not None:
            with torch.no_grad():
                entry |= evaluate(generator)
        history.append(entry)
        if tracker is not None:
            tracker.log(entry, step=step)
        totals, since = dict.fromkeys(totals, 0.0), 0

    record(0)
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="gan", leave=False):
        began = time.perf_counter()
        real = images[torch.randint(len(images), (batch_size,), generator=generator_rng)]
        latents = torch.randn(batch_size, latent, generator=generator_rng, dtype=images.dtype)
        with torch.no_grad():
            fake = generator(latents)
        if fake.shape != real.shape:
            raise ValueError(
                f"Invalid generator output: shape {list(fake.shape)} (expected {list(real.shape)}, the real images')"
            )
        totals["discriminator_loss"] += discriminator.update(real, fake)
        latents = torch.randn(batch_size, latent, generator=generator_rng, dtype=images.dtype)
        if solver is not None:
            candidates = solver.ask(latents)  # [B, n, d]: one generator forward
            with torch.no_grad():
                losses = generator_loss(discriminator.logits(candidates))
            solver.tell(losses)  # one VJP through the generator; the discriminator is never differentiated
        else:
            optimizer.zero_grad(set_to_none=True)
            losses = generator_loss(discriminator.logits(generator(latents)))
            losses.mean().backward()  # through the discriminator (its own update clears its gradients)
            optimizer.step()
        totals["generator_loss"] += float(losses.detach().mean())
        totals["seconds"] += time.perf_counter() - began
        since += 1
        if step == steps or (evaluate_every is not None and step % evaluate_every == 0):
            record(step)
    return history
