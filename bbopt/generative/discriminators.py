"""Discriminators for `bbopt.generative.train_gan`: one differentiable, one not.

A discriminator says how real images look, ``logits(images[..., d]) -> [...]`` (a realness
logit per image), and learns from one batch of real and one of generated images,
``update(real[B, d], fake[B, d]) -> float`` (its loss). Only a differentiable one
(``differentiable = True``) can train a generator by backprop; a bbopt solver needs only the
logits, asked under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from bbopt.checks import check_int

__all__ = ["BackpropDiscriminator", "Discriminator", "RefittedClassifier"]


@runtime_checkable
class Discriminator(Protocol):
    differentiable: bool

    def logits(self, images: torch.Tensor) -> torch.Tensor: ...

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> float: ...


def _network_logits(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``network`` on ``images[..., d]`` flattened to a batch; its ``[M]`` or ``[M, 1]`` logits
    reshaped to ``[...]``."""
    flat = images.reshape(-1, images.shape[-1])
    logits = network(flat)
    if logits.shape not in ((flat.shape[0],), (flat.shape[0], 1)):
        raise ValueError(
            f"Invalid discriminator output: shape {list(logits.shape)} for {flat.shape[0]} images "
            f"(expected [{flat.shape[0]}] or [{flat.shape[0]}, 1])"
        )
    return logits.reshape(images.shape[:-1])


def _real_fake_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The standard discriminator loss per image: cross-entropy with real 1, generated 0."""
    return torch.cat([functional.softplus(-real_logits), functional.softplus(fake_logits)])


def check_image_rows(images, name: str) -> torch.Tensor:
    """A training set of images flattened to ``[N, d]`` (N >= 1), floating point and finite."""
    if not isinstance(images, torch.Tensor) or images.dim() != 2 or not images.is_floating_point() or len(images) < 1:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Invalid {name}: {shape} (expected images flattened to [N, d], floating point)")
    if not bool(torch.isfinite(images).all()):
        rows = torch.nonzero(~torch.isfinite(images).all(dim=1)).flatten()
        raise ValueError(f"Invalid {name}: non-finite pixels in {len(rows)} image(s), first at row {int(rows[0])}")
    return images


def _check_images(images, width: int | None, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() < 1 or not images.is_floating_point():
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Invalid {what}: {shape} (expected floating-point images [..., d])")
    if width is not None and images.shape[-1] != width:
        raise ValueError(f"Invalid {what}: images of width {images.shape[-1]} (expected {width})")
    return images


class BackpropDiscriminator:
    """A network ``images[B, d] -> [B, 1]`` (or ``[B]``) of realness logits, trained by
    backprop on the standard GAN loss: binary cross-entropy, real 1, generated 0."""

    differentiable = True

    def __init__(self, network: nn.Module, optimizer: torch.optim.Optimizer):
        if not isinstance(network, nn.Module):
            raise ValueError(f"Invalid network: {type(network).__name__} (expected a torch.nn.Module)")
        self.network, self.optimizer = network, optimizer
        self.width: int | None = None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return _network_logits(self.network, _check_images(images, self.width, "images"))

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        real, fake = _check_images(real, None, "real"), _check_images(fake, real.shape[-1], "fake")
        self.width = real.shape[-1]
        self.optimizer.zero_grad(set_to_none=True)
        loss = _real_fake_loss(self.logits(real), self.logits(fake.detach())).mean() * 2  # real mean + fake mean
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


class RefittedClassifier:
    """A non-differentiable discriminator: a scikit-learn classifier (``fit``,
    ``predict_proba``; trees, boosting, k-NN...) refitted every ``every`` updates on the last
    ``memory`` real and generated images. Its realness logit is ``log p - log(1 - p)`` with
    ``p`` clipped to ``[clip, 1 - clip]``; before its first fit it says 0 for every image.
    Only a bbopt solver can train a generator against it."""

    differentiable = False

    def __init__(self, classifier, *, every: int = 10, memory: int = 1024, clip: float = 1e-3):
        if not callable(getattr(classifier, "fit", None)) or not callable(getattr(classifier, "predict_proba", None)):
            raise ValueError(f"Invalid classifier: {type(classifier).__name__} (expected fit and predict_proba)")
        check_int(every, "every", minimum=1)
        check_int(memory, "memory", minimum=2)
        if not 0.0 < clip < 0.5:
            raise ValueError(f"Invalid clip: {clip!r} (expected a probability in (0, 0.5))")
        self.template, self.every, self.memory, self.clip = classifier, every, memory, clip
        self.fitted = None
        self.updates = 0
        self.real: torch.Tensor | None = None
        self.fake: torch.Tensor | None = None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        width = None if self.real is None else self.real.shape[-1]
        images = _check_images(images, width, "images")
        if self.fitted is None:
            return images.new_zeros(images.shape[:-1])
        flat = images.detach().reshape(-1, images.shape[-1]).cpu().numpy()
        probability = np.clip(self.fitted.predict_proba(flat)[:, 1], self.clip, 1.0 - self.clip)
        logits = np.log(probability) - np.log1p(-probability)
        return torch.as_tensor(logits, dtype=images.dtype, device=images.device).reshape(images.shape[:-1])

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        real = _check_images(real, None if self.real is None else self.real.shape[-1], "real").detach().cpu()
        fake = _check_images(fake, real.shape[-1], "fake").detach().cpu()
        self.real = real if self.real is None else torch.cat([self.real, real])[-self.memory :]
        self.fake = fake if self.fake is None else torch.cat([self.fake, fake])[-self.memory :]
        self.updates += 1
        if self.updates % self.every == 1 or self.every == 1:  # the first update fits, then every `every`
            images = torch.cat([self.real, self.fake]).numpy()
            labels = np.concatenate([np.ones(len(self.real)), np.zeros(len(self.fake))])
            self.fitted = copy.deepcopy(self.template).fit(images, labels)
        # the log-loss of the latest batch under the current fit (the history's discriminator loss)
        logits = self.logits(torch.cat([real, fake]))
        targets = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits.dtype)
        return float(functional.binary_cross_entropy_with_logits(logits, targets)) * 2
