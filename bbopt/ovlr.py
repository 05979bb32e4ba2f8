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

from bbopt.registry import register_solver
from bbopt.solver import Solver

__all__ = ["OVLR"]


@register_solver("ovlr")
class OVLR(Solver):
    """Output-level likelihood ratio. Options as `bbopt.Solver`, plus ``baseline``.

    Defaults: Gaussian noise, ``antithetic=True``, ``baseline=True`` (leave-one-out, or
    leave-pair-out with antithetic pairs; ``False`` gives the paper's plain estimator).
    """

    def __init__(self, policy, optimizer, *, antithetic: bool = True, baseline: bool = True, **options):
        super().__init__(policy, optimizer, antithetic=antithetic, **options)
        self.baseline = bool(baseline)

    def weights(self, losses, counts):
        samples = losses.shape[1]
        if not self.baseline:
            return losses / samples
        total = losses.sum(dim=1, keepdim=True)
        if self.antithetic:  # leave-pair-out: the partner of i is (i + n/2) mod n
            others, excluded = total - losses - losses.roll(samples // 2, dims=1), 2
        else:  # leave-one-out
            others, excluded = total - losses, 1
        if samples <= excluded:  # no other sample to form a baseline from
            return losses / samples
        return (losses - others / (samples - excluded)) / samples
