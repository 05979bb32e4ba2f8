"""``bbopt.minimize``: the ask/tell loop for a fixed objective, with a progress bar."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["MinimizeResult", "minimize"]


@dataclass
class MinimizeResult:
    """The best candidate seen, its loss, and one stats dict per update."""

    x: torch.Tensor  # [d]
    loss: float
    evaluations: int
    history: list[dict[str, float]] = field(default_factory=list)


def minimize(
    objective: Callable[[torch.Tensor], object],
    solver,
    *,
    steps: int,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    progress: bool = True,
) -> MinimizeResult:
    """Run ``steps`` ask/tell updates of ``solver`` (a policy without input) on ``objective``.

    ``objective`` maps candidates ``[n, d]`` to ``n`` losses (tensor, array or list).
    ``callback(step, stats)`` runs after each update; returning ``True`` stops early.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Invalid steps: {steps!r} (expected an int >= 1)")
    if not callable(objective):
        raise ValueError(f"Invalid objective: {objective!r} (expected a callable [n, d] -> [n])")
    best_x, best_loss = None, math.inf
    history: list[dict[str, float]] = []
    bar = tqdm(range(steps), disable=not progress, desc=type(solver).__name__, leave=False)
    for step in bar:
        candidates = solver.ask()
        losses = objective(candidates)
        losses_array = np.asarray(losses.detach().cpu() if isinstance(losses, torch.Tensor) else losses, dtype=float)
        stats = solver.tell(losses)
        finite = np.where(np.isfinite(losses_array), losses_array, np.inf)
        index = int(np.argmin(finite)) if finite.size else 0
        if finite.size and finite[index] < best_loss:
            best_loss, best_x = float(finite[index]), candidates[index].detach().clone()
        stats["best_loss"] = best_loss
        history.append(stats)
        bar.set_postfix(best=f"{best_loss:.3e}", sigma=f"{stats['sigma']:.2e}")
        if callback is not None and callback(step, stats):
            break
    return MinimizeResult(x=best_x, loss=best_loss, evaluations=solver.evaluations, history=history)
