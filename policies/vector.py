"""Policies without input: a learned vector, and any network on a fixed input."""

from __future__ import annotations

import torch
from torch import nn

from bbopt.checks import check_int

__all__ = ["FixedInput", "LearnedVector"]


class LearnedVector(nn.Module):
    """``forward() -> [d]``: a free parameter vector, the simplest policy for a fixed problem.

    Args:
        dimension: output size d.
        init: initial value ``[d]`` (default zeros).
    """

    def __init__(self, dimension: int, *, init=None):
        super().__init__()
        check_int(dimension, "dimension", minimum=1)
        if init is None:
            value = torch.zeros(dimension)
        else:
            value = torch.as_tensor(init, dtype=torch.get_default_dtype()).detach().clone()
            if value.shape != (dimension,):
                raise ValueError(f"Invalid init: shape {list(value.shape)} (expected [{dimension}])")
        self.value = nn.Parameter(value)

    def forward(self) -> torch.Tensor:
        return self.value


class FixedInput(nn.Module):
    """``forward() -> [d]``: ``module(input[None])[0]`` on a fixed input (a latent code).

    Turns any network into a policy for a fixed problem; the input is a buffer, so it is saved
    and moved with the module.
    """

    def __init__(self, module: nn.Module, input: torch.Tensor):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"Invalid module: {type(module).__name__} (expected a torch.nn.Module)")
        self.module = module
        self.register_buffer("input", torch.as_tensor(input).detach().clone())

    def forward(self) -> torch.Tensor:
        return self.module(self.input[None])[0]
