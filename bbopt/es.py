"""ES at the output: OpenAI-ES-style search with centered-rank utilities.

Salimans, Ho, Chen, Sidor, Sutskever, "Evolution Strategies as a Scalable Alternative to
Reinforcement Learning" (2017), applied to the policy's output instead of its parameters:

    v = sum_i u_i * score(eps_i) / (n * sigma),   u = centered ranks of the losses in [-0.5, 0.5]

(score(eps) = eps for Gaussian noise). Rank utilities make the update invariant to monotone
transforms of the loss. Sigma adaptation is optional: pass ``sigma=bbopt.sigma.Learned(...)``
and the same utilities give the ``log sigma`` gradient ``sum_i u_i (eps_i^2 - 1) / n``
(the SNES / PGPE rule).
"""

from __future__ import annotations

import torch

from bbopt.registry import register_solver
from bbopt.solver import Solver

__all__ = ["ES", "centered_ranks"]


def centered_ranks(losses: torch.Tensor) -> torch.Tensor:
    """Ranks of ``losses[G, n]`` within each group mapped to ``[-0.5, 0.5]`` (worst -> +0.5).

    Ties are broken by position (stable sort), so the result is deterministic.
    """
    samples = losses.shape[1]
    order = torch.argsort(losses, dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(samples).expand_as(order))
    if samples == 1:
        return torch.zeros_like(losses)
    return ranks.to(losses.dtype) / (samples - 1) - 0.5


@register_solver("es")
class ES(Solver):
    """Output-space ES. Options as `bbopt.Solver`; defaults Gaussian noise, ``antithetic=True``."""

    def __init__(self, policy, optimizer, *, antithetic: bool = True, **options):
        super().__init__(policy, optimizer, antithetic=antithetic, **options)

    def weights(self, losses, counts):
        return centered_ranks(losses) / losses.shape[1]
