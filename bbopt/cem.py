"""CEM at the output: the cross-entropy method as regression of the policy onto its elites.

Rubinstein & Kroese, "The Cross-Entropy Method" (2004). Per group, the k = ceil(elite_fraction
* n) lowest-loss candidates are the elites, each with weight ``-1/k`` (``-1/records`` in
episode mode); the signal is the natural form ``sum_i w_i (x_i - mu)``, the gradient of
``1/2 ||mu - mean of elite candidates||^2``:

    v = mean over elites e of (mu - x_e),

so plain SGD with lr = 1 on a learned vector is classic CEM (mu <- elite mean), and a network
``mu(s)`` regresses onto the elites' outputs (in episode mode: onto the actions the elite
episodes took, over all their steps). The noise model learns from the same weights: the scale
(and shape, with `bbopt.noise.FullCovariance`) move toward the elites' second moment around
the mean they were drawn from, as in CMA-ES's rank-mu update. Measuring the spread around the
elites' own mean instead (textbook CEM) shrinks sigma while the mean is still travelling, and
stalls when the mean moves by small steps (Adam); around the old mean, a consistent slope keeps
the spread up.
"""

from __future__ import annotations

import math

import torch

from bbopt.checks import check_float
from bbopt.noise import NoiseModel
from bbopt.presets import Preset, cma_population, full_covariance
from bbopt.registry import register_solver
from bbopt.restarts import BIPOP
from bbopt.sigma import Learned, SigmaRule
from bbopt.solver import Solver

__all__ = ["CEM", "PRESETS"]

PRESETS = {
    # A fixed problem: mu <- elite mean (SGD, lr 1), the elites' second moment shapes a full
    # covariance, CSA for the step size, BIPOP restarts.
    "problem": Preset(
        optimizer=torch.optim.SGD,
        lr=1.0,
        sigma=1.0,
        noise=full_covariance(rate=3.0),
        samples=cma_population,
        restarts=BIPOP,
        options={"elite_fraction": 0.5},
    ),
    "batch": Preset(lr=1e-3, sigma=0.1, samples=16),
    "episodes": Preset(lr=0.01, sigma=0.3),
}


@register_solver("cem", presets=PRESETS)
class CEM(Solver):
    """Cross-entropy method. Options as `bbopt.Solver`, plus:

    Args:
        elite_fraction: share of each group kept as elites, in (0, 1]; at least 2 elites.
        sigma_floor: lower bound of the adapted sigma.
        sigma_rate: step on ``log sigma`` toward the elites' spread, in (0, 1]: ``log sigma +=
            rate * (mean elite eps^2 - 1) / 2`` (a natural-gradient step; 1 jumps to it).

    A float or sequence ``sigma`` is the initial value of that adaptation; pass a
    `bbopt.sigma.SigmaRule` (e.g. ``Fixed``) or a noise model to override it.
    """

    natural = True
    step_credit = False  # elites are whole episodes

    def __init__(
        self,
        policy,
        optimizer,
        *,
        sigma=None,
        elite_fraction: float = 0.25,
        sigma_floor: float = 1e-8,
        sigma_rate: float = 0.3,
        noise="gaussian",
        **options,
    ):
        check_float(elite_fraction, "elite_fraction", above=0.0, at_most=1.0)
        check_float(sigma_floor, "sigma_floor", above=0.0)
        check_float(sigma_rate, "sigma_rate", above=0.0, at_most=1.0)
        if options.get("natural", True) is not True:
            raise ValueError("Invalid natural: CEM's signal is the natural form sum_i w_i (x_i - mu) (mu - elite mean)")
        if not isinstance(noise, NoiseModel) and not isinstance(sigma, SigmaRule):
            sigma = Learned(0.5 if sigma is None else sigma, lr=sigma_rate, floor=sigma_floor, adaptive=False,
                            natural=True)  # fmt: skip
        super().__init__(policy, optimizer, sigma=sigma, noise=noise, **options)
        self.elite_fraction = float(elite_fraction)
        self.elites = math.ceil(self.elite_fraction * self.group_size)
        if self.elites < 2:
            raise ValueError(
                f"Invalid elite_fraction: {elite_fraction} keeps {self.elites} of {self.group_size} samples "
                "(expected at least 2 elites to measure their spread)"
            )

    def weights(self, losses, counts):
        elite = torch.zeros_like(losses)
        elites = math.ceil(self.elite_fraction * losses.shape[1])  # allocated groups vary in size
        best = torch.argsort(losses, dim=1, stable=True)[:, :elites]
        elite.scatter_(1, best, 1.0)
        # Mean over the elites' records: -1/k per elite outside episode mode.
        return -elite / (elite * counts).sum(dim=1, keepdim=True)
