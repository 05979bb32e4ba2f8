"""The ask/tell solver base: everything but a solver's weighting rule.

Candidates are ``x = mu + sigma * eps`` around the policy's deterministic output ``mu``. A
solver turns the losses of its candidates into one output-space signal ``v`` of ``mu``'s
shape, and the policy is trained by one vector-Jacobian product, ``mu.backward(v)``, followed
by one ``optimizer.step()``. Sampling, antithetic pairing, bookkeeping, loss validation, the
VJP, the sigma rule and ``state_dict`` live here; a subclass writes only

* ``weights(losses, counts) -> [G, n]``: one weight per sample, and optionally
* ``output_signal(...)`` and ``log_sigma_gradient(...)`` when its signal is not of the
  likelihood-ratio form ``w * score(eps) / sigma`` (CEM).

Three modes, chosen by how the solver is used:

* no input: ``ask() -> [n, d]``, ``tell(losses[n])`` (one group);
* a batch of inputs: ``ask(inputs[B, ...]) -> [B, n, d]``, ``tell(losses[B, n])``; the n
  samples of one input form a group (ranking, baselines and antithetic pairs stay inside it);
* episodes (``episodes=N``): ``ask(observations[m, ...], episode_ids=[m])`` once per time
  step for the m live episodes, one sample each; ``tell(losses[N])`` attributes each episode's
  loss to all its steps: one batched forward over the recorded inputs and one VJP.

The gradient sent back is that of the mean over groups of the expected loss, like
``loss.mean()`` over a batch in backprop.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bbopt.noise import Noise, make_noise
from bbopt.sigma import SigmaRule, SigmaValue, as_sigma_rule

__all__ = ["Solver"]

_NAN_POLICIES = ("raise", "worst")


@dataclass
class _Asked:
    """What one group-mode ``ask`` left for ``tell``: mu with its graph, and the noise."""

    mu: torch.Tensor  # [G, d], attached to the policy's graph
    noise: torch.Tensor  # [G, n, d]
    batched: bool  # ask(inputs) rather than ask()


@dataclass
class _Step:
    """One episode-mode ``ask``: the inputs, the noise and which episodes they belong to."""

    inputs: torch.Tensor  # [m, ...]
    noise: torch.Tensor  # [m, d]
    episode_ids: torch.Tensor  # [m], int64


class Solver:
    """Base class of the output-space solvers (`bbopt.OVLR`, `bbopt.ES`, `bbopt.CEM`).

    Args:
        policy: any ``torch.nn.Module``. Called as ``policy()`` (no input, returns ``[d]``) or
            ``policy(inputs)`` (returns ``[B, d]``).
        optimizer: a ``torch.optim.Optimizer`` over the policy's parameters.
        sigma: noise scale: a positive float, a 1-D ``[d]`` sequence (one per output
            dimension) or a `bbopt.sigma.SigmaRule` (`Fixed`, `Scheduled`, `Learned`).
        samples: candidates per input, ``n`` (group modes; default 16).
        episodes: population size ``N``; switches on episode mode (one sample per episode).
        noise: ``"gaussian" | "laplace" | "student_t"`` or a `bbopt.noise.Noise`.
        df: degrees of freedom of Student-t noise (> 2).
        antithetic: sample pairs ``(eps, -eps)`` inside each group (episode mode: whole
            episodes ``i`` and ``i + N/2`` with negated noise; give both episodes of a pair
            the same environment seed, so their loss difference measures the noise); needs an
            even ``n``/``N``.
        seed, generator: the solver's only source of randomness (give at most one).
        nan_policy: ``"raise"`` refuses non-finite losses, naming their indices; ``"worst"``
            replaces them by the worst finite loss of their group.
        maximize: ``tell`` receives rewards to maximize instead of losses.
    """

    def __init__(
        self,
        policy: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        sigma: SigmaValue | SigmaRule = 0.1,
        samples: int | None = None,
        episodes: int | None = None,
        noise: str | Noise = "gaussian",
        df: float = 5.0,
        antithetic: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        nan_policy: str = "raise",
        maximize: bool = False,
    ):
        if not isinstance(policy, nn.Module):
            raise ValueError(f"Invalid policy: {type(policy).__name__} (expected a torch.nn.Module)")
        parameters = [p for p in policy.parameters() if p.requires_grad]
        if not parameters:
            raise ValueError("Invalid policy: it has no parameters that require grad (nothing to train)")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"Invalid optimizer: {type(optimizer).__name__} (expected a torch.optim.Optimizer)")
        if episodes is not None and samples is not None:
            raise ValueError(
                "Invalid samples: episode mode (episodes=N) takes one sample per episode; leave samples unset"
            )
        if episodes is not None:
            _check_count(episodes, "episodes", minimum=2)
        samples = 16 if samples is None and episodes is None else samples
        if samples is not None:
            _check_count(samples, "samples", minimum=1)
        group_size = episodes if episodes is not None else samples
        if antithetic and group_size % 2:
            name = "episodes" if episodes is not None else "samples"
            raise ValueError(
                f"Invalid {name}: {group_size} with antithetic=True (pairs (eps, -eps) need an even "
                f"number; use {group_size + 1} or antithetic=False)"
            )
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"Invalid nan_policy: {nan_policy!r} (expected one of {_NAN_POLICIES})")
        if seed is not None and generator is not None:
            raise ValueError("Invalid seed/generator: give at most one of them")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"Invalid generator: {type(generator).__name__} (expected a torch.Generator)")

        self.policy = policy
        self.optimizer = optimizer
        self.sigma = as_sigma_rule(sigma)
        self.samples = samples
        self.episodes = episodes
        self.noise = make_noise(noise, df=df)
        self.antithetic = bool(antithetic)
        self.nan_policy = nan_policy
        self.maximize = bool(maximize)
        self.device = parameters[0].device
        self.dtype = parameters[0].dtype
        if generator is None:
            generator = torch.Generator(device=self.device)
            if seed is None:
                generator.seed()  # fresh entropy, without touching the global RNG
            else:
                generator.manual_seed(int(seed))
        self.generator = generator
        self.steps = 0  # completed tells
        self.evaluations = 0  # candidates told
        self._asked: _Asked | None = None
        self._episode_steps: list[_Step] = []
        self._sigma_cache: tuple[torch.Tensor | None, torch.Tensor] = (None, torch.empty(0))

    # ------------------------------------------------------------------ the subclass's maths
    def weights(self, losses: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One weight per sample, ``[G, n]``, from losses ``[G, n]`` (float64).

        ``counts[G, n]`` is the number of recorded steps of each sample (1 outside episode
        mode). The default signal is ``v = sum_i w_i * score(eps_i) / sigma`` per group.
        """
        raise NotImplementedError

    def output_signal(self, weights: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The signal ``v[rows, d]`` for each row of ``mu`` from the k samples drawn around it.

        ``weights[rows, k]`` (already divided by the number of groups), ``noise[rows, k, d]``.
        Default: the likelihood-ratio form ``v = sum_k w_k * score(eps_k) / sigma``.
        """
        return torch.bmm(weights[:, None, :], self.noise.score(noise))[:, 0] / sigma

    def log_sigma_gradient(self, weights: torch.Tensor, noise: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The signal for a learning sigma rule, of the rule's ``shape`` (``[]`` or ``[d]``).

        ``weights[groups, k]`` and ``noise[groups, k, d]`` per group (in episode mode the whole
        population is one group of all recorded steps). Default: the likelihood-ratio estimate
        of ``d E[loss] / d log sigma``, ``sum w * (eps * score(eps) - 1)`` (Gaussian:
        ``eps**2 - 1``), summed over dimensions for a scalar sigma.
        """
        gradient = torch.einsum("gk,gkd->d", weights, self.noise.log_scale_score(noise))
        return gradient.sum() if len(shape) == 0 else gradient

    # ------------------------------------------------------------------------------ ask/tell
    def ask(self, inputs=None, *, episode_ids=None) -> torch.Tensor:
        """Candidates: ``[n, d]`` without inputs, ``[B, n, d]`` for ``inputs[B, ...]``.

        In episode mode: ``ask(observations[m, ...], episode_ids=[m])`` returns ``[m, d]``
        actions, one per live episode (``episode_ids`` defaults to all ``N`` episodes).
        One policy forward per call.
        """
        if self.episodes is not None:
            return self._ask_episodes(inputs, episode_ids)
        if episode_ids is not None:
            raise ValueError("Invalid episode_ids: only episode mode (episodes=N) takes them")
        if self._asked is not None:
            raise RuntimeError("ask() called twice without tell(): tell the losses of the last candidates first")
        with torch.enable_grad():
            if inputs is None:
                mu = self.policy()
                if not isinstance(mu, torch.Tensor) or mu.dim() != 1:
                    raise ValueError(f"Invalid policy output: {_shape_of(mu)} from policy() (expected [d])")
                mu = mu[None]
            else:
                inputs = self._as_inputs(inputs)
                mu = self.policy(inputs)
                if not isinstance(mu, torch.Tensor) or mu.dim() != 2 or mu.shape[0] != inputs.shape[0]:
                    raise ValueError(
                        f"Invalid policy output: {_shape_of(mu)} from policy(inputs[{inputs.shape[0]}, ...]) "
                        f"(expected [{inputs.shape[0]}, d])"
                    )
        noise = self._sample(mu.shape[0], self.samples, mu.shape[1], mu.dtype)
        candidates = torch.addcmul(mu.detach()[:, None, :], self._sigma_like(mu), noise)
        self._asked = _Asked(mu=mu, noise=noise, batched=inputs is not None)
        return candidates if inputs is not None else candidates[0]

    def tell(self, losses, *, step_losses=None) -> dict[str, float]:
        """Update the policy from one loss per candidate; returns a small stats dict.

        ``losses``: ``[n]`` after ``ask()``, ``[B, n]`` after ``ask(inputs)``, ``[N]`` (one per
        episode) in episode mode. One VJP, one optimizer step.

        Episode mode only, ``step_losses``: per-step credit. One tensor per ``ask`` call since
        the last tell, ``step_losses[k][j]`` the loss still to come (cost-to-go, from that step
        to the end of the episode) of the j-th episode asked in call k. Each recorded step
        is then weighted by its own cost-to-go against the other episodes' cost-to-go at the
        same call (episodes not asked there count 0: nothing more comes to them), instead of
        by the whole episode's loss. The noise of a step is independent of the costs before
        it, so the estimate stays unbiased and loses the variance of those past costs.
        ``losses`` still gives the stats.
        """
        if self.episodes is not None:
            return self._tell_episodes(losses, step_losses)
        if step_losses is not None:
            raise ValueError("Invalid step_losses: per-step credit is for episode mode (episodes=N)")
        if self._asked is None:
            raise RuntimeError("tell() called before ask(): ask for candidates first")
        asked = self._asked
        groups, samples, _ = asked.noise.shape
        expected = (groups, samples) if asked.batched else (samples,)
        losses = self._as_losses(losses, expected).reshape(groups, samples)
        self._asked = None
        stats = self._update(mu=asked.mu, losses=losses, counts=torch.ones_like(losses), noise=asked.noise)
        self.evaluations += groups * samples
        return stats

    # ----------------------------------------------------------------------- episode mode
    def _ask_episodes(self, inputs, episode_ids) -> torch.Tensor:
        if inputs is None:
            raise ValueError("Invalid inputs: episode mode needs the observations of the live episodes, [m, ...]")
        inputs = self._as_inputs(inputs)
        if episode_ids is None:
            episode_ids = torch.arange(self.episodes)
        episode_ids = torch.as_tensor(episode_ids).to(torch.int64).reshape(-1).cpu()
        if episode_ids.numel() != inputs.shape[0]:
            raise ValueError(
                f"Invalid episode_ids: {episode_ids.numel()} ids for {inputs.shape[0]} inputs (expected one per input)"
            )
        if episode_ids.numel() and (episode_ids.min() < 0 or episode_ids.max() >= self.episodes):
            raise ValueError(f"Invalid episode_ids: {episode_ids.tolist()} (expected ids in [0, {self.episodes}))")
        if episode_ids.unique().numel() != episode_ids.numel():
            raise ValueError(f"Invalid episode_ids: {episode_ids.tolist()} (each episode at most once per step)")
        with torch.no_grad():
            mu = self.policy(inputs)
        if not isinstance(mu, torch.Tensor) or mu.dim() != 2 or mu.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"Invalid policy output: {_shape_of(mu)} from policy(inputs[{inputs.shape[0]}, ...]) "
                f"(expected [{inputs.shape[0]}, d])"
            )
        # Noise for the whole population every step, so episode i's noise does not depend on
        # which other episodes are still running; pairs (i, i + N/2) are negations.
        noise = self._sample(1, self.episodes, mu.shape[1], mu.dtype)[0][episode_ids.to(mu.device)]
        self._episode_steps.append(_Step(inputs=inputs, noise=noise, episode_ids=episode_ids))
        return torch.addcmul(mu, self._sigma_like(mu), noise)

    step_credit = True  # whether weights() makes sense per ask call (tell(step_losses=...))

    def _step_weights(self, step_losses, steps) -> torch.Tensor:
        """Per-record weights from per-step cost-to-go: one group per ask call."""
        if not self.step_credit:
            raise ValueError(f"Invalid step_losses: {type(self).__name__} has no per-step credit")
        if len(step_losses) != len(steps):
            raise ValueError(f"Invalid step_losses: {len(step_losses)} tensors for {len(steps)} ask() calls")
        to_go = torch.zeros(len(steps), self.episodes, dtype=torch.float64)
        for k, (values, step) in enumerate(zip(step_losses, steps, strict=True)):
            values = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
            if values.numel() != step.episode_ids.numel() or not bool(torch.isfinite(values).all()):
                raise ValueError(f"Invalid step_losses[{k}]: expected {step.episode_ids.numel()} finite values "
                                 f"(one per episode asked in that call), got {values.numel()}")  # fmt: skip
            to_go[k, step.episode_ids] = values
        weights = self.weights(to_go, torch.ones_like(to_go))  # [calls, N], each call a group
        return torch.cat([weights[k, step.episode_ids] for k, step in enumerate(steps)])

    def _tell_episodes(self, losses, step_losses=None) -> dict[str, float]:
        if not self._episode_steps:
            raise RuntimeError("tell() called before ask(): run the episodes through ask() first")
        losses = self._as_losses(losses, (self.episodes,)).reshape(1, self.episodes)
        episode_of_record = torch.cat([step.episode_ids for step in self._episode_steps]).to(self.device)
        counts = torch.bincount(episode_of_record, minlength=self.episodes).to(torch.float64)[None]
        if bool((counts == 0).any()):
            missing = (counts[0] == 0).nonzero().flatten().tolist()
            raise ValueError(f"Invalid losses: episodes {missing} took no step (ask() each episode at least once)")
        record_weights = None if step_losses is None else self._step_weights(step_losses, self._episode_steps)
        steps, self._episode_steps = self._episode_steps, []
        with torch.enable_grad():
            mu = self.policy(torch.cat([step.inputs for step in steps]))  # one batched forward
        noise = torch.cat([step.noise for step in steps])
        stats = self._update(mu=mu, losses=losses, counts=counts, noise=noise, episode_of_record=episode_of_record,
                             record_weights=record_weights)  # fmt: skip
        self.evaluations += self.episodes
        return stats

    # ----------------------------------------------------------------------- the one update
    def _update(self, *, mu, losses, counts, noise, episode_of_record=None, record_weights=None) -> dict[str, float]:
        """Weights -> output signal v -> one VJP -> one optimizer step -> sigma rule.

        Group mode: ``mu[G, d]``, ``noise[G, n, d]``. Episode mode: ``mu[R, d]`` and
        ``noise[R, d]`` for the R recorded steps, ``episode_of_record[R]``.
        """
        groups = losses.shape[0]
        sigma = self._sigma_like(mu)
        weights = self.weights(losses, counts).to(device=self.device, dtype=mu.dtype) / groups  # mean over groups
        if episode_of_record is None:  # row g of mu is shared by the n samples of group g
            by_row = by_group = (weights, noise)
        else:  # one mu row per recorded step; the population is one group
            if record_weights is None:
                record_weights = weights[0, episode_of_record]
            else:  # per-step credit (tell(step_losses=...))
                record_weights = record_weights.to(device=self.device, dtype=mu.dtype)
            by_row = (record_weights[:, None], noise[:, None])
            by_group = (record_weights[None], noise[None])
        v = self.output_signal(*by_row, sigma)
        self.optimizer.zero_grad(set_to_none=True)
        mu.backward(v)  # the one VJP
        gradient_norm = _total_norm(self.policy)
        self.optimizer.step()
        learns = self.sigma.learns
        self.sigma.step(self.log_sigma_gradient(*by_group, self.sigma.shape) if learns else None)
        self.steps += 1
        return {
            "step": float(self.steps),
            "loss_mean": float(losses.mean()),
            "loss_min": float(losses.min()),
            "grad_norm": gradient_norm,
            "sigma": float(self.sigma.value().mean()),
        }

    # ------------------------------------------------------------------------------ helpers
    def _sample(self, groups: int, samples: int, dimension: int, dtype: torch.dtype) -> torch.Tensor:
        """Noise ``[groups, samples, dimension]``; with antithetic pairs, rows ``i`` and
        ``i + samples/2`` of each group are negations of each other."""
        if len(self.sigma.shape) == 1 and self.sigma.shape[0] != dimension:
            raise ValueError(
                f"Invalid sigma: {self.sigma.shape[0]} entries for a policy output of dimension {dimension} "
                f"(expected a scalar or [{dimension}])"
            )
        half = samples // 2 if self.antithetic else samples
        noise = self.noise.sample((groups, half, dimension), generator=self.generator, dtype=dtype)
        if self.antithetic:
            noise = torch.cat([noise, -noise], dim=1)
        return noise.to(self.device)

    def _sigma_like(self, mu: torch.Tensor) -> torch.Tensor:
        """Current sigma in mu's dtype and device, converted once per value of the rule (every
        rule assigns a new ``log_sigma`` tensor when sigma changes)."""
        source, cached = self._sigma_cache
        if source is not self.sigma.log_sigma or cached.dtype != mu.dtype or cached.device != mu.device:
            cached = self.sigma.value().to(device=mu.device, dtype=mu.dtype)
            self._sigma_cache = (self.sigma.log_sigma, cached)
        return cached

    def _as_inputs(self, inputs) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            inputs = torch.as_tensor(np.asarray(inputs))
        if inputs.dim() == 0:
            raise ValueError("Invalid inputs: a scalar (expected a batch [B, ...])")
        if inputs.is_floating_point() and inputs.dtype != self.dtype:
            inputs = inputs.to(self.dtype)
        return inputs.to(self.device)

    def _as_losses(self, losses, expected: tuple[int, ...]) -> torch.Tensor:
        try:
            if isinstance(losses, torch.Tensor):
                losses = losses.detach().to(device="cpu", dtype=torch.float64)
            else:
                losses = torch.as_tensor(np.asarray(losses), dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"Invalid losses: {type(losses).__name__} (expected numbers of shape {list(expected)})"
            ) from error
        if tuple(losses.shape) != expected:
            raise ValueError(f"Invalid losses: shape {list(losses.shape)} (expected {list(expected)})")
        if self.maximize:
            losses = -losses
        if bool(torch.isfinite(losses).all()):
            return losses
        bad = ~torch.isfinite(losses)
        where = [tuple(i) if len(i) > 1 else i[0] for i in bad.nonzero().tolist()]
        if self.nan_policy == "raise":
            shown = ", ".join(map(str, where[:10])) + (" ..." if len(where) > 10 else "")
            raise ValueError(
                f"Invalid losses: {len(where)} non-finite value(s) at indices {shown} "
                "(nan_policy='raise'; nan_policy='worst' replaces them by the worst finite loss of their group)"
            )
        grouped = losses.reshape(-1, expected[-1])
        finite = torch.where(bad.reshape(grouped.shape), -math.inf, grouped)
        worst = finite.max(dim=1, keepdim=True).values
        if bool((~torch.isfinite(worst)).any()):
            raise ValueError("Invalid losses: a group has no finite loss (nan_policy='worst' needs at least one)")
        losses = torch.where(bad.reshape(grouped.shape), worst, grouped).reshape(expected)
        return losses

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Policy, optimizer, RNG, sigma rule and counters; taken between tell and ask."""
        if self._asked is not None or self._episode_steps:
            raise RuntimeError("state_dict() between ask() and tell(): tell the pending losses first")
        return {
            "solver": type(self).__name__,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "sigma": self.sigma.state_dict(),
            "steps": self.steps,
            "evaluations": self.evaluations,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`; the run then continues exactly as the saved one would."""
        if state.get("solver") != type(self).__name__:
            raise ValueError(f"Invalid state: saved from {state.get('solver')!r} (expected {type(self).__name__!r})")
        state = copy.deepcopy(state)  # torch.optim keeps the given tensors; share nothing with the source
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.sigma.load_state_dict(state["sigma"])
        self.steps = int(state["steps"])
        self.evaluations = int(state["evaluations"])
        self._asked = None
        self._episode_steps = []

    def __repr__(self) -> str:
        size = f"episodes={self.episodes}" if self.episodes is not None else f"samples={self.samples}"
        return (
            f"{type(self).__name__}({size}, sigma={self.sigma!r}, noise={self.noise!r}, antithetic={self.antithetic})"
        )


def _check_count(value, argument: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"Invalid {argument}: {value!r} (expected an int >= {minimum})")


def _shape_of(value) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def _total_norm(module: nn.Module) -> float:
    gradients = [p.grad for p in module.parameters() if p.grad is not None]
    return float(nn.utils.get_total_norm(gradients)) if gradients else 0.0
