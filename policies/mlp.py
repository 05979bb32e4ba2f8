"""A multilayer perceptron policy with seeded initialization and output scaling."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from bbopt.checks import check_int

__all__ = ["MLP"]


class MLP(nn.Module):
    """``forward(inputs[B, in_features]) -> [B, out_features]``.

    Args:
        in_features, out_features: sizes of input and output.
        hidden: widths of the hidden layers (default ``(64, 64)``; ``()`` for a linear map).
        activation: module class between layers (default ``nn.Tanh``).
        output_activation: optional module class applied to the output (e.g. ``nn.Tanh`` for
            bounded actions).
        output_scale: the output is multiplied by this (scalar or ``[out_features]``).
        seed: initialization seed. Initialization uses its own generator and never the
            global RNG (PyTorch's default ``nn.Linear`` scheme, U(-1/sqrt(fan_in), +...)).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.Tanh,
        output_activation: type[nn.Module] | None = None,
        output_scale: float | Sequence[float] = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        widths = [in_features, *hidden, out_features]
        for name, width in zip(["in_features", *["hidden"] * len(hidden), "out_features"], widths, strict=True):
            check_int(width, name, minimum=1)
        generator = torch.Generator().manual_seed(int(seed))
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out)  # no global RNG
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            layers.append(layer)
            if index < len(widths) - 2:
                layers.append(activation())
        if output_activation is not None:
            layers.append(output_activation())
        self.layers = nn.Sequential(*layers)
        scale = torch.as_tensor(output_scale, dtype=torch.get_default_dtype())
        if scale.dim() > 1 or (scale.dim() == 1 and scale.shape[0] != out_features):
            raise ValueError(f"Invalid output_scale: shape {list(scale.shape)} (expected a scalar or [{out_features}])")
        self.register_buffer("output_scale", scale.clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs) * self.output_scale
