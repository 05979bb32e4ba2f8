"""Query allocation across the inputs of a batch (FLOPS, Ren et al., ICLR 2025).

In batch mode a solver spends ``B * samples`` candidates per step. By default every input gets
``samples``; with ``allocation=`` the budget goes unevenly, more where the per-input estimate
is noisier. The batch estimate is ``(1/B) sum_j g_j`` with ``g_j`` the mean over the ``n_j``
samples of input j, so its variance is ``(1/B^2) sum_j tr(Sigma_j) / n_j``; under a fixed total
that is least for ``n_j`` proportional to ``sqrt(tr Sigma_j)`` (the paper's Theorem 2), and the
saving against equal allocation is ``1 - (sum_j sqrt(t_j))^2 / (B sum_j t_j)``.

How a step runs (`bbopt.Solver`): an allocator that needs information first asks a *pilot* of
``pilot`` samples per input (one antithetic pair by default). ``tell`` of the pilot's losses
updates nothing; the next ``ask`` with the same inputs returns the allocated rest of the
budget, and its ``tell`` makes the one VJP. The pilot's samples only steer the allocation (the
estimate from the allocated samples stays unbiased, whatever the allocation); ``reuse=True``
lets them into the estimate too, with the fixed weight ``pilot / samples`` (fixed, so still
unbiased; with equal sizes exactly the equal-allocation estimate). Reuse pays off when the
traces are alike; when they differ (where allocating pays off) it costs, as it adds
``(pilot/samples)^2 t_j / pilot`` to every input's variance, the largest ones included: on
digits with a trained net (benchmarks/allocation.py) the attainable saving with exact traces is
0.79 with reuse and 0.88 without, against 0.91 predicted. From the pilot the
allocator gets, per input, ``t_j``: the mean squared norm of the solver's per-sample output
signal (an estimate of ``tr Sigma_j`` in output space; for one pair, an upper bound that
counts the squared mean too), the mean pilot loss (the paper's "clean" loss, to second order in
sigma, without spending an extra query) and the clean output ``mu_j`` (the embedding).

Candidates are then flat, ``[N, d]``, input after input; ``solver.groups`` (``[N]``) names the
input of each row, and ``tell`` takes ``[N]``. Sizes are whole antithetic pairs (with
``antithetic``), at least 2 per input, and sum exactly to the budget.

* `Equal` - ``samples`` per input, no pilot (what ``allocation=None`` does, in flat form).
* `Optimal` - ``n_j`` proportional to ``sqrt(t_j)``, at least the minimum (water-filling), the
  pilot's ``t_j`` shrunk halfway toward the batch mean by default (one pair is a poor estimate).
* `Gaussian` - the paper's Gaussian allocator: relative sizes ``A ~ N(m, K)``, ``m_j = b0 + b1
  tanh(loss_j)``, ``K_ij = s^2 exp(-D_ij / (2 g^2))`` over the cosine distance ``D_ij = 1 -
  cos(mu_i, mu_j)`` of the clean outputs (the paper writes the cosine similarity; a distance is
  what an RBF kernel takes); the 4 parameters are trained each step by their own
  likelihood-ratio gradient of ``J = sum_j t_j / n_j(A)`` (Adam), then one ``A`` is drawn.
* `Bernoulli` - an input whose pilot loss is below the batch mean (an easy one: InfoBatch's
  rule, which the paper's allocator follows) gets half a share with probability ``p``; the
  pruned queries go to the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bbopt.checks import check_bool, check_float, check_int

__all__ = [
    "Allocation",
    "Bernoulli",
    "Equal",
    "Gaussian",
    "Optimal",
    "Pilot",
    "apportion",
    "predicted_reduction",
    "shrunk",
]


@dataclass
class Pilot:
    """What the pilot told about each of the B inputs."""

    traces: torch.Tensor  # [B] float64: mean squared norm of the per-sample output signal
    losses: torch.Tensor  # [B] float64: mean pilot loss
    outputs: torch.Tensor  # [B, d] float64: the clean outputs mu_j


def apportion(scores: torch.Tensor, total: int, minimum: int) -> torch.Tensor:
    """Integer sizes ``[B]`` proportional to ``scores`` (>= 0), each >= ``minimum``, summing to
    ``total`` exactly: water-filling (inputs whose share falls below the minimum get the minimum,
    the rest is shared among the others), then largest remainders. All-zero scores share
    equally."""
    shares = continuous_shares(scores, float(total), float(minimum))
    sizes = shares.floor().long().clamp_min(minimum)
    remainder = total - int(sizes.sum())
    if remainder > 0:
        order = torch.argsort(shares - sizes, descending=True, stable=True)
        sizes[order[:remainder]] += 1
    elif remainder < 0:  # floors below the minimum were lifted: take back from the largest
        for index in torch.argsort(sizes, descending=True, stable=True)[:-remainder].tolist():
            sizes[index] -= 1
    return sizes


def continuous_shares(scores: torch.Tensor, total: float, minimum: float) -> torch.Tensor:
    """The real-valued allocation of `apportion`: ``[B]`` float64 proportional to the scores
    where that is >= ``minimum``, ``minimum`` elsewhere, summing to ``total``."""
    scores = scores.to(torch.float64).clamp_min(0.0)
    count = scores.shape[0]
    if total < count * minimum:
        raise ValueError(f"Invalid budget: {total:g} candidates for {count} inputs (expected >= {minimum:g} each)")
    if not bool((scores > 0).any()):
        scores = torch.ones_like(scores)
    fixed = torch.zeros(count, dtype=torch.bool)
    shares = torch.empty(count, dtype=torch.float64)
    for _ in range(count):
        free = ~fixed
        rest = total - minimum * int(fixed.sum())
        weights = scores[free]
        if float(weights.sum()) <= 0:  # only zero scores left free: they share equally
            shares[free] = rest / int(free.sum())
            break
        shares[free] = rest * weights / weights.sum()
        low = free & (shares < minimum)
        if not bool(low.any()):
            break
        fixed |= low
        shares[fixed] = minimum
    return shares


def predicted_reduction(traces: torch.Tensor) -> float:
    """The variance saved by ``n_j ~ sqrt(t_j)`` over equal sizes at the same total (Theorem 2):
    ``1 - (sum sqrt t)^2 / (B sum t)``; 0 when all traces are equal (or zero)."""
    traces = traces.to(torch.float64).clamp_min(0.0)
    total = float(traces.sum())
    if total <= 0:
        return 0.0
    return 1.0 - float(traces.sqrt().sum()) ** 2 / (traces.shape[0] * total)


class Allocation:
    """Base class: ``sizes(total, minimum, pilot, generator) -> [B]`` integer shares (in units of
    the solver's pair or sample) that sum to ``total``. ``pilot`` (samples per input asked
    first) is 0 for allocators that need no information; ``reuse``: the pilot's samples also
    enter the estimate (with weight ``pilot / samples``)."""

    pilot = 0
    reuse = False

    def sizes(self, count: int, total: int, minimum: int, pilot: Pilot | None, generator: torch.Generator):
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"Invalid state: allocation {type(self).__name__} has no state (got {sorted(state)})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pilot={self.pilot}, reuse={self.reuse})"


def _check_pilot(pilot: int) -> int:
    return check_int(pilot, "pilot", minimum=2)


class Equal(Allocation):
    """Every input the same share (the default; no pilot)."""

    def sizes(self, count, total, minimum, pilot, generator):
        return apportion(torch.ones(count), total, minimum)


def shrunk(traces: torch.Tensor, shrink: float) -> torch.Tensor:
    """``(1 - shrink) t_j + shrink * mean(t)``: pilot traces pulled toward the batch mean."""
    return (1.0 - shrink) * traces + shrink * traces.mean()


class Optimal(Allocation):
    """``n_j`` proportional to ``sqrt(t_j)``, the traces measured by a pilot of ``pilot`` samples
    per input (FLOPS, Theorem 2's deterministic optimum), shrunk toward the batch mean by
    ``shrink`` (in [0, 1]; 1 is equal allocation). A pilot of one pair estimates a trace from
    one draw: under a 0-1 loss both members of a pair often score alike, the estimate is 0 and
    the input would get the minimum although its trace is not small, which raised the variance
    of the batch estimate tenfold on digits without shrinkage."""

    def __init__(self, pilot: int = 2, *, shrink: float = 0.5, reuse: bool = False):
        self.pilot = _check_pilot(pilot)
        self.shrink = check_float(shrink, "shrink", at_least=0.0, at_most=1.0)
        self.reuse = check_bool(reuse, "reuse")

    def sizes(self, count, total, minimum, pilot, generator):
        return apportion(shrunk(pilot.traces, self.shrink).sqrt(), total, minimum)

    def __repr__(self) -> str:
        return f"Optimal(pilot={self.pilot}, shrink={self.shrink}, reuse={self.reuse})"


class Bernoulli(Allocation):
    """Each input whose pilot loss is below the batch mean gets half a share with probability
    ``p``; the pruned queries are shared by the others."""

    def __init__(self, p: float = 0.5, pilot: int = 2, *, reuse: bool = False):
        self.p = check_float(p, "p", at_least=0.0, at_most=1.0)
        self.pilot = _check_pilot(pilot)
        self.reuse = check_bool(reuse, "reuse")

    def sizes(self, count, total, minimum, pilot, generator):
        coins = torch.rand(count, generator=generator, dtype=torch.float64, device=generator.device).cpu()
        easy = pilot.losses < pilot.losses.mean()
        scores = torch.where(easy & (coins < self.p), 0.5, 1.0).to(torch.float64)
        return apportion(scores, total, minimum)

    def __repr__(self) -> str:
        return f"Bernoulli(p={self.p}, pilot={self.pilot}, reuse={self.reuse})"


class Gaussian(Allocation):
    """The Gaussian allocator of FLOPS (§4.1-4.3), in relative units (1 = an equal share).

    Args:
        pilot: samples per input asked first.
        lr: Adam's step on the parameters ``(b0, b1, log s, log g)`` (initially ``(1, 0.5,
            log 0.2, 0)``: the paper's ``A-bar``, ``A-bar/2``, ``A-bar/5``, 1).
        draws: allocations drawn per likelihood-ratio gradient (the paper's K).
        steps: gradient steps per training step, before the allocation is drawn.
        shrink: the pilot's traces are pulled toward the batch mean by this share (`Optimal`).
        reuse: the pilot's samples also enter the estimate.
    """

    def __init__(self, pilot: int = 2, *, lr: float = 0.05, draws: int = 16, steps: int = 5, shrink: float = 0.5,
                 reuse: bool = False):  # fmt: skip
        self.pilot = _check_pilot(pilot)
        self.shrink = check_float(shrink, "shrink", at_least=0.0, at_most=1.0)
        self.reuse = check_bool(reuse, "reuse")
        self.lr = check_float(lr, "lr", above=0.0)
        self.draws = check_int(draws, "draws", minimum=2)
        self.steps = check_int(steps, "steps", minimum=0)
        self.parameters = torch.tensor([1.0, 0.5, math.log(0.2), 0.0], dtype=torch.float64)
        self._moments = torch.zeros(2, 4, dtype=torch.float64)  # Adam's first and second moments
        self._updates = 0

    def distribution(self, pilot: Pilot, parameters: torch.Tensor | None = None):
        """``N(m, K)`` over the relative shares of the batch."""
        b0, b1, log_scale, log_length = self.parameters if parameters is None else parameters
        mean = b0 + b1 * torch.tanh(pilot.losses)
        unit = torch.nn.functional.normalize(pilot.outputs, dim=1)
        distance = (1.0 - unit @ unit.T).clamp(0.0, 2.0)
        kernel = torch.exp(-distance / (2.0 * torch.exp(2.0 * log_length)))
        kernel = kernel + 1e-4 * torch.eye(len(mean), dtype=kernel.dtype)  # positive definite
        scale_tril = torch.exp(log_scale) * torch.linalg.cholesky(kernel)
        return torch.distributions.MultivariateNormal(mean, scale_tril=scale_tril)

    def objective(self, shares: torch.Tensor, pilot: Pilot, total: int, minimum: int) -> torch.Tensor:
        """``J = sum_j t_j / n_j`` per row of ``shares[K, B]`` (negative shares get the minimum)."""
        rows = [continuous_shares(row, float(total), float(minimum)) for row in shares.clamp_min(0.0)]
        return (pilot.traces[None] / torch.stack(rows)).sum(dim=1)

    def sizes(self, count, total, minimum, pilot, generator):
        pilot = Pilot(traces=shrunk(pilot.traces, self.shrink), losses=pilot.losses, outputs=pilot.outputs)
        scale = float(pilot.traces.sum() / (total / count))
        if scale > 0:  # nothing to learn from all-zero traces
            for _ in range(self.steps):
                self._step(pilot, total, minimum, generator, scale)
        with torch.no_grad():
            shares = self._sample(self.distribution(pilot), 1, generator)[0]
        return apportion(shares.clamp_min(0.0), total, minimum)

    def _sample(self, distribution, draws: int, generator: torch.Generator) -> torch.Tensor:
        normal = torch.randn((draws, distribution.mean.shape[0]), generator=generator, dtype=torch.float64,
                             device=generator.device).cpu()  # fmt: skip
        return distribution.mean + normal @ distribution.scale_tril.T

    def _step(self, pilot: Pilot, total: int, minimum: int, generator: torch.Generator, scale: float) -> None:
        parameters = self.parameters.clone().requires_grad_(True)
        distribution = self.distribution(pilot, parameters)
        with torch.no_grad():
            shares = self._sample(distribution, self.draws, generator)
            values = self.objective(shares, pilot, total, minimum) / scale  # 1 for equal shares
            advantages = values - values.mean()
        loss = (advantages * distribution.log_prob(shares)).mean()  # LR gradient of E[J]
        (gradient,) = torch.autograd.grad(loss, parameters)
        if not bool(torch.isfinite(gradient).all()):
            return
        self._updates += 1
        self._moments[0].mul_(0.9).add_(gradient, alpha=0.1)
        self._moments[1].mul_(0.999).addcmul_(gradient, gradient, value=0.001)
        first = self._moments[0] / (1 - 0.9**self._updates)
        second = self._moments[1] / (1 - 0.999**self._updates)
        self.parameters = (self.parameters - self.lr * first / (second.sqrt() + 1e-8)).clamp(-20.0, 20.0)

    def state_dict(self) -> dict:
        return {"parameters": self.parameters.clone(), "moments": self._moments.clone(), "updates": self._updates}

    def load_state_dict(self, state: dict) -> None:
        expected = {"parameters": (4,), "moments": (2, 4)}
        if not isinstance(state, dict) or set(state) != {*expected, "updates"}:
            raise ValueError("Invalid state: allocation Gaussian expects parameters, moments and updates")
        for key, shape in expected.items():
            value = state[key]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or not value.is_floating_point():
                raise ValueError(f"Invalid state: allocation.{key} (expected a float tensor of shape {list(shape)})")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"Invalid state: allocation.{key} holds non-finite values")
        updates = state["updates"]
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise ValueError(f"Invalid state: allocation.updates = {updates!r} (expected an int >= 0)")
        self.parameters = state["parameters"].to(torch.float64).clone()
        self._moments = state["moments"].to(torch.float64).clone()
        self._updates = updates

    def __repr__(self) -> str:
        return (f"Gaussian(pilot={self.pilot}, lr={self.lr}, draws={self.draws}, steps={self.steps}, "
                f"shrink={self.shrink}, reuse={self.reuse})")  # fmt: skip
