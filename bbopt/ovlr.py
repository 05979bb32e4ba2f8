"""OVLR: the output-level likelihood-ratio estimator.

Zou, Ren, Jiang, Tao, Li, Fu, Shao, Liu, Peng, "Output-level variance-reduced likelihood
ratio" (ICML 2026), Algorithm 1. For ``x = mu + sigma * eps``,

    grad_theta E[L(x)] = E[ L(x) * score(eps) / sigma ] ^T  d mu / d theta,

so the output-space signal per input is ``v = sum_i w_i * score(eps_i) / (n * sigma)`` and the
update is one VJP, ``mu.backward(v)``. Variance reduction: output-level repetition (n samples
from one forward pass), antithetic pairs ``(eps, -eps)`` (default on), and a baseline that
keeps the estimator exactly unbiased: ``w_i = L_i - b_i`` with ``b_i`` the mean loss of the
*other* samples of the group, excluding sample i and, with antithetic pairs, its partner.
(With antithetic pairs the baseline leaves ``v`` unchanged; it matters for the ``log sigma``
gradient, whose score ``eps * score(eps) - 1`` is even.)
In episode mode, ``tell(losses, step_losses=...)`` applies the same weights per time step to
the cost-to-go (see `bbopt.Solver.tell`).
"""

from __future__ import annotations

import torch

from bbopt.presets import Preset, cma_population, full_covariance
from bbopt.registry import register_solver
from bbopt.restarts import BIPOP
from bbopt.solver import Solver

__all__ = ["OVLR", "PRESETS", "baseline_weights"]

PRESETS = {
    # A fixed problem (tuned on BBOB f1-f24, instances 1-5, d = 5 and 20): the natural signal
    # with SGD moves mu by the weighted perturbations (normalized weights: scale-free), a full
    # covariance learned from the same weights with CMA-ES's rates, CSA for the step size,
    # BIPOP restarts, and log(loss) told where losses are non-negative.
    "problem": Preset(
        optimizer=torch.optim.SGD,
        lr=1.5,
        sigma=1.0,
        noise=full_covariance(rate=2.0),
        samples=cma_population,
        restarts=BIPOP,
        log_loss=True,
        options={"natural": True, "normalize": True},
    ),
    "batch": Preset(lr=1e-3, sigma=0.1, samples=16),
    # Per episode (actions in [-1, 1]); from single-seed runs on HalfCheetah-v5 (bbopt train).
    "episodes": Preset(lr=0.003, sigma=0.3),
}


@register_solver("ovlr", presets=PRESETS)
class OVLR(Solver):
    """Output-level likelihood ratio. Options as `bbopt.Solver`, plus ``baseline``.

    Defaults: Gaussian noise, ``antithetic=True``, ``baseline=True`` (leave-one-out, or
    leave-pair-out with antithetic pairs; ``False`` gives the paper's plain estimator).
    """

    def __init__(self, policy, optimizer, *, antithetic: bool = True, baseline: bool = True, **options):
        super().__init__(policy, optimizer, antithetic=antithetic, **options)
        self.baseline = bool(baseline)
        if self.baseline and not self.antithetic and self.noise.sampler is not None:
            # QMC points of a group depend on each other, so a baseline from the other samples is
            # correlated with this sample's noise: biased. With pairs it cancels in the signal.
            raise ValueError(
                "Invalid qmc: with baseline=True, QMC noise needs antithetic=True (the baseline then "
                "cancels in each pair; without pairs it would bias the gradient), or baseline=False"
            )

    def weights(self, losses, counts):
        return baseline_weights(losses, antithetic=self.antithetic, baseline=self.baseline)


def baseline_weights(losses: torch.Tensor, *, antithetic: bool, baseline: bool = True) -> torch.Tensor:
    """OVLR's weights ``[G, n]`` from losses ``[G, n]``: ``(L_i - b_i) / n`` with ``b_i`` the mean
    loss of the group's other samples (leave-pair-out with antithetic pairs, whose partner of i
    is ``(i + n/2) mod n``), or ``L_i / n`` without a baseline. Shared by every likelihood-ratio
    estimator here (`bbopt.layerwise` too)."""
    samples = losses.shape[1]
    losses = losses / samples  # first: sums of n finite float64 losses then stay finite
    if not baseline:
        return losses
    total = losses.sum(dim=1, keepdim=True)
    if antithetic:  # leave-pair-out
        others, excluded = total - losses - losses.roll(samples // 2, dims=1), 2
    else:  # leave-one-out
        others, excluded = total - losses, 1
    if samples <= excluded:  # no other sample to form a baseline from
        return losses
    return losses - others / (samples - excluded)
