"""Low rank plus diagonal: a learned shape for large d at O(d k) per candidate."""

from __future__ import annotations

import torch
from torch import nn

from bbopt.checks import check_float, check_int
from bbopt.noise.model import NoiseModel, selected_steps, split_pairs
from bbopt.sigma import Feedback

__all__ = ["LowRank"]


class LowRank(NoiseModel):
    """``x = mu + sigma * D (z + V u)`` with ``z ~ N(0, I_d)``, ``u ~ N(0, I_k)``: covariance
    ``sigma^2 D (I + V V^T) D`` (kept at determinant 1: the overall scale is sigma's), a
    per-dimension scale ``D = diag(exp(h))`` plus ``k = rank`` learned directions ``V = W diag(exp(l)) / |W|``
    (unit directions, log-lengths ``l``, so a direction's length grows multiplicatively). Suited
    to problems that are steep except along a few directions (a valley), where the covariance
    needs a few long axes. Gaussian noise only.

    The shape ``(h, W, l)`` descends the likelihood-ratio gradient ``sum_i e_i grad log p(x_i)``
    (even part of the weights, scaled to ``sum |e| = 1`` as in `bbopt.noise.FullCovariance`),
    computed by autograd through the Woodbury form of ``log p`` in O(n d k^2), less its
    component along the overall scale (sigma's; as xNES splits it off), stepped by SGD at
    ``lr`` (default ``1 / d``). The gradient in these log coordinates is not the natural one
    (which needs the d x d Fisher matrix), so it adapts more slowly than the full model at small
    d; it is meant for d in the hundreds and beyond, where a d x d factor is too costly. (Adam
    would not do: it gives every scale the same step, and the shape is all in their differences.)
    ``W`` starts as a fixed orthonormal basis, the lengths at 1.
    """

    learns_shape = True

    def __init__(self, sigma=1.0, *, rank: int = 2, lr: float | None = None):
        super().__init__(sigma, family="gaussian")
        self.rank = check_int(rank, "rank", minimum=1)
        self.lr = None if lr is None else check_float(lr, "lr", above=0.0)
        self.optimizer: torch.optim.Optimizer | None = None

    def setup(self, dimension, samples):
        if self.dimension == dimension:
            return
        if len(self.sigma.shape) != 0:
            raise ValueError(f"Invalid sigma: shape {tuple(self.sigma.shape)} (LowRank takes a scalar step size)")
        if self.rank >= dimension:
            raise ValueError(f"Invalid rank: {self.rank} for dimension {dimension} (expected < d; use FullCovariance)")
        super().setup(dimension, samples)
        self.width = dimension + self.rank
        basis, _ = torch.linalg.qr(torch.randn(dimension, self.rank, generator=torch.Generator().manual_seed(0),
                                               dtype=torch.float64))  # fmt: skip
        self.log_scale = nn.Parameter(torch.zeros(dimension, dtype=torch.float64))
        self.unit_directions = nn.Parameter(basis)
        self.log_lengths = nn.Parameter(torch.zeros(self.rank, dtype=torch.float64))
        lr = self.lr if self.lr is not None else 1.0 / dimension
        self.optimizer = torch.optim.SGD([self.log_scale, self.unit_directions, self.log_lengths], lr=lr)

    def _directions(self, unit_directions, log_lengths):
        """``V [d, k]`` from its parameters."""
        return unit_directions / unit_directions.norm(dim=0, keepdim=True) * log_lengths.exp()

    @property
    def directions(self) -> torch.Tensor:
        """The learned directions ``V [d, k]`` (float64)."""
        return self._directions(self.unit_directions.detach(), self.log_lengths.detach())

    def _parts(self, like):
        scale = self.log_scale.detach().exp().to(like.dtype)
        return scale, self.directions.to(like.dtype)

    def perturbation(self, eps):
        scale, directions = self._parts(eps)
        z, u = eps[..., : self.dimension], eps[..., self.dimension :]
        return self.scale(eps) * scale * (z + u @ directions.T)

    def _whiten(self, a, directions):
        """``(I + V V^T)^-1 a`` for ``a[..., d]`` (Woodbury)."""
        inner = torch.eye(self.rank, dtype=a.dtype) + directions.T @ directions
        return a - torch.linalg.solve(inner, (a @ directions).unsqueeze(-1)).squeeze(-1) @ directions.T

    def gradient_signal(self, mu, weights, eps):
        scale, directions = self._parts(eps)
        a = eps[..., : self.dimension] + eps[..., self.dimension :] @ directions.T
        score = self._whiten(a, directions) / scale
        return torch.bmm(weights[:, None, :], score)[:, 0] / self.scale(eps)

    def _log_prob(self, a, log_scale, directions):
        """``log p`` (up to a constant) of unit-sigma perturbations ``y = D a`` given the shape."""
        u = a * log_scale.detach().exp() / log_scale.exp()  # D^-1 y with D as a function of h
        inner = torch.eye(self.rank, dtype=a.dtype) + directions.T @ directions
        projected = u @ directions  # [N, k]
        quadratic = u.square().sum(-1) - (projected * torch.linalg.solve(inner, projected.T).T).sum(-1)
        return -log_scale.sum() - 0.5 * torch.logdet(inner) - 0.5 * quadratic

    def feedback(self, weights, eps, pairs):
        eps64, weights64 = eps.to(torch.float64), weights.to(torch.float64)
        _, directions = self._parts(eps64)
        a = eps64[..., : self.dimension] + eps64[..., self.dimension :] @ directions.T
        radius = (a * self._whiten(a, directions)).sum(-1)  # (x - mu)^T C^-1 (x - mu) at unit sigma
        gradient = (weights64 * (radius - self.dimension)).sum()
        return Feedback(gradient, gradient / (2 * self.dimension), *selected_steps(weights64, eps64, pairs))

    def update_shape(self, weights, eps, pairs, feedback):
        _, even, independent = split_pairs(weights.to(torch.float64), eps.to(torch.float64), pairs)
        total = even.abs().sum()
        if float(total) == 0:
            return
        a = independent[..., : self.dimension] + independent[..., self.dimension :] @ self.directions.T
        with torch.enable_grad():
            directions = self._directions(self.unit_directions, self.log_lengths)
            log_prob = self._log_prob(a.reshape(-1, self.dimension), self.log_scale, directions)
            objective = ((even / total).reshape(-1) * log_prob).sum()
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
        # Less the overall-scale share (sigma's): in whitened units each log-scale's gradient holds
        # tr(G)/d once, each log-length's rho_k = |v_k|^2 / (1 + |v_k|^2) times.
        share = self.log_scale.grad.mean()
        lengths = self.log_lengths.detach().exp().square()
        self.log_lengths.grad -= share * lengths / (1 + lengths)
        self.log_scale.grad -= share
        self.optimizer.step()
        with torch.no_grad():  # det(D (I + V V^T) D) = 1: the overall scale is the step-size rule's
            inner = torch.eye(self.rank, dtype=torch.float64) + self.directions.T @ self.directions
            log_det = 2 * self.log_scale.sum() + torch.logdet(inner)
            self.log_scale.sub_(log_det / (2 * self.dimension))

    def get_extra_state(self):
        return {} if self.optimizer is None else {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state):
        if "optimizer" in state and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def spread(self):
        scale = self.log_scale.detach().exp()
        return float(self.sigma.value() * (scale.square() * (1 + self.directions.square().sum(1))).sqrt().max())

    def condition(self):
        """An upper bound: ``max(D)^2 (1 + |V|_2^2) / min(D)^2``."""
        scale = self.log_scale.detach().exp()
        top = float(torch.linalg.matrix_norm(self.directions, ord=2)) ** 2
        return float(scale.max() ** 2 * (1 + top) / scale.min() ** 2)

    def extra_repr(self):
        return f"{super().extra_repr()}, rank={self.rank}"
