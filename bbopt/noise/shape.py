"""Learned shapes: ``x = mu + sigma * A eps`` with ``A`` adapted from the solver's weights.

Both shapes here (`Diagonal`, `FullCovariance`) take the same two steps per update, in the
local coordinates of the current ``A`` (``A <- A expm(M / 2)``, so the covariance stays positive
definite whatever the weights' signs):

* **rank-mu**: the natural gradient of ``E[loss]`` w.r.t. the shape, the likelihood-ratio
  estimate ``G = sum_j e_j (sym(score(eps_j) eps_j^T) - I)`` with the even part ``e`` of the
  weights scaled to ``sum |e_j| = 1`` (scale-free: ranks, elites and raw losses alike), less its
  trace (xNES's split: the step-size rule owns the overall scale, the shape keeps ``det A``).
  For ES's rank utilities this is xNES (Glasmachers et al., 2010) in output space; for CEM's
  elite weights it is the elites' second moment around the mean they were drawn from (CMA-ES's
  rank-mu update); for OVLR it is the likelihood-ratio gradient. (The trace says "shrink" on
  every convex bowl whatever the distance to the optimum; left in, it fought CSA.)
* **rank-one**: the evolution path ``q`` of the whitened directions of the mean's moves
  (`bbopt.sigma.Feedback.direction`),
  ``q <- (1 - c_c) q + sqrt(c_c (2 - c_c)) s``, pulls the shape toward ``q q^T`` (CMA-ES's
  rank-one update with cumulation; the step is left out while `bbopt.sigma.CSA` says sigma is
  growing fast, CMA-ES's ``h_sigma``).

The two are parameters of a ``torch.optim.SGD`` with the rates of CMA-ES as its learning rates
(Hansen 2016, Table 1; the diagonal ones scaled by ``(d + 2) / 3`` as in sep-CMA-ES, Ros &
Hansen 2008): ``M <- M - rate * c_mu * G + c_1 * (q q^T - I)``. ``rate`` multiplies the rank-mu
rate: the even part of likelihood-ratio weights carries less of the selection than CMA-ES's
positive weights, and the fixed-problem presets use 2-3; ``rate * c_mu`` is kept at most
``1 - c_1``, as in CMA-ES, and each folded step within `MAX_STEP`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bbopt.checks import check_bool, check_float
from bbopt.noise.model import NoiseModel, split_pairs
from bbopt.sigma import cma_mu_eff

__all__ = ["MAX_STEP", "Diagonal", "FullCovariance", "cma_rates"]

# A trust region for one folded step: M (of expm(M / 2)) is scaled down until its eigenvalues lie
# in [-2, 2], so a standard deviation changes by at most a factor e per fold. CMA-ES's additive
# update grows the covariance at most linearly in a sample's squared length; in the
# exponential form a large rate times an outlying sample (a large population on a plateau, where
# the weights concentrate on one pair) would grow it exponentially.
MAX_STEP = 2.0


def within_trust_region(values: torch.Tensor) -> torch.Tensor:
    """``values`` (a diagonal step or a step's eigenvalues) scaled down, not clipped, so that none
    exceeds `MAX_STEP` in size: the step keeps its direction, and a trace-free step stays so."""
    largest = float(values.abs().max()) if values.numel() else 0.0
    return values * (MAX_STEP / largest) if largest > MAX_STEP else values


def cma_rates(dimension: int, samples: int) -> tuple[float, float, float]:
    """``(c_1, c_mu, c_c)`` of CMA-ES for dimension d and population n (Hansen 2016, Table 1)."""
    mu_eff = cma_mu_eff(samples)
    c_1 = 2 / ((dimension + 1.3) ** 2 + mu_eff)
    c_mu = min(1 - c_1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((dimension + 2) ** 2 + mu_eff))
    c_c = (4 + mu_eff / dimension) / (dimension + 4 + 2 * mu_eff / dimension)
    return c_1, max(c_mu, 0.0), c_c


class _LearnedShape(NoiseModel):
    """The shared update; subclasses hold ``A`` and write `_second_moment`, `_path_moment`,
    `_fold`, `perturbation` and `gradient_signal`."""

    learns_shape = True

    def __init__(self, sigma=1.0, *, family="gaussian", df=5.0, rate: float = 1.0, rank_one: bool = False):
        super().__init__(sigma, family=family, df=df)
        self.rate = check_float(rate, "rate", above=0.0)
        self.rank_one = check_bool(rank_one, "rank_one")
        self.register_buffer("path", torch.zeros(0, dtype=torch.float64))
        self.updates = 0
        self.optimizer: torch.optim.Optimizer | None = None

    def _rates(self, dimension: int, samples: int) -> tuple[float, float, float]:
        return cma_rates(dimension, samples)

    def setup(self, dimension, samples):
        if self.dimension == dimension:
            return
        if len(self.sigma.shape) != 0:
            raise ValueError(f"Invalid sigma: shape {tuple(self.sigma.shape)} ({type(self).__name__} takes a "
                             "scalar step size; its shape is per dimension)")  # fmt: skip
        super().setup(dimension, samples)
        c_1, c_mu, self.c_c = self._rates(dimension, samples)
        self.path = torch.zeros(dimension, dtype=torch.float64)
        self._create(dimension)
        rank_mu_rate = min(c_mu * self.rate, 1 - c_1)  # CMA-ES's bound c_1 + c_mu <= 1
        groups = [{"params": [self.rank_mu], "lr": rank_mu_rate}]
        if self.rank_one:
            groups.append({"params": [self.rank_one_term], "lr": c_1})
        self.optimizer = torch.optim.SGD(groups, lr=rank_mu_rate)
        self.fold_every = self._fold_every(c_1 + c_mu)

    def _fold_every(self, total_rate: float) -> int:
        return 1

    def shape_gradient(self, weights: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The likelihood-ratio estimate ``sum_i w_i (sym(score(eps_i) eps_i^T) - I)`` of the
        gradient of ``E[loss]`` w.r.t. the local shape step ``M`` (``A expm(M)``, at ``M = 0``),
        from ``weights[G, n]`` on ``eps[G, n, d]`` (``[d, d]``; `Diagonal`: its diagonal ``[d]``).
        The rank-mu step is this, from the even part of the weights scaled to ``sum |e| = 1``,
        less its trace."""
        return self._second_moment(weights.to(torch.float64), eps.to(torch.float64))

    def update_shape(self, weights, eps, pairs, feedback):
        _, even, independent = split_pairs(weights.to(torch.float64), eps.to(torch.float64), pairs)
        total = even.abs().sum()
        even = even / total if float(total) > 0 else torch.zeros_like(even)
        self.rank_mu.grad = self._without_scale(self._second_moment(even, independent))
        if self.rank_one:
            grows = not getattr(self.sigma, "path_is_short", True)  # CMA-ES's h_sigma = 0: sigma is growing fast
            self.path.mul_(1 - self.c_c)
            if not grows:
                self.path.add_(feedback.direction, alpha=math.sqrt(self.c_c * (2 - self.c_c)))
            self.rank_one_term.grad = -self._path_moment(self.path)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.fold_every == 0:
            self.fold()

    def fold(self) -> None:
        """Move the accumulated local step into ``A`` and zero it."""
        with torch.no_grad():
            step = self.rank_mu.detach().clone()
            if self.rank_one:
                step += self.rank_one_term.detach()
                self.rank_one_term.zero_()
            self.rank_mu.zero_()
            self._fold(step)

    def get_extra_state(self) -> dict:
        state = {"updates": self.updates}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def set_extra_state(self, state: dict) -> None:
        self.updates = int(state["updates"])
        if "optimizer" in state and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self._refresh()

    def _refresh(self) -> None:
        """Recompute what is cached from ``A`` (after a fold or a load)."""

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rate={self.rate}, rank_one={self.rank_one}"


class Diagonal(_LearnedShape):
    """``x = mu + sigma * exp(h) * eps``: a learned scale per output dimension under a scalar
    step-size rule (`bbopt.sigma.CSA` gives sep-CMA-ES's scheme; ES's ranks give SNES). Cost per
    candidate O(d)."""

    def _rates(self, dimension, samples):
        c_1, c_mu, c_c = cma_rates(dimension, samples)
        factor = (dimension + 2) / 3
        c_1, c_mu = min(1.0, c_1 * factor), min(1.0, c_mu * factor)
        if c_1 + c_mu > 1:
            c_1, c_mu = c_1 / (c_1 + c_mu), c_mu / (c_1 + c_mu)
        return c_1, c_mu, c_c

    def _create(self, dimension):
        self.register_buffer("log_scale", torch.zeros(dimension, dtype=torch.float64))
        self.rank_mu = nn.Parameter(torch.zeros(dimension, dtype=torch.float64))
        self.rank_one_term = nn.Parameter(torch.zeros(dimension, dtype=torch.float64))

    def _second_moment(self, even, independent):
        product = self.family.score(independent) * independent
        return torch.einsum("gh,ghd->d", even, product - 1.0)

    def _path_moment(self, path):
        return path.square() - 1.0

    def _without_scale(self, gradient):
        return gradient - gradient.mean()

    def _fold(self, step):
        step = within_trust_region(step)
        self.log_scale.add_(step / 2)
        self.path.mul_(torch.exp(-step / 2))  # the path lives in the frame of the scales
        self._diagonal_cache = None

    def _diagonal(self, like):
        key = (self.updates, like.dtype, like.device)
        cache = getattr(self, "_diagonal_cache", None)
        if cache is None or cache[0] != key:
            cache = (key, self.log_scale.exp().to(device=like.device, dtype=like.dtype))
            self._diagonal_cache = cache
        return cache[1]

    def _refresh(self):
        self._diagonal_cache = None

    def perturbation(self, eps):
        return self.scale(eps) * self._diagonal(eps) * eps

    def gradient_signal(self, mu, weights, eps):
        score = torch.bmm(weights[:, None, :], self.family.score(eps))[:, 0]
        return score / (self.scale(eps) * self._diagonal(eps))

    def spread(self):
        return float(self.sigma.value() * self.log_scale.exp().max())

    def condition(self):
        return float(torch.exp(2 * (self.log_scale.max() - self.log_scale.min())))


class FullCovariance(_LearnedShape):
    """``x = mu + sigma * A eps`` with a full ``d x d`` factor ``A`` (covariance
    ``sigma^2 A A^T``), learned as in the module docstring. With `bbopt.sigma.CSA` and CMA-ES's
    weights this is CMA-ES (in the exponential parametrization of xNES).

    Cost per candidate: O(d^2) to sample; per update O(n d^2) for the rank-mu term, and an
    eigendecomposition (O(d^3)) every ``fold_every = max(1, 1 / (10 d (c_1 + c_mu)))`` updates
    (CMA-ES's lazy update; in between, the local step accumulates in the frame of the last ``A``).

    Args (besides `bbopt.noise.NoiseModel`'s):
        initial: the initial factor ``A`` (``[d, d]``, invertible) or covariance; default the
            identity (sigma is the step-size rule's).
        initial_is_covariance: ``initial`` is a covariance (symmetric positive definite; its
            Cholesky factor is used).
        rate: multiplies CMA-ES's rank-mu learning rate. rank_one: use the rank-one path term
            (it assumes the mean moves by the selected step: SGD with ``natural=True``).
    """

    def __init__(self, sigma=1.0, *, family="gaussian", df=5.0, rate=1.0, rank_one=False, initial=None,
                 initial_is_covariance: bool = False):  # fmt: skip
        super().__init__(sigma, family=family, df=df, rate=rate, rank_one=rank_one)
        self.initial = None if initial is None else self._check_initial(initial, initial_is_covariance)

    @staticmethod
    def _check_initial(initial, is_covariance: bool) -> torch.Tensor:
        matrix = torch.as_tensor(initial, dtype=torch.float64)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or not bool(torch.isfinite(matrix).all()):
            raise ValueError(f"Invalid initial: shape {list(matrix.shape)} (expected a finite square [d, d] matrix)")
        if is_covariance:
            if not torch.allclose(matrix, matrix.T, atol=1e-10, rtol=1e-8):
                raise ValueError("Invalid initial: the covariance is not symmetric")
            factor, info = torch.linalg.cholesky_ex(matrix)
            if int(info) != 0:
                raise ValueError("Invalid initial: the covariance is not positive definite")
            return factor
        if float(torch.linalg.matrix_rank(matrix)) < matrix.shape[0]:
            raise ValueError("Invalid initial: the factor is singular (expected an invertible [d, d] matrix)")
        return matrix

    def _fold_every(self, total_rate):
        return max(1, int(1 / (10 * self.dimension * total_rate)))

    def _create(self, dimension):
        if self.initial is not None and self.initial.shape[0] != dimension:
            raise ValueError(
                f"Invalid initial: a [{self.initial.shape[0]}, {self.initial.shape[0]}] factor for a policy output "
                f"of dimension {dimension}"
            )
        factor = torch.eye(dimension, dtype=torch.float64) if self.initial is None else self.initial.clone()
        self.register_buffer("factor", factor)
        self.rank_mu = nn.Parameter(torch.zeros(dimension, dimension, dtype=torch.float64))
        self.rank_one_term = nn.Parameter(torch.zeros(dimension, dimension, dtype=torch.float64))
        self._refresh()

    def _second_moment(self, even, independent):
        score = self.family.score(independent)
        moment = torch.einsum("gh,ghi,ghj->ij", even, score, independent)
        moment = (moment + moment.T) / 2
        return moment - even.sum() * torch.eye(moment.shape[0], dtype=moment.dtype)

    def _path_moment(self, path):
        return torch.outer(path, path) - torch.eye(path.numel(), dtype=path.dtype)

    def _without_scale(self, gradient):
        size = gradient.shape[0]
        return gradient - (torch.trace(gradient) / size) * torch.eye(size, dtype=gradient.dtype)

    def _fold(self, step):
        values, vectors = torch.linalg.eigh((step + step.T) / 2)
        values = within_trust_region(values)
        half = (vectors * torch.exp(values / 2)) @ vectors.T
        self.factor.copy_(self.factor @ half)
        # the rank-one path lives in the frame of A: y = A q = A' q' with A' = A expm(M / 2)
        inverse_half = (vectors * torch.exp(-values / 2)) @ vectors.T
        self.path.copy_(inverse_half @ self.path)
        self._refresh()

    def _refresh(self):
        self._casts: dict = {}  # the factor and its inverse in the dtypes and devices asked for

    def _matrix(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """``factor`` or ``inverse`` (computed when the gradient form first needs it) in ``like``'s
        dtype and device, cached until the next fold."""
        key = (name, like.dtype, like.device)
        if key not in self._casts:
            if name == "inverse" and ("inverse", torch.float64, self.factor.device) not in self._casts:
                self._casts[("inverse", torch.float64, self.factor.device)] = torch.linalg.inv(self.factor)
            source = self.factor if name == "factor" else self._casts[("inverse", torch.float64, self.factor.device)]
            self._casts[key] = source.to(device=like.device, dtype=like.dtype)
        return self._casts[key]

    def perturbation(self, eps):
        return self.scale(eps) * (eps @ self._matrix("factor", eps).T)

    def gradient_signal(self, mu, weights, eps):
        score = torch.bmm(weights[:, None, :], self.family.score(eps))[:, 0]  # [rows, d]
        return (score @ self._matrix("inverse", eps)) / self.scale(eps)  # (sigma A)^-T score, row-wise

    def covariance(self) -> torch.Tensor:
        """``sigma^2 A A^T`` (float64), the covariance of the candidates around mu."""
        return self.sigma.value() ** 2 * (self.factor @ self.factor.T)

    def spread(self):
        return float(self.sigma.value() * self.factor.square().sum(1).sqrt().max())

    def condition(self):
        singular = torch.linalg.svdvals(self.factor)
        return float((singular.max() / singular.min()) ** 2)
