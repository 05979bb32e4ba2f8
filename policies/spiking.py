"""A spiking MLP: leaky integrate-and-fire (LIF) hidden layers with Heaviside spikes over T time
steps, and a linear readout averaged over the steps (the logits).

Per hidden layer l and step t, with the static input presented at every step:

    u_l <- decay * u_l * (1 - s_l) + W_l h_{l-1} + b_l      (membrane: leak, reset after a spike)
    s_l  = H(u_l - threshold)                                (spikes, exactly 0 or 1)

``h_0 = x``, ``h_l = s_l``; logits = mean over t of ``W_out s_L + b_out``. The Heaviside step has
a zero derivative almost everywhere: backprop cannot train it. ``surrogate=True`` gives it the
derivative of a fast sigmoid, ``1 / (1 + slope |u - threshold|)^2`` (SuperSpike, Zenke and
Ganguli 2018), the usual surrogate-gradient baseline; the forward pass is the same either way.
Layer-wise LR (`bbopt.layerwise`) trains it as it is: its Linear layers are called once per
step, and each call gets its own noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from bbopt.checks import check_int

__all__ = ["SpikingMLP"]


class _SurrogateSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, centered: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(centered)
        ctx.slope = slope
        return (centered >= 0).to(centered.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (centered,) = ctx.saved_tensors
        return grad_output / (1.0 + ctx.slope * centered.abs()) ** 2, None


class SpikingMLP(nn.Module):
    """Args:
    inputs, outputs: widths of the input and of the readout (logits).
    hidden: widths of the LIF layers.
    steps: time steps T.
    decay: the membrane's leak factor per step, in [0, 1).
    threshold: the firing threshold.
    surrogate: backprop through the spikes with a fast-sigmoid surrogate derivative (``slope``).
    seed: initialization seed (the global RNG is never used).
    """

    def __init__(self, inputs: int, outputs: int, *, hidden: Sequence[int] = (128,), steps: int = 8,
                 decay: float = 0.5, threshold: float = 1.0, surrogate: bool = False, slope: float = 5.0,
                 seed: int = 0):  # fmt: skip
        super().__init__()
        check_int(inputs, "inputs", minimum=1)
        check_int(outputs, "outputs", minimum=1)
        self.steps = check_int(steps, "steps", minimum=1)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"Invalid decay: {decay} (expected in [0, 1))")
        if not threshold > 0:
            raise ValueError(f"Invalid threshold: {threshold} (expected > 0)")
        self.decay, self.threshold, self.surrogate, self.slope = float(decay), float(threshold), bool(surrogate), slope
        widths = [inputs, *[check_int(w, "hidden width", minimum=1) for w in hidden]]
        generator = torch.Generator().manual_seed(seed)
        self.hidden = nn.ModuleList(_seeded_linear(a, b, generator) for a, b in itertools.pairwise(widths))
        self.readout = _seeded_linear(widths[-1], outputs, generator)

    def spike(self, membrane: torch.Tensor) -> torch.Tensor:
        centered = membrane - self.threshold
        if self.surrogate:
            return _SurrogateSpike.apply(centered, self.slope)
        return (centered >= 0).to(membrane.dtype)

    def forward(self, x: torch.Tensor, *, record: list | None = None) -> torch.Tensor:
        """Logits ``[B, outputs]``; with ``record`` (a list), the spikes of every hidden layer at
        every step are appended to it (for inspection and tests)."""
        membranes = [None] * len(self.hidden)
        spikes = [None] * len(self.hidden)
        total = 0.0
        for _ in range(self.steps):
            h = x
            for index, layer in enumerate(self.hidden):
                current = layer(h)
                if membranes[index] is None:
                    membrane = current
                else:
                    membrane = self.decay * membranes[index] * (1.0 - spikes[index]) + current
                spikes[index] = self.spike(membrane)
                membranes[index] = membrane
                h = spikes[index]
                if record is not None:
                    record.append(h)
            total = total + self.readout(h)
        return total / self.steps


def _seeded_linear(inputs: int, outputs: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    bound = 1.0 / inputs**0.5  # nn.Linear's default range, drawn from the given generator
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer
