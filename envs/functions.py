"""Classic continuous test functions, batched: ``f(x[..., d]) -> [...]``, minimum 0.

Minimizers: sphere and Rastrigin at the origin, Rosenbrock at ``(1, ..., 1)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FUNCTIONS", "rastrigin", "rosenbrock", "sphere"]


def sphere(x: torch.Tensor) -> torch.Tensor:
    """``sum_i x_i^2``."""
    return (x * x).sum(-1)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """``sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`` (Rosenbrock, 1960)."""
    head, tail = x[..., :-1], x[..., 1:]
    return (100.0 * (tail - head * head) ** 2 + (1.0 - head) ** 2).sum(-1)


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    """``10 d + sum_i x_i^2 - 10 cos(2 pi x_i)`` (Rastrigin, 1974): 10^d local minima."""
    return 10.0 * x.shape[-1] + (x * x - 10.0 * torch.cos(2.0 * math.pi * x)).sum(-1)


FUNCTIONS = {"sphere": sphere, "rosenbrock": rosenbrock, "rastrigin": rastrigin}
