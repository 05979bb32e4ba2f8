"""The noise model: the distribution of candidates around the policy's output ``mu``.

A solver holds one model. The model draws standard noise ``eps`` from a family, turns it into
candidates (``x = mu + sigma * A eps`` for the Gaussian-like models), gives the output signal
that the one VJP sends into the policy, and updates its own parameters (step size, shape) from
the solver's weights on the samples. The same model serves all three modes; its shape is over
the d output dimensions and shared by every input.

Weights follow one convention for every solver: ``w_i`` is the weight of sample i in the
solver's estimate of the gradient of the expected loss, positive for bad samples (OVLR: loss
minus baseline; ES: centered ranks; CEM: ``-1/k`` on the k elites).

* ``signal(..., natural=False)``: ``sum_i w_i grad_mu log p(x_i)``, the likelihood-ratio
  gradient of ``E[loss]`` w.r.t. ``mu`` (Gaussian, scaled: ``sum_i w_i eps_i / sigma``);
* ``signal(..., natural=True)``: ``sum_i w_i (x_i - mu)``, the same preconditioned by the
  covariance (the natural gradient for Gaussian noise; CEM's regression onto its elites);
* ``update(weights, eps, pairs)``: the step-size rule gets a `bbopt.sigma.Feedback`; models
  with a learned shape (`bbopt.noise.Diagonal`, `bbopt.noise.FullCovariance`,
  `bbopt.noise.LowRank`) update it too.

With antithetic pairs (``pairs=True``: sample ``i + n/2`` is the negation of sample ``i``),
a pair's weights split into an odd part ``w_i - w_i'`` (what moves the mean) and an even part
``w_i + w_i'`` (what changes the spread): the whitened step is built from the first, shape
updates from the second.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bbopt.noise.families import Noise, make_noise
from bbopt.noise.qmc import Sobol
from bbopt.sigma import Feedback, SigmaRule, SigmaValue, as_sigma_rule

__all__ = ["NoiseModel", "Scaled", "odd_weights", "split_pairs"]


def odd_weights(weights: torch.Tensor) -> torch.Tensor:
    """``w_i - w_{i+h}`` for the antithetic pairs ``(i, i + h)`` of ``weights[G, 2h]``."""
    half = weights.shape[1] // 2
    return weights[:, :half] - weights[:, half:]


def split_pairs(weights: torch.Tensor, eps: torch.Tensor, pairs: bool):
    """``(odd[G, h], even[G, h], independent_eps[G, h, k])``: the weights on independent draws.

    With pairs, ``h = n/2``, ``odd = w_i - w_{i+h}``, ``even = w_i + w_{i+h}``; else ``h = n``
    and both are ``w``."""
    if not pairs:
        return weights, weights, eps
    half = weights.shape[1] // 2
    return odd_weights(weights), weights[:, :half] + weights[:, half:], eps[:, :half]


def selected_steps(weights: torch.Tensor, eps: torch.Tensor, pairs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(step, direction)``, each ``[k]``: the move of the natural signal, ``-sum_j odd_j eps_j``
    over the independent draws, in two scalings that are ``N(0, I)`` under random selection
    (weights that ignore the draws).

    * ``step`` (`bbopt.sigma.CSA` follows it) is divided by its *expected* length under random
      selection (the same weights randomly permuted within each group), so it keeps the mean
      move's size. That matters: with antithetic pairs the odd parts ``w_j - w_{j+h}`` shrink
      when the two members of each pair score alike (a step size far beyond the distance to the
      optimum, where the loss is all in the even part); divided by their own norm, the step would
      hide that and CSA would grow sigma without end (it did, at 32 or more samples).
    * ``direction`` (the rank-one paths of `bbopt.noise.Diagonal` and `FullCovariance` follow it)
      is divided by the odd parts' own norm: only where the mean went, exactly Gaussian under
      random selection.

    With no spread in the weights (ties everywhere) both are the step of random selection; so
    are they when only the odd parts vanish (every pair ties, the pairs differ: a loss symmetric
    about mu), where the mean did not move at all.
    """
    weights, eps = weights.to(torch.float64), eps.to(torch.float64)
    odd, _, independent = split_pairs(weights, eps, pairs)
    move = -torch.einsum("gh,ghd->d", odd, independent)
    if pairs:  # E (w_a - w_b)^2 over a random pair a != b: 2 n Var(w) / (n - 1), per group
        samples = weights.shape[1]
        expected = odd.shape[1] * 2 * samples / (samples - 1) * weights.var(dim=1, unbiased=False).sum()
    else:
        expected = weights.square().sum()
    realized = odd.square().sum()
    if float(expected) <= 0 or float(realized) <= 0:  # no information: random selection of equal weights
        random = independent.sum(dim=(0, 1)) / math.sqrt(independent.shape[0] * independent.shape[1])
        return random, random
    return move / expected.sqrt(), move / realized.sqrt()


