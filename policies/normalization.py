"""Running observation normalization that lives in the policy's state.

`ObservationNormalizer` is an ``nn.Module`` whose statistics are buffers, so they are saved
with the policy (and so with the solver's ``state_dict`` and every checkpoint). Statistics
never change while a solver holds recorded steps: the rollout driver ``observe``s the
observations of an update's episodes and ``commit``s them only after ``tell`` (the VJP at
``tell`` re-runs the policy on the recorded observations, which must see the same
normalization as ``ask`` did). ``frozen`` modules ignore ``observe`` (evaluation).
"""

from __future__ import annotations

import torch
from torch import nn

from bbopt.checks import check_int

__all__ = ["ObservationNormalizer"]


class ObservationNormalizer(nn.Module):
    """``forward(obs[..., size]) = clip((obs - mean) / sqrt(var + eps), -clip, clip)``.

    Mean and variance are exact running moments over every committed observation (Chan et
    al.'s parallel update, float64), starting at mean 0, variance 1 until the first commit.
    """

    def __init__(self, size: int, *, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        check_int(size, "size", minimum=1)
        self.clip, self.epsilon = float(clip), float(epsilon)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("var", torch.ones(size, dtype=torch.float64))
        self.frozen = False
        self._pending: list[torch.Tensor] = []

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        scale = torch.sqrt(self.var + self.epsilon).to(observations.dtype)
        normalized = (observations - self.mean.to(observations.dtype)) / scale
        return normalized.clamp(-self.clip, self.clip)

    @torch.no_grad()
    def observe(self, observations: torch.Tensor) -> None:
        """Keep observations ``[m, size]`` for the next `commit` (ignored when frozen)."""
        if not self.frozen:
            self._pending.append(torch.as_tensor(observations).detach().reshape(-1, self.mean.numel()).cpu())

    @torch.no_grad()
    def commit(self) -> None:
        """Fold the observed batch into the running moments."""
        if not self._pending:
            return
        batch = torch.cat(self._pending).to(torch.float64)
        self._pending = []
        n = float(batch.shape[0])
        batch_mean, batch_var = batch.mean(0), batch.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        if self.count == 0:
            self.mean.copy_(batch_mean)
            self.var.copy_(batch_var)
        else:
            m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
            self.mean.add_(delta * n / total)
            self.var.copy_(m2 / total)
        self.count.fill_(total)
