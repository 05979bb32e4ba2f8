"""ES at the output: OpenAI-ES-style search with centered-rank utilities.

Salimans, Ho, Chen, Sidor, Sutskever, "Evolution Strategies as a Scalable Alternative to
Reinforcement Learning" (2017), applied to the policy's output instead of its parameters:

    v = sum_i u_i * score(eps_i) / (n * sigma),   u = centered ranks of the losses in [-0.5, 0.5]

(score(eps) = eps for Gaussian noise). Rank utilities make the update invariant to monotone
transforms of the loss. The noise model learns from the same utilities: with
``sigma=bbopt.sigma.Learned(..., natural=True)`` per dimension that is SNES (Schaul et al.,
2011), with `bbopt.noise.FullCovariance` xNES (Glasmachers et al., 2010), in output space.
"""

from __future__ import annotations

import torch

from bbopt.presets import Preset, cma_population, full_covariance
from bbopt.registry import register_solver
from bbopt.restarts import BIPOP
from bbopt.solver import Solver

__all__ = ["ES", "PRESETS", "centered_ranks"]

PRESETS = {
    # A fixed problem: xNES-style full covariance from the rank utilities, CSA, BIPOP (see OVLR's).
    "problem": Preset(
        optimizer=torch.optim.SGD,
        lr=1.5,
        sigma=1.0,
        noise=full_covariance(rate=2.0),
        samples=cma_population,
        restarts=BIPOP,
        options={"natural": True, "normalize": True},
    ),
    "batch": Preset(lr=1e-3, sigma=0.1, samples=16),
    "episodes": Preset(lr=0.003, sigma=0.3),
}


def centered_ranks(losses: torch.Tensor) -> torch.Tensor:
    """Ranks of ``losses[G, n]`` within each group mapped to ``[-0.5, 0.5]`` (worst -> +0.5).

    Tied losses share their average rank (on a plateau, equal losses carry equal weight; ranking
    them by position would inject weights that mean nothing), so the result is deterministic.
    """
    samples = losses.shape[1]
    if samples == 1:
        return torch.zeros_like(losses)
    order = torch.argsort(losses, dim=1, stable=True)
    ranks = torch.empty_like(losses).scatter_(1, order, torch.arange(samples, dtype=losses.dtype).expand_as(losses))
    # average over ties: the mean rank of the samples with the same loss, per group
    equal = losses[:, :, None] == losses[:, None, :]  # [G, n, n]
    ranks = (equal.to(losses.dtype) @ ranks[:, :, None])[:, :, 0] / equal.sum(-1)
    return ranks / (samples - 1) - 0.5


@register_solver("es", presets=PRESETS)
class ES(Solver):
    """Output-space ES. Options as `bbopt.Solver`; defaults Gaussian noise, ``antithetic=True``."""

    def __init__(self, policy, optimizer, *, antithetic: bool = True, **options):
        super().__init__(policy, optimizer, antithetic=antithetic, **options)

    def weights(self, losses, counts):
        return centered_ranks(losses) / losses.shape[1]
