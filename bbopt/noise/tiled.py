"""One noise vector repeated over the blocks of the output: noise on a chunk as a whole.

A chunk policy's output is ``k`` blocks of ``a`` actions (steps t .. t + k - 1), and the env
executes at each step the temporal ensemble of the chunks so far (`bbopt.rollout.chunking`), an
average over about k chunks. Independent noise on every entry is averaged down by it (to about a
third of sigma at k = 10 and ACT's decay) and spreads the likelihood-ratio estimate over ``k a``
dimensions, most of which act little. `Tiled` draws ``a`` numbers per candidate and adds the
same ``sigma * eps`` to each block. The executed action then averages the draws of the last k
steps: with noise correlated over time (AR(1) at 0.95, ``correlation=``) they nearly agree and it
moves by 0.92 sigma (k = 10, ACT's decay 0.1); with independent steps they average down as before
(0.33 sigma).

The candidates then lie in the ``a``-dimensional subspace ``mu + S B eps`` (``B`` repeats a
vector over the k blocks, ``S = diag(sigma)``), and what the noise can tell about is the loss's
gradient in that subspace only. The gradient signal is the projection of the likelihood-ratio
estimate onto it: ``v = S B (B^T S^2 B)^{-1} sum_i w_i eps_i``, whose inner product with any
direction ``S B u`` the noise explores is the estimate of that direction's derivative,
``sum_i w_i eps_i . u`` (Gaussian score ``eps``). Per entry (block j, action i) that is
``sigma_ji g_i / sum_j' sigma_j'i^2`` with ``g = sum_i w_i eps_i``: with one sigma for every
block, ``g_i / (k sigma_i)``. So the estimate is unbiased for the gradient's component along the
explored directions, not for the whole gradient (the other components are zero): the policy is
moved only in ways the noise tried.

The step size is fixed or scheduled (a learned rule would need its own score over the ``a``
noise dimensions); a ``[k a]`` sigma gives each entry its own scale. Gaussian noise only, so
AR(1) correlation over time (``correlation=``) applies as with `bbopt.noise.Scaled`: its score
replaces ``eps`` in the same formula.
"""

from __future__ import annotations

import torch

from bbopt.checks import check_int
from bbopt.noise.model import NoiseModel

__all__ = ["Tiled"]


class Tiled(NoiseModel):
    """``x = mu + sigma * repeat(eps, repeats)``: ``eps`` has ``d / repeats`` entries, repeated
    over the ``repeats`` consecutive blocks of the output (the module docstring has the signal).

    Args:
        sigma: a fixed or scheduled step size: a float, or one per output dimension ``[d]``.
        repeats: how many blocks the output holds (a chunk policy's chunk length).
    """

    takes_sequence_score = True

    def __init__(self, sigma=0.1, *, repeats: int):
        super().__init__(sigma, family="gaussian")
        if self.sigma.learns:
            raise ValueError(
                f"Invalid sigma: Tiled takes a fixed or scheduled step size, not {type(self.sigma).__name__}"
            )
        self.repeats = check_int(repeats, "repeats", minimum=1)
        self._inverse_cache: tuple | None = None

    def setup(self, dimension, samples):
        if dimension % self.repeats:
            raise ValueError(f"Invalid policy output: dimension {dimension} is not {self.repeats} blocks (repeats)")
        super().setup(dimension, samples)
        self.width = dimension // self.repeats

    def perturbation(self, eps):
        return self.scale(eps) * eps.repeat(*([1] * (eps.dim() - 1)), self.repeats)

    def _projection(self, like: torch.Tensor) -> torch.Tensor:
        """``[d]``: ``sigma_ji / sum_j' sigma_j'i^2``, the factor of ``g_i`` at entry (j, i); formed
        in float64 (sigma's squares under- or overflow float32 where ``1 / sigma`` does not)."""
        key = (self.sigma.version, like.dtype, like.device)
        if self._inverse_cache is None or self._inverse_cache[0] != key:
            scale = self.sigma.value().to(torch.float64).expand(self.dimension)
            per_action = scale.reshape(self.repeats, self.width).square().sum(dim=0)
            projection = scale / per_action.repeat(self.repeats)
            self._inverse_cache = (key, projection.to(device=like.device, dtype=like.dtype))
        return self._inverse_cache[1]

    def gradient_signal(self, mu, weights, eps):
        g = torch.bmm(weights[:, None, :], eps)[:, 0]  # Gaussian score: eps
        return self._projection(g) * g.repeat(1, self.repeats)

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}, dimension={self.dimension}"
