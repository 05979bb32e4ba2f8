"""Quasi-Monte Carlo noise: a scrambled Sobol net, randomly shifted per group, mapped through a
family's inverse CDF.

In the low-dimensional output space, n noise vectors that cover the space evenly estimate an
expectation with less variance than n independent draws: the LR-method paper (`002_*` in the
seeds, §3.3) uses it for exactly this reason. Each group (the n samples of one input) gets the
first n points of a scrambled Sobol sequence (one net per noise model) under its own random
digital shift (XOR with random bits drawn from the solver's generator). The shift makes every
point uniform on the unit cube, so the estimator stays unbiased, and makes the groups
independent of each other, as independent draws would be; inside a group the points keep the
net's even spread, which is where the variance goes down. The effect needs points to spread:
it grows with n (a net of n = 2^m points in width d), and with antithetic pairs the net has n/2.

The sampler is a part of the noise model (``model.use_qmc(True)``, or ``qmc=True`` on any
solver). Its scramble seed is drawn from the solver's generator at the first draw and kept in
the model's ``state_dict``; every later draw takes only shifts from the solver's generator, so
a restored solver continues exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.quasirandom import SobolEngine

__all__ = ["Sobol"]

_BITS = 32  # the shift and the points on a 2^-32 grid; points sit at cell centres, never 0 or 1


class Sobol(nn.Module):
    """``uniforms(groups, samples, width)``: per group, the first ``samples`` points of one
    scrambled Sobol sequence XOR a random shift, in (0, 1) (float64)."""

    MAX_WIDTH = SobolEngine.MAXDIM

    def __init__(self):
        super().__init__()
        self.seed: int | None = None
        self._nets: dict[tuple[int, int], torch.Tensor] = {}

    def net(self, samples: int, width: int) -> torch.Tensor:
        """The first ``samples`` points of the scrambled sequence, as ``_BITS``-bit integers."""
        if (samples, width) not in self._nets:
            if width > self.MAX_WIDTH:
                raise ValueError(f"Invalid qmc: Sobol points exist up to dimension {self.MAX_WIDTH}, the noise has "
                                 f"{width} (use qmc=False)")  # fmt: skip
            points = SobolEngine(width, scramble=True, seed=self.seed).draw(samples, dtype=torch.float64)
            self._nets[(samples, width)] = (points * 2.0**_BITS).long()
        return self._nets[(samples, width)]

    def uniforms(self, groups: int, samples: int, width: int, *, generator: torch.Generator) -> torch.Tensor:
        if self.seed is None:
            self.seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        shifts = torch.randint(0, 2**_BITS, (groups, 1, width), generator=generator, device=generator.device)
        cells = self.net(samples, width).to(generator.device)[None] ^ shifts
        return (cells.double() + 0.5) / 2.0**_BITS

    def get_extra_state(self) -> dict:
        return {"seed": self.seed}

    def set_extra_state(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"seed"}:
            raise ValueError(f"Invalid state: {state!r} is not a Sobol sampler's state")
        self.seed = state["seed"]
        self._nets.clear()

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
