"""Bits: Bernoulli noise on logits, for pseudo-Boolean problems."""

from __future__ import annotations

import math

import torch

from bbopt.checks import check_float
from bbopt.noise.model import NoiseModel

__all__ = ["Bernoulli"]


class Bernoulli(NoiseModel):
    """Candidates are bits ``x_j ~ Bernoulli(p_j)`` (as floats 0/1) with
    ``p = m + (1 - 2m) sigmoid(mu)``: the policy's output ``mu`` are logits and the margin ``m``
    (default ``1/d``) keeps every bit's flip probability at least ``m``, so a run can still make
    single-bit moves late on (the (1+1)-EA's standard mutation rate), however far the logits go.

    Draws are uniforms ``u``, ``x = [u < p]``; antithetic pairs use ``1 - u`` (negatively
    correlated bits). Signals: the likelihood-ratio gradient w.r.t. the logits,
    ``sum_i w_i (x_i - p) / (p (1 - p)) * dp/dmu``, or (``natural=True``) ``sum_i w_i (x_i - p)``,
    the gradient in the expectation parameters (PBIL's / CEM's move toward good bits), without
    its components that push a logit further past saturation (``|mu| >= logit(1 - m)``). No step
    size: the sigma rule must be `bbopt.sigma.Fixed` (its value is ignored).
    """

    def __init__(self, *, margin: float | None = None):
        super().__init__(1.0)
        self.margin = None if margin is None else check_float(margin, "margin", above=0.0, below=0.5)

    def setup(self, dimension, samples):
        super().setup(dimension, samples)
        if self.margin is None:
            self.margin = min(1.0 / dimension, 0.25)

    def probability(self, mu: torch.Tensor) -> torch.Tensor:
        """``p[..., d]`` for logits ``mu``."""
        return self.margin + (1 - 2 * self.margin) * torch.sigmoid(mu)

    def draw(self, groups, samples, *, generator, dtype, antithetic):
        half = samples // 2 if antithetic else samples
        u = self.uniforms(groups, half, generator=generator, dtype=dtype)
        return torch.cat([u, 1 - u], dim=1) if antithetic else u

    paired = False  # pairs are (u, 1 - u), not negations

    def candidates(self, mu, eps):
        return (eps < self.probability(mu)[:, None, :]).to(eps.dtype)

    def perturbation(self, eps):
        raise NotImplementedError("Bernoulli candidates are not mu plus a perturbation; see candidates()")

    def signal(self, mu, weights, eps, *, natural, pairs=False):  # pairs (u, 1 - u) are no negations: unused
        p = self.probability(mu)[:, None, :]
        deviation = (eps < p).to(eps.dtype) - p  # x - p, [rows, k, d]
        if not natural:
            s = torch.sigmoid(mu)[:, None, :]
            deviation = deviation * ((1 - 2 * self.margin) * s * (1 - s)) / (p * (1 - p))
            return torch.bmm(weights[:, None, :], deviation)[:, 0]
        v = torch.bmm(weights[:, None, :], deviation)[:, 0]
        # Past saturation (|mu| >= logit(1 - m)) p no longer changes: drop the pushes further out
        # (a projected step), else rare flips kick the logits ever further and no later flip
        # can bring them back.
        saturation = math.log((1 - self.margin) / self.margin)
        outward = ((mu >= saturation) & (v < 0)) | ((mu <= -saturation) & (v > 0))
        return torch.where(outward, torch.zeros_like(v), v)

    def update(self, weights, eps, *, pairs):
        if self.sigma.learns:
            raise ValueError("Invalid sigma: Bernoulli noise has no step size to learn (use a fixed sigma)")
        self.sigma.step(None)

    def spread(self):
        return 0.5

    def condition(self):
        return 1.0

    def extra_repr(self):
        return f"dimension={self.dimension}, margin={self.margin}"
