"""Step-size rules: how the noise scale ``sigma`` (a scalar, or one per output dimension) evolves.

A noise model (`bbopt.noise`) holds one rule and, at every ``tell``, hands it a `Feedback`
built from the solver's weights on the samples:

* ``log_sigma_gradient``: the likelihood-ratio estimate of ``d E[loss] / d log sigma``
  (``sum_i w_i (eps_i * score(eps_i) - 1)``; Gaussian: ``eps**2 - 1``), summed over the output
  dimensions for a scalar sigma, and ``log_sigma_natural_gradient``, the same divided by its
  Fisher information (per dimension 2 for Gaussian noise; averaged over the dimensions for a
  scalar sigma);
* ``step``: the selected step in whitened coordinates, normalized so that it is ``N(0, I)``
  when the losses carry no information, and shorter when the mean moved less than it would
  under random selection; ``direction``: the same direction at the length of a random step
  (`bbopt.noise.model.selected_steps`).

The rules:

* `Fixed` ignores it; `Scheduled` follows ``schedule(step)``, `Linear` a straight line from one
  sigma to another over a number of updates;
* `Learned` descends the (natural) log-sigma gradient with a ``torch.optim`` optimizer (Adam by
  default), kept inside ``[floor, ceiling]``;
* `CSA`, cumulative step-size adaptation (Hansen & Ostermeier 2001; Hansen, "The CMA Evolution
  Strategy: A Tutorial", 2016, eqs. 43-44): sigma grows when consecutive selected steps point
  the same way and shrinks when they cancel.

A plain float or a 1-D sequence passed as ``sigma`` to a solver means `Fixed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bbopt.checks import check_float, check_int

__all__ = ["CSA", "Feedback", "Fixed", "Learned", "Linear", "Scheduled", "SigmaRule", "as_sigma_rule", "cma_mu_eff"]

SigmaValue = float | Sequence[float] | torch.Tensor


@dataclass
class Feedback:
    """What a step-size rule may learn from at one ``tell`` (see the module docstring)."""

    log_sigma_gradient: torch.Tensor  # [] or [d], float64
    log_sigma_natural_gradient: torch.Tensor  # [] or [d], float64
    step: torch.Tensor | None  # [d], float64; None where the model has no whitened step (bits)
    direction: torch.Tensor | None = None  # [d], float64: the step's direction at random-walk length


def _positive_tensor(value: SigmaValue, argument: str) -> torch.Tensor:
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise ValueError(f"Invalid {argument}: {value!r} (expected a positive float or 1-D sequence)")
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"Invalid {argument}: {value!r} (expected a positive float or 1-D sequence)") from error
    if tensor.dim() > 1 or tensor.numel() == 0:
        raise ValueError(f"Invalid {argument}: shape {tuple(tensor.shape)} (expected a scalar or a 1-D [d] sequence)")
    if not bool(torch.isfinite(tensor).all()) or bool((tensor <= 0).any()):
        raise ValueError(f"Invalid {argument}: {value!r} (every entry must be finite and > 0)")
    if not bool(torch.isfinite(tensor.log()).all()) or bool((tensor.float() == 0).any()):
        raise ValueError(f"Invalid {argument}: {value!r} (too small: it is 0 in float32)")
    return tensor


def cma_mu_eff(samples: int) -> float:
    """The variance-effective selection mass of CMA-ES's default recombination weights for a
    population of ``samples`` (``w_i ∝ ln((n + 1) / 2) - ln i``, ``i <= n / 2``): the constant its
    learning rates are written in (Hansen 2016, Table 1)."""
    parents = max(1, samples // 2)
    weights = [math.log((samples + 1) / 2) - math.log(i) for i in range(1, parents + 1)]
    total = sum(weights)
    return total**2 / sum(w * w for w in weights)


class SigmaRule(nn.Module):
    """Base class: holds ``log_sigma`` (shape ``[]`` or ``[d]``) and a step counter."""

    learns = False  # whether `step` reads the feedback (else it may get None)

    def __init__(self, value: SigmaValue):
        super().__init__()
        self.register_buffer("log_sigma", _positive_tensor(value, "sigma").log())
        self.steps = 0
        self.version = 0  # bumped whenever sigma changes (a cache key for the models)

    @property
    def shape(self) -> torch.Size:
        return self.log_sigma.shape

    def value(self) -> torch.Tensor:
        """Current sigma, float64, shape ``[]`` or ``[d]``."""
        return self.log_sigma.detach().exp()

    def setup(self, dimension: int, samples: int) -> None:
        """Called once the output dimension and the group size are known."""
        if len(self.shape) == 1 and self.shape[0] != dimension:
            raise ValueError(
                f"Invalid sigma: {self.shape[0]} entries for a policy output of dimension {dimension} "
                f"(expected a scalar or [{dimension}])"
            )

    def step(self, feedback: Feedback | None) -> None:
        """Advance one update."""
        self.steps += 1

    def _set(self, log_sigma: torch.Tensor) -> None:
        with torch.no_grad():
            self.log_sigma.copy_(log_sigma)
        self.version += 1

    def get_extra_state(self) -> dict:
        return {"steps": self.steps}

    def set_extra_state(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.version += 1

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # (a hook that also runs when the rule is loaded as part of a noise model)
        saved = state_dict.get(prefix + "log_sigma")
        if saved is not None and saved.shape != self.log_sigma.shape:
            raise ValueError(f"Invalid sigma state: shape {tuple(saved.shape)} (expected {tuple(self.shape)})")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"sigma={self.value().tolist()}"


class Fixed(SigmaRule):
    """Constant sigma."""


class Scheduled(SigmaRule):
    """``sigma = schedule(step)``; ``step`` counts completed updates (0 at the first ask).

    Example: ``Scheduled(lambda t: max(0.5 * 0.99**t, 1e-3))``.
    """

    def __init__(self, schedule: Callable[[int], SigmaValue]):
        if not callable(schedule):
            raise ValueError(f"Invalid schedule: {schedule!r} (expected a callable step -> sigma)")
        super().__init__(schedule(0))
        self.schedule = schedule

    def step(self, feedback):
        super().step(feedback)
        new = _positive_tensor(self.schedule(self.steps), f"schedule({self.steps})")
        if new.shape != self.log_sigma.shape:
            raise ValueError(f"Invalid schedule({self.steps}): shape {tuple(new.shape)} (expected {tuple(self.shape)})")
        self._set(new.log())

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}"


class Linear(Scheduled):
    """``sigma`` from ``start`` to ``end`` in equal steps over the first ``updates`` updates, then
    ``end``: wide exploration first, narrower later. A `Scheduled` rule made of plain numbers,
    so a run's settings can name it (``bbopt train --sigma-final``); its position is the step
    counter, saved with the solver's state, so a resumed run goes on where it stopped."""

    def __init__(self, start: float, end: float, updates: int):
        self.start = check_float(start, "start", above=0.0)
        self.end = check_float(end, "end", above=0.0)
        self.updates = check_int(updates, "updates", minimum=1)
        super().__init__(self._at)

    def _at(self, step: int) -> float:
        return self.start + (self.end - self.start) * min(step / self.updates, 1.0)

    def extra_repr(self) -> str:
        return f"start={self.start}, end={self.end}, updates={self.updates}"


