"""IOH problems as batch objectives on a policy's unbounded output.

`get_problem` looks a problem up with clear errors; `Objective` evaluates a whole batch of
candidates ``[n, d]`` in one ioh call (ioh's own state counts the evaluations, so an attached
logger sees every one) and returns one loss per candidate. Decoding from the policy's
unbounded output to the problem's domain is explicit:

* real problems (BBOB, CEC): ``x = clip(z, lower, upper)``; the loss is
  ``f(x) - f_opt + penalty * ||z - x||^2``, so a candidate outside the box is evaluated at its
  projection (that is what ioh sees and logs) and pays a quadratic penalty that points back
  inside (the usual box handling of evolution strategies);
* pseudo-Boolean problems (PBO, GRAPH): ``bit_i = 1 if z_i > 0 else 0``; the loss is
  ``f_opt - f(bits)`` for these maximization problems (or ``-f`` when the optimum is unknown).

Losses are therefore >= 0 with 0 at the optimum wherever ioh knows it.
"""

from __future__ import annotations

import math

import ioh
import numpy as np
import torch

from bbopt.checks import check_int

__all__ = ["SUITES", "BudgetExhausted", "Objective", "get_problem", "is_binary"]

SUITES = {"bbob": ioh.ProblemClass.BBOB, "pbo": ioh.ProblemClass.PBO, "graph": ioh.ProblemClass.GRAPH}


class BudgetExhausted(RuntimeError):
    """The objective's evaluation budget does not admit another evaluation."""


def is_binary(problem) -> bool:
    return isinstance(problem, ioh.iohcpp.problem.IntegerSingleObjective)


def get_problem(suite: str, function: int | str, instance: int, dimension: int):
    """An ioh problem, e.g. ``get_problem("bbob", 1, 1, 5)``; names work too (``"Sphere"``)."""
    if suite not in SUITES:
        raise ValueError(f"Invalid suite: {suite!r} (expected one of {sorted(SUITES)})")
    problem_class = SUITES[suite]
    known = problem_class.problems  # {id: name}
    if isinstance(function, str):
        by_name = {name.lower(): fid for fid, name in known.items()}
        if function.lower() not in by_name:
            raise ValueError(
                f"Invalid function: {function!r} is not a {suite} problem (names: {sorted(known.values())})"
            )
        function = by_name[function.lower()]
    if function not in known:
        raise ValueError(f"Invalid function: {function!r} (expected a {suite} id in {sorted(known)})")
    check_int(instance, "instance", minimum=1)
    check_int(dimension, "dimension", minimum=1)
    try:
        return ioh.get_problem(function, instance, dimension, problem_class)
    except Exception as error:  # ioh refuses e.g. a BBOB dimension of 1 or a non-square Ising
        raise ValueError(
            f"Invalid dimension: {suite} problem {known[function]} refused dimension {dimension}: {error}"
        ) from error


class Objective:
    """``objective(candidates[n, d]) -> losses[n]`` (torch, float64) on an ioh problem.

    Args:
        problem: an ioh problem (see `get_problem`); loggers attached to it see every evaluation.
        budget: evaluations allowed in total (counted by ``problem.state.evaluations``);
            a call that would exceed it evaluates nothing and raises `BudgetExhausted`.
        penalty: weight of the quadratic out-of-box penalty (real problems).
    """

    def __init__(self, problem, *, budget: int | None = None, penalty: float = 1e4):
        if budget is not None:
            check_int(budget, "budget", minimum=1)
        self.problem, self.budget, self.penalty = problem, budget, float(penalty)
        self.dimension = problem.meta_data.n_variables
        self.binary = is_binary(problem)
        self.maximize = problem.meta_data.optimization_type == ioh.OptimizationType.MAX
        optimum = problem.optimum.y
        self.optimum = optimum if math.isfinite(optimum) and abs(optimum) < 1e300 else None
        if not self.binary:
            self.lower = np.asarray(problem.bounds.lb, dtype=float)
            self.upper = np.asarray(problem.bounds.ub, dtype=float)
        # (evaluations, best precision so far) after every call: f - f_opt (minimization) or
        # f_opt - f (maximization); the raw best value where the optimum is unknown.
        self.trace: list[tuple[int, float]] = []
        self.best = math.inf

    def restart(self) -> None:
        """Start a new run of the problem: ioh's state (and logger run), best and trace reset."""
        self.problem.reset()
        self.trace, self.best = [], math.inf

    @property
    def evaluations(self) -> int:
        return self.problem.state.evaluations

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.evaluations

    def decode(self, candidates) -> np.ndarray:
        """The points ioh evaluates: clipped reals ``[n, d]`` or bits ``[n, d]``."""
        z = self._as_array(candidates)
        return (z > 0).astype(int) if self.binary else np.clip(z, self.lower, self.upper)

    def __call__(self, candidates) -> torch.Tensor:
        precision, distance = self._evaluate(candidates)
        if self.binary:
            return torch.from_numpy(precision)
        return torch.from_numpy(precision + self.penalty * distance)

    def log_loss(self, candidates) -> torch.Tensor:
        """Like calling the objective (the same evaluations, counted and logged), but the loss is
        ``log(f(x) - f_opt) + ||z - x||^2``: the log of the precision at the projection plus the
        squared distance to the box in the same log units. The same minimizer, for solvers whose
        weights are linear in the loss (OVLR): precisions span orders of magnitude within a run,
        and a penalty of 1e4 per unit squared would outweigh every difference in f near the box.
        Needs a known optimum."""
        if self.optimum is None:
            raise ValueError("Invalid objective: log_loss needs a known optimum (losses >= 0)")
        precision, distance = self._evaluate(candidates)
        return torch.from_numpy(np.log(np.maximum(precision, 1e-300)) + distance)

    def _evaluate(self, candidates) -> tuple[np.ndarray, np.ndarray]:
        """Precision at the decoded points and squared distance to the box (0 for bits)."""
        z = self._as_array(candidates)
        if self.remaining is not None and len(z) > self.remaining:
            raise BudgetExhausted(f"{len(z)} evaluations asked with {self.remaining} of the budget {self.budget} left")
        points = self.decode(z)
        values = np.asarray(self.problem(points.tolist()), dtype=float).reshape(len(z))  # one ioh call
        precision = self.precision(values)
        self.best = min(self.best, float(precision.min()))
        self.trace.append((self.evaluations, self.best))
        distance = np.zeros(len(z)) if self.binary else ((z - points) ** 2).sum(axis=1)
        return precision, distance

    def precision(self, values: np.ndarray) -> np.ndarray:
        """Loss >= 0 from ioh's values, 0 at the optimum (the raw value where it is unknown)."""
        if self.maximize:
            return (self.optimum - values) if self.optimum is not None else -values
        return (values - self.optimum) if self.optimum is not None else values

    def _as_array(self, candidates) -> np.ndarray:
        if isinstance(candidates, torch.Tensor):
            candidates = candidates.detach().cpu().numpy()
        z = np.asarray(candidates, dtype=float)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.dimension:
            raise ValueError(f"Invalid candidates: shape {list(z.shape)} (expected [n, {self.dimension}])")
        if not np.isfinite(z).all():
            rows = sorted(set(np.nonzero(~np.isfinite(z))[0].tolist()))
            raise ValueError(f"Invalid candidates: non-finite values in rows {rows[:10]}")
        return z
