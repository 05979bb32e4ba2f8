"""A variational auto-encoder whose reconstruction loss is a black box.

The decoder's output is the policy output: a bbopt solver perturbs it, the reconstruction
loss scores each candidate (no gradient needed), and one VJP runs back through the decoder,
the reparameterised latent and the encoder; the KL term, known in closed form, goes to the
same backward call by autograd (``solver.tell(losses, autograd_loss=kl.mean())``). So one
optimizer step minimises the negative ELBO ``E_q[-log p(x|z)] + KL(q(z|x) || N(0, I))``,
as backprop's does (Kingma and Welling 2014), with the reconstruction term estimated.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from bbopt.checks import check_int
from bbopt.generative.discriminators import check_image_rows
from bbopt.tracking import Tracker

__all__ = ["VAE", "GaussianReconstruction", "fit_vae"]


class GaussianReconstruction:
    """``-log N(images; reconstructions, scale^2 I)`` per image, in nats:
    ``|x - x_hat|^2 / (2 scale^2) + d log(scale sqrt(2 pi))``; shapes broadcast over ``[..., d]``."""

    def __init__(self, scale: float = 0.1):
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"Invalid scale: {scale!r} (expected a positive finite float)")
        self.scale = float(scale)

    def __call__(self, reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if reconstructions.shape[-1] != images.shape[-1]:
            raise ValueError(
                f"Invalid reconstructions: width {reconstructions.shape[-1]} for images of width {images.shape[-1]}"
            )
        squared = ((reconstructions - images) ** 2).sum(dim=-1)
        return squared / (2 * self.scale**2) + images.shape[-1] * math.log(self.scale * math.sqrt(2 * math.pi))

    def __repr__(self) -> str:
        return f"GaussianReconstruction(scale={self.scale})"


class VAE(nn.Module):
    """``forward(images[B, d]) -> reconstructions[B, d]`` through one reparameterised latent.

    ``encoder(images) -> [B, 2 * latent]`` (mean, then log-variance); ``decoder(z[B, latent])
    -> [B, d]``. The latent noise comes from the module's own generator (``seed``), never the
    global RNG; each forward leaves its per-image KL divergence in ``self.kl`` (``[B]``, on
    the graph), which the training loop adds to the loss.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, latent: int, seed: int = 0):
        super().__init__()
        check_int(latent, "latent", minimum=1)
        self.encoder, self.decoder, self.latent = encoder, decoder, latent
        self.generator = torch.Generator().manual_seed(int(seed))
        self.kl: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        reconstructions, self.kl = self.reconstruct(images, generator=self.generator)
        return reconstructions

    def reconstruct(self, images: torch.Tensor, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstructions[B, d], kl[B])`` with the latent noise drawn from ``generator``."""
        statistics = self.encoder(images)
        if statistics.dim() != 2 or statistics.shape != (images.shape[0], 2 * self.latent):
            raise ValueError(
                f"Invalid encoder output: shape {list(statistics.shape)} "
                f"(expected [{images.shape[0]}, {2 * self.latent}]: mean and log-variance)"
            )
        mean, log_variance = statistics.chunk(2, dim=-1)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        latents = mean + torch.exp(0.5 * log_variance) * noise
        kl = 0.5 * (mean**2 + log_variance.exp() - 1.0 - log_variance).sum(dim=-1)
        return self.decoder(latents), kl

    @torch.no_grad()
    def sample(self, count: int, *, generator: torch.Generator) -> torch.Tensor:
        """``count`` images decoded from prior latents ``z ~ N(0, I)``."""
        parameter = next(self.decoder.parameters())
        latents = torch.randn(count, self.latent, generator=generator, dtype=parameter.dtype)
        return self.decoder(latents.to(parameter.device))


@torch.no_grad()
def evaluate_vae(vae: VAE, images: torch.Tensor, reconstruction, *, seed: int = 0) -> dict[str, float]:
    """On held-out ``images``: ``elbo`` (one-latent estimate, nats per image, higher is better)
    and ``squared_error`` (per image) of the clean reconstructions, latents drawn from ``seed``."""
    reconstructions, kl = vae.reconstruct(images, generator=torch.Generator().manual_seed(int(seed)))
    return {
        "elbo": float(-(reconstruction(reconstructions, images) + kl).mean()),
        "squared_error": float(((reconstructions - images) ** 2).sum(dim=-1).mean()),
    }


def fit_vae(
    vae: VAE,
    images: torch.Tensor,
    *,
    epochs: int,
    reconstruction=None,
    batch_size: int = 64,
    solver=None,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    eval_images: torch.Tensor | None = None,
    progress: bool = True,
    tracker: Tracker | None = None,
) -> list[dict[str, float]]:
    """Train ``vae`` on ``images[N, d]`` for ``epochs`` shuffled passes (``seed``).

    Give exactly one of ``solver`` (a bbopt solver over ``vae``, batch mode: the reconstruction
    loss is a black box) or ``optimizer`` (backprop). ``reconstruction(x_hat[..., d],
    x[..., d]) -> [...]`` is the negative log-likelihood (default `GaussianReconstruction()`).
    Returns one record per epoch: ``train_loss`` (mean negative ELBO of the epoch's batches;
    with a solver, of its candidates, which the output noise raises by its own variance
    term), ``seconds``, and with ``eval_images`` their ``elbo`` and ``squared_error``.
    """
    reconstruction = GaussianReconstruction() if reconstruction is None else reconstruction
    if (solver is None) == (optimizer is None):
        raise ValueError("Invalid solver/optimizer: give exactly one (a bbopt solver, or an optimizer for backprop)")
    if solver is not None and solver.policy is not vae:
        raise ValueError("Invalid solver: it must be built on the VAE being trained")
    check_int(epochs, "epochs", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    check_image_rows(images, "images")
    if eval_images is not None:
        check_image_rows(eval_images, "eval_images")
    if eval_images is not None and eval_images.shape[1] != images.shape[1]:
        raise ValueError(f"Invalid eval_images: width {eval_images.shape[1]} (expected {images.shape[1]})")
    order_rng = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, float]] = []
    for epoch in tqdm(range(1, epochs + 1), disable=not progress, desc="vae", leave=False):
        began, total = time.perf_counter(), 0.0
        vae.train()
        for batch in torch.randperm(len(images), generator=order_rng).split(batch_size):
            inputs = images[batch]
            if solver is not None:
                candidates = solver.ask(inputs)  # [B, n, d]: one encoder-decoder forward
                kl = vae.kl
                with torch.no_grad():
                    losses = reconstruction(candidates, inputs[:, None])
                solver.tell(losses, autograd_loss=kl.mean())  # the VJP and the KL's gradient, one step
                total += float((losses.mean(dim=1) + kl.detach()).sum())
            else:
                optimizer.zero_grad(set_to_none=True)
                losses = reconstruction(vae(inputs), inputs) + vae.kl
                losses.mean().backward()
                optimizer.step()
                total += float(losses.detach().sum())
        record = {"epoch": float(epoch), "train_loss": total / len(images), "seconds": time.perf_counter() - began}
        if eval_images is not None:
            vae.eval()
            record |= evaluate_vae(vae, eval_images, reconstruction, seed=seed)
        history.append(record)
        if tracker is not None:
            tracker.log(record, step=epoch)
    return history