class Learned(SigmaRule):
    """Sigma learned by descending the estimated gradient of the loss w.r.t. ``log sigma``.

    A ``torch.optim`` optimizer steps ``log sigma`` (its state is in ``state_dict``):
    ``adaptive=True`` (default) is Adam with ``betas``, scale-free (the raw likelihood-ratio
    gradient scales with the loss); ``adaptive=False`` is plain SGD. ``natural=True`` descends
    the natural gradient (the gradient over its Fisher information, `Feedback`) instead: with
    SGD and scale-free weights (ranks, elites) that is the SNES / CEM rule. The result is
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
        natural: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
    ):
        super().__init__(value)
        check_float(lr, "lr", above=0.0)
        check_float(floor, "floor", above=0.0)
        check_float(ceiling, "ceiling", above=floor, finite=False)
        if not (isinstance(betas, tuple | list) and len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"Invalid betas: {betas} (expected two floats in [0, 1))")
        self.lr, self.floor, self.ceiling = float(lr), float(floor), float(ceiling)
        self.adaptive, self.natural, self.betas = bool(adaptive), bool(natural), tuple(betas)
        log_sigma = self.log_sigma.clamp(math.log(self.floor), math.log(self.ceiling))
        del self.log_sigma
        self.log_sigma = nn.Parameter(log_sigma)
        if self.adaptive:
            self.optimizer = torch.optim.Adam([self.log_sigma], lr=self.lr, betas=self.betas, eps=1e-12)
        else:
            self.optimizer = torch.optim.SGD([self.log_sigma], lr=self.lr)

    def step(self, feedback):
        super().step(feedback)
        gradient = feedback.log_sigma_natural_gradient if self.natural else feedback.log_sigma_gradient
        self.log_sigma.grad = gradient.detach().to(torch.float64).reshape(self.shape).clone()
        self.optimizer.step()
        self._set(self.log_sigma.detach().clamp(math.log(self.floor), math.log(self.ceiling)))

    def get_extra_state(self) -> dict:
        return super().get_extra_state() | {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self) -> str:
        return (
            f"sigma={self.value().tolist()}, lr={self.lr}, floor={self.floor}, ceiling={self.ceiling}, "
            f"adaptive={self.adaptive}, natural={self.natural}"
        )


class CSA(SigmaRule):
    """Cumulative step-size adaptation of a scalar sigma (the step-size rule of CMA-ES).

    With the normalized selected step ``s`` of each update (``N(0, I)`` under random
    selection, `Feedback.step`), an evolution path ``p`` accumulates the steps and sigma follows
    its length against that of a random walk:

        p <- (1 - c) p + sqrt(c (2 - c)) s
        log sigma += (c / damping) (|p| / E|N(0, I)| - 1)     (capped at +-1 per update)

    Defaults (Hansen 2016, Table 1), from the dimension d and the group size n through
    ``mu_eff = cma_mu_eff(n)``: ``c = (mu_eff + 2) / (d + mu_eff + 5)``, ``damping = 1 + 2
    max(0, sqrt((mu_eff - 1) / (d + 1)) - 1) + c``. ``rate`` and ``damping`` override them.
    Needs a noise model with a whitened step (all but `bbopt.noise.Bernoulli`).
    """

    learns = True

    def __init__(self, value: float, *, rate: float | None = None, damping: float | None = None,
                 floor: float = 1e-300, ceiling: float = math.inf):  # fmt: skip
        super().__init__(value)
        if len(self.shape) != 0:
            raise ValueError(f"Invalid sigma: shape {tuple(self.shape)} (CSA adapts a scalar sigma)")
        self.rate = None if rate is None else check_float(rate, "rate", above=0.0, at_most=1.0)
        self.damping = None if damping is None else check_float(damping, "damping", above=0.0)
        self.floor = check_float(floor, "floor", above=0.0)
        self.ceiling = check_float(ceiling, "ceiling", above=floor, finite=False)
        self.register_buffer("path", torch.zeros(0, dtype=torch.float64))
        self.c = self.d_sigma = self.chi = math.nan

    def setup(self, dimension: int, samples: int) -> None:
        super().setup(dimension, samples)
        mu_eff = cma_mu_eff(samples)
        self.c = self.rate if self.rate is not None else (mu_eff + 2) / (dimension + mu_eff + 5)
        default_damping = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (dimension + 1)) - 1) + self.c
        self.d_sigma = self.damping if self.damping is not None else default_damping
        self._size(dimension)

    def _size(self, width: int) -> None:
        """The path has the width of the whitened step (d, or d + k for `bbopt.noise.LowRank`)."""
        self.chi = math.sqrt(width) * (1 - 1 / (4 * width) + 1 / (21 * width**2))  # E|N(0, I)|
        if self.path.numel() != width:
            self.path = torch.zeros(width, dtype=torch.float64)

    def step(self, feedback):
        super().step(feedback)
        if feedback is None or feedback.step is None:
            raise ValueError("Invalid sigma: CSA needs a noise model with a whitened step (not Bernoulli bits)")
        if feedback.step.numel() != self.path.numel():
            self._size(feedback.step.numel())
        self.path.mul_(1 - self.c).add_(feedback.step.to(torch.float64), alpha=math.sqrt(self.c * (2 - self.c)))
        change = (self.c / self.d_sigma) * (float(self.path.norm()) / self.chi - 1)
        new = self.log_sigma + max(-1.0, min(1.0, change))
        self._set(new.clamp(math.log(self.floor), math.log(self.ceiling)))

    @property
    def path_is_short(self) -> bool:
        """CMA-ES's ``h_sigma``: the path is not (yet) much longer than a random walk's, so the
        step size is not growing fast; shape models pause their own path while it is."""
        if self.steps == 0 or self.path.numel() == 0:
            return True
        normalized = float(self.path.norm()) / math.sqrt(1 - (1 - self.c) ** (2 * self.steps))
        return normalized < (1.4 + 2 / (self.path.numel() + 1)) * self.chi

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        path = state_dict.get(prefix + "path")
        if path is not None and path.shape != self.path.shape:
            self._size(path.numel())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"sigma={self.value().tolist()}, rate={self.rate}, damping={self.damping}"


def as_sigma_rule(sigma: SigmaValue | SigmaRule) -> SigmaRule:
    """A `SigmaRule` as is; a float or 1-D sequence becomes `Fixed`."""
    return sigma if isinstance(sigma, SigmaRule) else Fixed(sigma)
