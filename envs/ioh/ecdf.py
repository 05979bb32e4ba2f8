"""ECDF of (problem, target) pairs reached vs evaluations, as IOHanalyzer and COCO draw it.

Targets are precisions ``f - f_opt`` from 10^2 down to 10^-8, 51 log-spaced by default. A run's
trace is a list of ``(evaluations, best precision so far)``; the ECDF at budget b is the
fraction of (run, target) pairs whose best precision within b evaluations is <= the target.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TARGETS", "ecdf", "final_score", "reached"]

TARGETS = np.logspace(2, -8, 51)


def reached(trace: list[tuple[int, float]], budget: int, targets: np.ndarray = TARGETS) -> np.ndarray:
    """Boolean ``[targets]``: which targets the run reached within ``budget`` evaluations."""
    best = min((precision for evaluations, precision in trace if evaluations <= budget), default=np.inf)
    return best <= targets


def ecdf(traces: list[list[tuple[int, float]]], budgets: np.ndarray, targets: np.ndarray = TARGETS) -> np.ndarray:
    """Fraction of (run, target) pairs reached at each budget, ``[budgets]``."""
    if not traces:
        raise ValueError("Invalid traces: none given")
    return np.array([np.mean([reached(trace, b, targets).mean() for trace in traces]) for b in budgets])


def final_score(traces: list[list[tuple[int, float]]], targets: np.ndarray = TARGETS) -> float:
    """The ECDF value at each run's full budget: fraction of (run, target) pairs reached."""
    return float(np.mean([reached(trace, trace[-1][0], targets).mean() for trace in traces]))
