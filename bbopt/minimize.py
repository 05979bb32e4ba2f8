"""``bbopt.minimize``: the ask/tell loop for a fixed objective: a step or evaluation budget,
restarts, the best candidate, a progress bar. The one budget loop of the project (the IOH
runner, bin-packing search and the demo use it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from bbopt.checks import check_int
from bbopt.restarts import Restarts

__all__ = ["MinimizeResult", "minimize"]


@dataclass
class MinimizeResult:
    """The best candidate seen, its loss, the evaluations spent, one stats dict per update,
    and one summary per run (``samples``, ``evaluations``, ``updates``, ``best``, ``stop``)."""

    x: torch.Tensor | None  # [d]
    loss: float
    evaluations: int
    history: list[dict[str, float]] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)


def _as_array(losses) -> np.ndarray:
    if isinstance(losses, torch.Tensor):
        losses = losses.detach().cpu()
    return np.asarray(losses, dtype=float).reshape(-1)


def minimize(
    objective: Callable[[torch.Tensor], object],
    solver,
    *,
    steps: int | None = None,
    budget: int | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    progress: bool = True,
) -> MinimizeResult:
    """Minimize ``objective`` (candidates ``[n, d]`` -> n losses: tensor, array or list) with
    ``solver``, a `bbopt.Solver` on a policy without input, or a restart strategy
    (`bbopt.restarts.IPOP`, `BIPOP`) that builds one solver per run.

    Stops after ``steps`` updates or ``budget`` evaluations (at least one is needed; a
    restart strategy needs ``budget``). The budget is spent exactly: when less than a batch is
    left, the first candidates of one more batch are evaluated and not told (the solver is left
    between ask and tell). ``transform`` maps the losses to what the solver is told (e.g.
    ``torch.log`` for positive losses); the best loss is tracked on the losses themselves.
    ``callback(step, stats)`` runs after each update; returning ``True`` stops.
    """
    if steps is None and budget is None:
        raise ValueError("Invalid steps/budget: give at least one of them")
    if steps is not None:
        check_int(steps, "steps", minimum=1)
    if budget is not None:
        check_int(budget, "budget", minimum=1)
    if not callable(objective):
        raise ValueError(f"Invalid objective: {objective!r} (expected a callable [n, d] -> [n])")
    strategy = solver if isinstance(solver, Restarts) else None
    if strategy is not None and budget is None:
        raise ValueError("Invalid budget: restarts need an evaluation budget")
    best_x, best_loss, evaluations = None, math.inf, 0
    history: list[dict[str, float]] = []
    runs: list[dict] = []
    bar = tqdm(total=budget if budget is not None else steps, disable=not progress, leave=False,
               desc=type(solver).__name__, unit="eval" if budget is not None else "step")  # fmt: skip
    done = False
    while not done:
        run = strategy.next_run() if strategy is not None else None
        if strategy is not None and run is None:
            break
        current = strategy.make(run) if strategy is not None else solver
        if not hasattr(current, "ask") or not hasattr(current, "tell"):
            raise ValueError(f"Invalid solver: {type(current).__name__} (expected a bbopt.Solver from make(run))")
        started, best_per_update, run_best, stop = evaluations, [], math.inf, "budget"
        initial_spread = None
        while True:
            if steps is not None and len(history) >= steps:
                stop, done = "steps", True
                break
            candidates = current.ask()
            count = candidates.shape[0]
            if initial_spread is None and strategy is not None:
                initial_spread = current.noise.spread()  # the model is set up at the first ask
            left = None if budget is None else budget - evaluations
            if left is not None and left < count:
                if left > 0:
                    losses = _as_array(objective(candidates[:left]))
                    best_x, best_loss = _better(candidates[:left], losses, best_x, best_loss)
                    run_best = min(run_best, float(np.nanmin(losses)))
                    evaluations += left
                    bar.update(left)
                stop, done = "budget", True
                break
            raw = objective(candidates)
            losses = _as_array(raw)
            if losses.size != count:
                raise ValueError(f"Invalid objective: {losses.size} losses for {count} candidates")
            best_x, best_loss = _better(candidates, losses, best_x, best_loss)
            evaluations += count
            stats = current.tell(transform(torch.as_tensor(raw)) if transform is not None else raw)
            finite = losses[np.isfinite(losses)]
            run_best = min(run_best, float(finite.min())) if finite.size else run_best
            best_per_update.append(float(finite.min()) if finite.size else math.inf)
            stats.update(best_loss=best_loss, evaluations=float(evaluations), run=float(len(runs)))
            history.append(stats)
            bar.update(count if budget is not None else 1)
            bar.set_postfix(best=f"{best_loss:.3e}", sigma=f"{stats['sigma']:.2e}")
            if callback is not None and callback(len(history) - 1, stats):
                stop, done = "callback", True
                break
            if budget is not None and evaluations >= budget:
                stop, done = "budget", True
                break
            if strategy is not None:
                reason = strategy.stagnation.reason(best_per_update, finite, current.noise, initial_spread, count)
                if reason is not None:
                    stop = reason
                    break
        runs.append({"samples": count, "evaluations": evaluations - started, "updates": len(best_per_update),
                     "best": run_best, "stop": stop} | ({"regime": run.regime, "sigma_factor": run.sigma_factor}
                                                        if run is not None else {}))  # fmt: skip
        if strategy is None:
            break
        strategy.record(run, evaluations - started)
    bar.close()
    return MinimizeResult(x=best_x, loss=best_loss, evaluations=evaluations, history=history, runs=runs)


def _better(candidates: torch.Tensor, losses: np.ndarray, best_x, best_loss: float):
    finite = np.where(np.isfinite(losses), losses, np.inf)
    if finite.size == 0:
        return best_x, best_loss
    index = int(np.argmin(finite))
    if finite[index] < best_loss:
        return candidates[index].detach().clone(), float(finite[index])
    return best_x, best_loss
