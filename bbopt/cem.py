"""CEM at the output: the cross-entropy method as regression of the policy onto its elites.

Rubinstein & Kroese, "The Cross-Entropy Method" (2004). Per group, the k = ceil(elite_fraction
* n) lowest-loss candidates are the elites; the signal is the gradient of
``1/2 ||mu - mean of elite candidates||^2``,

    v = mean over elites e of (mu - x_e) = -sigma * mean_e eps_e,

so plain SGD with lr = 1 on a learned vector is classic CEM (mu <- elite mean), and a network
``mu(s)`` regresses onto the elites' outputs (in episode mode: onto the actions the elite
episodes took, over all their steps). Sigma follows the elite spread: the rule receives
``log sigma - log(elite std)`` as its gradient, so with ``sigma_rate = 1`` (default) the new
sigma is the elites' standard deviation per dimension (pooled over dimensions for a scalar
sigma), never below ``sigma_floor``.
"""

from __future__ import annotations

import math

import torch

from bbopt.registry import register_solver
from bbopt.sigma import Learned, SigmaRule
from bbopt.solver import Solver

__all__ = ["CEM"]


@register_solver("cem")
class CEM(Solver):
    """Cross-entropy method. Options as `bbopt.Solver`, plus:

    Args:
        elite_fraction: share of each group kept as elites, in (0, 1]; at least 2 elites.
        sigma_floor: lower bound of the adapted sigma.
        sigma_rate: step on ``log sigma`` toward the elite spread, in (0, 1] (1: jump to it;
            the default 0.3 smooths it, as plain CEM shrinks sigma too fast and stalls).

    A float or sequence ``sigma`` is the initial value of that adaptation; pass a
    `bbopt.sigma.SigmaRule` (e.g. ``Fixed``) to override it.
    """

    step_credit = False  # elites are whole episodes

    def __init__(
        self,
        policy,
        optimizer,
        *,
        sigma=0.5,
        elite_fraction: float = 0.25,
        sigma_floor: float = 1e-8,
        sigma_rate: float = 0.3,
        **options,
    ):
        if not (isinstance(elite_fraction, float | int) and 0.0 < elite_fraction <= 1.0):
            raise ValueError(f"Invalid elite_fraction: {elite_fraction!r} (expected a float in (0, 1])")
        if not (isinstance(sigma_floor, float | int) and 0.0 < sigma_floor < math.inf):
            raise ValueError(f"Invalid sigma_floor: {sigma_floor!r} (expected a finite float > 0)")
        if not (isinstance(sigma_rate, float | int) and 0.0 < sigma_rate <= 1.0):
            raise ValueError(f"Invalid sigma_rate: {sigma_rate!r} (expected a float in (0, 1])")
        if not isinstance(sigma, SigmaRule):
            sigma = Learned(sigma, lr=sigma_rate, floor=sigma_floor, adaptive=False)
        super().__init__(policy, optimizer, sigma=sigma, **options)
        self.elite_fraction = float(elite_fraction)
        group_size = self.episodes if self.episodes is not None else self.samples
        self.elites = math.ceil(self.elite_fraction * group_size)
        if self.elites < 2:
            raise ValueError(
                f"Invalid elite_fraction: {elite_fraction} keeps {self.elites} of {group_size} samples "
                "(expected at least 2 elites to measure their spread)"
            )

    def weights(self, losses, counts):
        elite = torch.zeros_like(losses)
        best = torch.argsort(losses, dim=1, stable=True)[:, : self.elites]
        elite.scatter_(1, best, 1.0)
        # Mean over the elites' records: 1/k per elite outside episode mode.
        return elite / (elite * counts).sum(dim=1, keepdim=True)

    def output_signal(self, weights, noise, sigma):
        # mu - x summed over the weighted elite candidates: -sigma * sum_k w_k eps_k
        return -sigma * torch.bmm(weights[:, None, :], noise)[:, 0]

    def log_sigma_gradient(self, weights, noise, shape):
        """``log sigma - log(elite std)``, averaged over groups, in sigma's shape."""
        total = weights.sum(dim=1, keepdim=True)  # [G, 1]
        mean = torch.bmm(weights[:, None, :], noise)[:, 0] / total  # elite mean of eps, [G, d]
        deviation = noise - mean[:, None, :]
        variance = torch.bmm(weights[:, None, :], deviation**2)[:, 0] / total  # [G, d]
        if len(shape) == 0:
            variance = variance.mean(dim=1, keepdim=True)
        # In units of sigma: new sigma = sigma * elite std of eps (with sigma_rate = 1).
        log_std = 0.5 * torch.log(variance.clamp_min(torch.finfo(variance.dtype).tiny))
        gradient = -log_std.mean(dim=0).to(torch.float64)
        return gradient[0] if len(shape) == 0 else gradient