class NoiseModel(nn.Module):
    """Base class. Subclasses set ``width`` (noise entries per candidate) in `setup` and write
    `perturbation`, `gradient_signal` and optionally `update_shape`.

    Args:
        sigma: the step-size rule (`bbopt.sigma`); a float or ``[d]`` sequence means `Fixed`.
        family: ``"gaussian" | "laplace" | "student_t"`` or a `bbopt.noise.Noise`.
        df: degrees of freedom of Student-t noise.
    """

    def __init__(self, sigma: SigmaValue | SigmaRule = 0.1, *, family: str | Noise = "gaussian", df: float = 5.0):
        super().__init__()
        self.sigma = as_sigma_rule(sigma)
        self.family = make_noise(family, df=df)
        self.dimension: int | None = None
        self.width: int | None = None
        self._scale_cache: tuple | None = None
        self._mean_sigma_cache: tuple | None = None
        self.sampler: Sobol | None = None  # quasi-Monte Carlo points instead of the family's draws

    def use_qmc(self, on: bool = True) -> NoiseModel:
        """Draw the noise from scrambled Sobol points (`bbopt.noise.qmc`) instead of
        independently; before the first draw. Returns the model."""
        if self.dimension is not None and (self.sampler is not None) != on:
            raise ValueError("Invalid qmc: switch it before the first ask (the model is already in use)")
        self.sampler = Sobol() if on else None
        return self

    def uniforms(self, groups: int, samples: int, *, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """``[groups, samples, width]`` uniforms in (0, 1): Sobol points with QMC, else
        independent draws."""
        if self.sampler is None:
            return torch.rand((groups, samples, self.width), generator=generator, dtype=dtype, device=generator.device)
        return self.sampler.uniforms(groups, samples, self.width, generator=generator).to(dtype)

    # ---------------------------------------------------------------- set up once d is known
    def setup(self, dimension: int, samples: int) -> None:
        """Called by the solver at its first ``ask`` (or ``load_state_dict``) with the output
        dimension d and the group size n; creates the parameters that depend on them."""
        if self.dimension is not None and self.dimension != dimension:
            raise ValueError(
                f"Invalid policy output: dimension {dimension}, but the noise model was set up for {self.dimension}"
            )
        self.sigma.setup(dimension, samples)
        self.dimension, self.width, self.samples = dimension, dimension, samples

    # --------------------------------------------------------------------------- sampling
    def draw(self, groups: int, samples: int, *, generator: torch.Generator, dtype: torch.dtype,
             antithetic: bool) -> torch.Tensor:  # fmt: skip
        """Standard noise ``[groups, samples, width]``; with ``antithetic``, row ``i + n/2`` of
        each group is the negation of row ``i``."""
        half = samples // 2 if antithetic else samples
        if self.sampler is None:
            eps = self.family.sample((groups, half, self.width), generator=generator, dtype=dtype)
        else:
            eps = self.family.quantile(self.uniforms(groups, half, generator=generator, dtype=torch.float64)).to(dtype)
        return torch.cat([eps, -eps], dim=1) if antithetic else eps

    def candidates(self, mu: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``[G, k, d]`` candidates around ``mu[G, d]`` (detached) from ``eps[G, k, width]``."""
        return mu[:, None, :] + self.perturbation(eps)

    paired = True  # the perturbation is linear in eps and the family symmetric: pairs are mu +- p

    def paired_candidates(self, mu: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``[G, 2h, d]``: the candidates of antithetic pairs from their first halves
        ``eps[G, h, width]``, ``mu + p`` then ``mu - p`` (what `candidates` gives on
        ``cat([eps, -eps])``, without forming the negated noise)."""
        perturbation = self.perturbation(eps)
        out = _pairs_out(mu, eps.shape[1])
        torch.add(mu[:, None, :], perturbation, out=out[:, 0])
        torch.sub(mu[:, None, :], perturbation, out=out[:, 1])
        return out.view(mu.shape[0], -1, mu.shape[1])

    def perturbation(self, eps: torch.Tensor) -> torch.Tensor:
        """``x - mu`` for noise ``eps[..., width]``: ``[..., d]``."""
        raise NotImplementedError

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        """The step-size rule's sigma in ``like``'s dtype and device (converted once per change)."""
        key = (self.sigma.version, like.dtype, like.device)
        if self._scale_cache is None or self._scale_cache[0] != key:
            self._scale_cache = (key, self.sigma.value().to(device=like.device, dtype=like.dtype))
        return self._scale_cache[1]

    def mean_sigma(self) -> float:
        """The mean of the step-size rule's sigma, as a float (cached until sigma changes)."""
        if self._mean_sigma_cache is None or self._mean_sigma_cache[0] != self.sigma.version:
            self._mean_sigma_cache = (self.sigma.version, float(self.sigma.value().mean()))
        return self._mean_sigma_cache[1]

    # ----------------------------------------------------------------------------- signals
    def signal(self, mu: torch.Tensor, weights: torch.Tensor, eps: torch.Tensor, *, natural: bool,
               pairs: bool = False) -> torch.Tensor:  # fmt: skip
        """``v[rows, d]`` for ``mu[rows, d]`` from ``weights[rows, k]`` on ``eps[rows, k, width]``.

        With ``pairs`` (row ``i + k/2`` of ``eps`` is the negation of row ``i``) the signal is
        formed from the first half and the odd weights ``w_i - w_{i+k/2}``: the same sum,
        since the perturbation is linear in ``eps`` and every family's score is odd (its
        density is symmetric), at half the cost."""
        if pairs:
            weights, eps = odd_weights(weights), eps[:, : weights.shape[1] // 2]
        if natural:
            return torch.bmm(weights[:, None, :], self.perturbation(eps))[:, 0]
        return self.gradient_signal(mu, weights, eps)

    def gradient_signal(self, mu: torch.Tensor, weights: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``sum_k w_k grad_mu log p(x_k)``, ``[rows, d]``."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- updates
    def feedback(self, weights: torch.Tensor, eps: torch.Tensor, pairs: bool) -> Feedback:
        """The step-size rule's `Feedback` from ``weights[G, n]`` and whitened ``eps[G, n, d]``."""
        per_dimension = torch.einsum("gk,gkd->d", weights, self.family.log_scale_score(eps)).to(torch.float64)
        fisher = self.family.log_scale_fisher
        if len(self.sigma.shape) == 0:
            gradient, natural = per_dimension.sum(), per_dimension.mean() / fisher
        else:
            gradient, natural = per_dimension, per_dimension / fisher
        return Feedback(gradient, natural, *selected_steps(weights, eps, pairs))

    @property
    def learns(self) -> bool:
        """Whether `update` learns from the noise (a learned step size or shape); if not, it
        does not read ``eps``."""
        return self.sigma.learns or self.learns_shape

    def update(self, weights: torch.Tensor, eps: torch.Tensor, *, pairs: bool) -> None:
        """One update from ``weights[G, n]`` on ``eps[G, n, width]`` (the step-size rule, then
        the shape)."""
        feedback = self.feedback(weights, eps, pairs) if self.learns else None
        self.sigma.step(feedback)
        if self.learns_shape:
            self.update_shape(weights, eps, pairs, feedback)

    learns_shape = False
    # True where `gradient_signal` reads the noise only through its Gaussian score (eps itself), so
    # the solver may pass an AR(1) sequence's score in its place (``correlation=``)
    takes_sequence_score = False

    def update_shape(self, weights, eps, pairs, feedback) -> None:
        """Models with a learned shape update it here."""

    # ------------------------------------------------------------------------- diagnostics
    def spread(self) -> float:
        """The largest standard deviation of a candidate coordinate (restarts' ``tol_x``)."""
        return float(self.sigma.value().max())

    def condition(self) -> float:
        """Condition number of the covariance (1 without a learned shape)."""
        value = self.sigma.value()
        return float((value.max() / value.min()) ** 2)

    def extra_repr(self) -> str:
        return f"family={self.family!r}, dimension={self.dimension}"


class Scaled(NoiseModel):
    """``x = mu + sigma * eps``: isotropic with a scalar sigma, axis-parallel with a ``[d]``
    sigma (each dimension its own scale, as `bbopt.sigma.Learned` per dimension learns it).

    What a solver builds from its ``sigma=`` and ``noise=`` arguments when no model is given.
    """

    takes_sequence_score = True

    def perturbation(self, eps):
        return self.scale(eps) * eps

    def candidates(self, mu, eps):
        return torch.addcmul(mu[:, None, :], self.scale(eps), eps)  # one pass, no [G, k, d] temporary

    def paired_candidates(self, mu, eps):
        out, scale = _pairs_out(mu, eps.shape[1]), self.scale(eps)
        torch.addcmul(mu[:, None, :], scale, eps, out=out[:, 0])
        torch.addcmul(mu[:, None, :], scale, eps, value=-1, out=out[:, 1])
        return out.view(mu.shape[0], -1, mu.shape[1])

    def gradient_signal(self, mu, weights, eps):
        return torch.bmm(weights[:, None, :], self.family.score(eps))[:, 0] / self.scale(eps)


def _pairs_out(mu: torch.Tensor, half: int) -> torch.Tensor:
    """``[G, 2, h, d]``, laid out so that its view ``[G, 2h, d]`` has the pairs ``i, i + h``."""
    return torch.empty((mu.shape[0], 2, half, mu.shape[1]), dtype=mu.dtype, device=mu.device)
