"""Noise families for output-level perturbation, with their score functions.

Every family is standardized to unit variance, so ``sigma`` is the standard deviation of the
perturbation whatever the family. For a candidate ``x = mu + sigma * eps`` with ``eps ~ p``:

* ``score(eps) = -d log p(eps) / d eps``, so ``grad_mu log p(x) = score(eps) / sigma``
  (OVLR paper, "For Gaussian / Laplace / Student-t"), and
* ``grad_{log sigma} log p(x) = eps * score(eps) - 1`` (the same identity for every
  location-scale family; Gaussian: ``eps**2 - 1``).

Sampling draws only from the ``torch.Generator`` it is given (no global RNG).
"""

from __future__ import annotations

import math

import torch

__all__ = ["Gaussian", "Laplace", "Noise", "StudentT", "make_noise"]


class Noise:
    """A standardized (mean 0, variance 1) noise family."""

    name: str = ""

    def sample(self, shape: tuple[int, ...], *, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def score(self, eps: torch.Tensor) -> torch.Tensor:
        """``-d log p / d eps``, elementwise."""
        raise NotImplementedError

    def quantile(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF at uniforms ``u`` in (0, 1) (float64): how quasi-Monte Carlo points
        become noise of this family (`bbopt.noise.qmc`)."""
        raise NotImplementedError

    def log_scale_score(self, eps: torch.Tensor) -> torch.Tensor:
        """``d log p(mu + sigma * eps) / d log sigma`` per dimension: ``eps * score - 1``."""
        return eps * self.score(eps) - 1.0

    # Fisher information of log sigma per dimension, E[(eps * score - 1)^2]: what turns the
    # log-sigma gradient into its natural gradient.
    log_scale_fisher: float = 2.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gaussian(Noise):
    """Standard normal noise; score ``eps``."""

    name = "gaussian"

    def sample(self, shape, *, generator, dtype):
        return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)

    def score(self, eps):
        return eps

    def quantile(self, u):
        return torch.special.ndtri(u)


class Laplace(Noise):
    """Laplace(0, 1/sqrt(2)) noise (unit variance); score ``sqrt(2) * sign(eps)``."""

    name = "laplace"
    log_scale_fisher = 1.0  # E[(sqrt(2)|eps| - 1)^2] with E|eps| = 1/sqrt(2)

    def sample(self, shape, *, generator, dtype):
        device = generator.device
        magnitude = torch.empty(shape, dtype=dtype, device=device).exponential_(generator=generator)
        sign = torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
        return sign * magnitude / math.sqrt(2.0)

    def score(self, eps):
        return math.sqrt(2.0) * torch.sign(eps)

    def quantile(self, u):
        centered = u - 0.5
        return -torch.sign(centered) * torch.log1p(-2.0 * centered.abs()) / math.sqrt(2.0)


class StudentT(Noise):
    """Student-t noise with ``df > 2`` degrees of freedom, scaled to unit variance.

    ``eps = T * sqrt((df - 2) / df)`` with ``T ~ t_df``, whose score is
    ``(df + 1) * eps / (df - 2 + eps**2)`` (the OVLR paper's formula). ``T`` is drawn with
    Bailey's polar method (Math. Comp. 62, 1994), which needs only uniform draws and so takes
    a ``torch.Generator``.
    """

    name = "student_t"

    def __init__(self, df: float = 5.0):
        df = float(df)
        if not math.isfinite(df) or df <= 2.0:
            raise ValueError(f"Invalid df: {df} (Student-t noise needs a finite df > 2 for unit variance)")
        self.df = df
        self.log_scale_fisher = 2.0 * df / (df + 3.0)  # the location-scale t's Fisher information of log scale

    def sample(self, shape, *, generator, dtype):
        count = math.prod(shape)
        device = generator.device
        accepted: list[torch.Tensor] = []
        have = 0
        while have < count:
            # Draw (u, v) uniformly in the square until enough fall in the unit disc (p = pi/4).
            draw = int((count - have) * 1.35) + 16
            uv = torch.rand((2, draw), generator=generator, dtype=torch.float64, device=device) * 2 - 1
            w = (uv * uv).sum(0)
            keep = (w <= 1.0) & (w > 0.0)
            u, w = uv[0][keep], w[keep]
            t = u * torch.sqrt(self.df * (w.pow(-2.0 / self.df) - 1.0) / w)
            accepted.append(t)
            have += t.numel()
        t = torch.cat(accepted)[:count].reshape(shape)
        return (t * math.sqrt((self.df - 2.0) / self.df)).to(dtype)

    def score(self, eps):
        return (self.df + 1.0) * eps / (self.df - 2.0 + eps * eps)

    def quantile(self, u):
        from scipy.stats import t as student_t  # scipy: the t quantile has no torch kernel

        values = student_t.ppf(u.detach().cpu().numpy(), self.df) * math.sqrt((self.df - 2.0) / self.df)
        return torch.from_numpy(values).to(u.device)

    def __repr__(self) -> str:
        return f"StudentT(df={self.df})"


_FAMILIES = {"gaussian": Gaussian, "laplace": Laplace, "student_t": StudentT}


def make_noise(noise: str | Noise, *, df: float = 5.0) -> Noise:
    """Return a `Noise` from a family name (``"gaussian" | "laplace" | "student_t"``) or as is."""
    if isinstance(noise, Noise):
        return noise
    if noise == "student_t":
        return StudentT(df)
    if noise in _FAMILIES:
        return _FAMILIES[noise]()
    raise ValueError(f"Invalid noise: {noise!r} (expected one of {sorted(_FAMILIES)} or a bbopt.noise.Noise)")
