"""Noise scale rules: how ``sigma`` (scalar or one per output dimension) evolves.

A solver asks its rule for the current value at every ``ask`` and, at every ``tell``, hands it
one signal: the gradient of the expected loss with respect to ``log sigma`` (per output
dimension), as estimated by the solver (likelihood ratio for OVLR and ES, elite spread for
CEM). Each rule decides what to do with it:

* `Fixed` ignores it,
* `Scheduled` ignores it and follows ``schedule(step)``,
* `Learned` descends it (Adam, or plain SGD) on ``log sigma``, kept inside ``[floor, ceiling]``.

A plain float or a 1-D sequence passed as ``sigma`` to a solver means `Fixed` (CEM: elite
spread, see `bbopt.CEM`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["Fixed", "Learned", "Scheduled", "SigmaRule", "as_sigma_rule"]

SigmaValue = float | Sequence[float] | torch.Tensor


def _positive_tensor(value: SigmaValue, argument: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"Invalid {argument}: {value!r} (expected a positive float or 1-D sequence)") from error
    if tensor.dim() > 1 or tensor.numel() == 0:
        raise ValueError(f"Invalid {argument}: shape {tuple(tensor.shape)} (expected a scalar or a 1-D [d] sequence)")
    if not bool(torch.isfinite(tensor).all()) or bool((tensor <= 0).any()):
        raise ValueError(f"Invalid {argument}: {value!r} (every entry must be finite and > 0)")
    return tensor


class SigmaRule:
    """Base class: holds ``log_sigma`` (shape ``[]`` or ``[d]``) and a step counter."""

    learns = False  # whether `step` uses the solver's log-sigma gradient (else it gets None)

    def __init__(self, value: SigmaValue):
        self.log_sigma = _positive_tensor(value, "sigma").log()
        self.steps = 0

    @property
    def shape(self) -> torch.Size:
        return self.log_sigma.shape

    def value(self) -> torch.Tensor:
        """Current sigma, float64, shape ``[]`` or ``[d]``."""
        return self.log_sigma.exp()

    def step(self, log_sigma_gradient: torch.Tensor | None) -> None:
        """Advance one update; ``log_sigma_gradient`` has the rule's shape (None unless `learns`)."""
        self.steps += 1

    def state_dict(self) -> dict:
        return {"log_sigma": self.log_sigma.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if state["log_sigma"].shape != self.log_sigma.shape:
            raise ValueError(
                f"Invalid sigma state: shape {tuple(state['log_sigma'].shape)} (expected {tuple(self.shape)})"
            )
        self.log_sigma = state["log_sigma"].detach().clone().to(torch.float64)
        self.steps = int(state["steps"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.value().tolist()})"


class Fixed(SigmaRule):
    """Constant sigma."""


class Scheduled(SigmaRule):
    """``sigma = schedule(step)``; ``step`` counts completed updates (0 at the first ask).

    Example: ``Scheduled(lambda t: max(0.5 * 0.99**t, 1e-3))``.
    """

    def __init__(self, schedule: Callable[[int], SigmaValue]):
        if not callable(schedule):
            raise ValueError(f"Invalid schedule: {schedule!r} (expected a callable step -> sigma)")
        self.schedule = schedule
        super().__init__(schedule(0))

    def step(self, log_sigma_gradient):
        super().step(log_sigma_gradient)
        new = _positive_tensor(self.schedule(self.steps), f"schedule({self.steps})")
        if new.shape != self.log_sigma.shape:
            raise ValueError(f"Invalid schedule({self.steps}): shape {tuple(new.shape)} (expected {tuple(self.shape)})")
        self.log_sigma = new.log()

    def __repr__(self) -> str:
        return f"Scheduled({self.schedule!r})"


class Learned(SigmaRule):
    """Sigma learned by descending the estimated gradient of the loss w.r.t. ``log sigma``.

    ``adaptive=True`` uses Adam (scale-free: the raw likelihood-ratio gradient scales with
    the loss); ``adaptive=False`` uses plain SGD, ``log sigma -= lr * gradient``. The result is
    clamped to ``[floor, ceiling]``.
    """

    learns = True

    def __init__(
        self,
        value: SigmaValue,
        *,
        lr: float = 0.05,
        floor: float = 1e-12,
        ceiling: float = math.inf,
        adaptive: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
    ):
        super().__init__(value)
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"Invalid lr: {lr} (expected a finite float > 0)")
        if not (0 < floor < ceiling):
            raise ValueError(f"Invalid floor/ceiling: {floor}/{ceiling} (expected 0 < floor < ceiling)")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid betas: {betas} (expected each in [0, 1))")
        self.lr, self.floor, self.ceiling, self.adaptive, self.betas = lr, floor, ceiling, adaptive, betas
        self.log_sigma = self.log_sigma.clamp(math.log(floor), math.log(ceiling))
        self.exp_avg = torch.zeros_like(self.log_sigma)
        self.exp_avg_sq = torch.zeros_like(self.log_sigma)

    def step(self, log_sigma_gradient):
        super().step(log_sigma_gradient)
        gradient = log_sigma_gradient.detach().to(torch.float64).reshape(self.shape)
        if self.adaptive:  # Adam (Kingma & Ba, 2015), bias-corrected
            beta1, beta2 = self.betas
            self.exp_avg.mul_(beta1).add_(gradient, alpha=1 - beta1)
            self.exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
            first = self.exp_avg / (1 - beta1**self.steps)
            second = self.exp_avg_sq / (1 - beta2**self.steps)
            update = first / (second.sqrt() + 1e-12)
        else:
            update = gradient
        self.log_sigma = (self.log_sigma - self.lr * update).clamp(math.log(self.floor), math.log(self.ceiling))

    def state_dict(self):
        return super().state_dict() | {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.exp_avg = state["exp_avg"].detach().clone().to(torch.float64)
        self.exp_avg_sq = state["exp_avg_sq"].detach().clone().to(torch.float64)

    def __repr__(self) -> str:
        return (
            f"Learned(sigma={self.value().tolist()}, lr={self.lr}, floor={self.floor}, "
            f"ceiling={self.ceiling}, adaptive={self.adaptive})"
        )


def as_sigma_rule(sigma: SigmaValue | SigmaRule) -> SigmaRule:
    """A `SigmaRule` as is; a float or 1-D sequence becomes `Fixed`."""
    return sigma if isinstance(sigma, SigmaRule) else Fixed(sigma)
