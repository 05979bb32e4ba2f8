"""Learning-rate schedules that work with a solver's noise scale."""

from __future__ import annotations

import torch

__all__ = ["LRFollowsSigma"]


class LRFollowsSigma(torch.optim.lr_scheduler.LRScheduler):
    """``lr_t = base_lr * mean(sigma_t) / mean(sigma_0)``: the step shrinks with the search.

    With Adam, whose step is about ``lr`` whatever the gradient's scale, this moves the policy
    in units of sigma (as the mean update of an evolution strategy does), so precision is not
    capped by a fixed step. Call ``scheduler.step()`` after each ``solver.tell``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, solver, last_epoch: int = -1):
        self.solver = solver
        self.initial_sigma = float(solver.sigma.value().mean())
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        ratio = float(self.solver.sigma.value().mean()) / self.initial_sigma
        return [base * ratio for base in self.base_lrs]
