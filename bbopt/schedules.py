"""Learning-rate schedules that work with a solver's noise scale."""

from __future__ import annotations

import math

import torch

from bbopt.checks import check_float

__all__ = ["LR_SCHEDULES", "KLAdaptiveLR", "LRFollowsSigma"]

LR_SCHEDULES = ("constant", "linear", "kl")  # the Trainer's lr_schedule values (bbopt.rollout.driver)


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


class KLAdaptiveLR:
    """The step follows the policy's movement: after each update, told the mean KL divergence of
    the updated policy from the one that acted, it divides every group's ``lr`` by ``factor``
    where the KL was above ``2 * target`` and multiplies it by ``factor`` where it was below
    ``target / 2``, within ``bounds`` times the group's initial step (the adaptive step of
    rl_games' PPO, after the KL penalty's adaptation of Schulman et al. 2017). The default bounds
    (0.01, 1) make the initial step the largest: the schedule takes a smaller one while the policy
    moves too far per update and returns to it when it moves less.

    A fixed step moves different policies by very different amounts: on HalfCheetah the same Adam
    step moves the policy about three times as far as on Hopper, and a smaller one learns more
    there. The current step lives in the optimizer's param groups (``initial_lr`` beside it), so
    the optimizer's state dict carries the schedule and a resumed run goes on bit for bit.
    ``step`` with ``None`` or a non-finite KL (an update that measured none) leaves the step as it is.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, target: float, *, factor: float = 1.5,
                 bounds: tuple[float, float] = (0.01, 1.0)):  # fmt: skip
        self.optimizer = optimizer
        self.target = check_float(target, "target", above=0.0)
        self.factor = check_float(factor, "factor", above=1.0)
        low, high = (check_float(bound, "bound", above=0.0) for bound in bounds)
        if not low <= 1.0 <= high:
            raise ValueError(f"Invalid bounds: {bounds!r} (expected low <= 1 <= high, as multiples of the initial lr)")
        self.bounds = (low, high)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def step(self, kl: float | None) -> None:
        if kl is None or not math.isfinite(kl):
            return
        if kl > 2 * self.target:
            change = 1 / self.factor
        elif kl < self.target / 2:
            change = self.factor
        else:
            return
        low, high = self.bounds
        for group in self.optimizer.param_groups:
            group["lr"] = min(max(group["lr"] * change, low * group["initial_lr"]), high * group["initial_lr"])
