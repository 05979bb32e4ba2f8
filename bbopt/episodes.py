"""Episode mode's bookkeeping: what each ``ask`` recorded, and per-step credit.

In episode mode a solver is asked once per time step for the live episodes and told one loss
per episode at the end. `EpisodeRecord` keeps, per ask, the inputs, the noise and which
episodes they belong to, so that ``tell`` can run one batched forward over all recorded inputs
and attribute each episode's loss (or each step's cost-to-go) to its steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["AR1Sequences", "EpisodeRecord", "Step", "ar1_score"]


@dataclass
class Step:
    """One episode-mode ``ask``: the inputs, the noise and which episodes they belong to."""

    inputs: torch.Tensor  # [m, ...]
    noise: torch.Tensor  # [m, width]
    episode_ids: torch.Tensor  # [m], int64, on the CPU


class EpisodeRecord:
    """The steps of the episodes since the last ``tell``."""

    def __init__(self, episodes: int):
        self.episodes = episodes
        self.steps: list[Step] = []
        self.previous: torch.Tensor | None = None  # AR(1) noise: each episode's last noise [N, width]
        self.started = torch.zeros(episodes, dtype=torch.bool)  # ... and whether it has one

    def __bool__(self) -> bool:
        return bool(self.steps)

    def episode_ids(self, episode_ids, count: int) -> torch.Tensor:
        """Validated ids ``[count]`` (default: every episode) for one ask of ``count`` inputs."""
        if episode_ids is None:
            episode_ids = torch.arange(self.episodes)
        ids = torch.as_tensor(episode_ids).reshape(-1).cpu()
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"Invalid episode_ids: dtype {ids.dtype} (expected integer ids)")
        ids = ids.to(torch.int64)
        if ids.numel() != count:
            raise ValueError(f"Invalid episode_ids: {ids.numel()} ids for {count} inputs (expected one per input)")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.episodes):
            raise ValueError(f"Invalid episode_ids: {ids.tolist()} (expected ids in [0, {self.episodes}))")
        if ids.unique().numel() != ids.numel():
            raise ValueError(f"Invalid episode_ids: {ids.tolist()} (each episode at most once per step)")
        return ids

    def add(self, inputs: torch.Tensor, noise: torch.Tensor, episode_ids: torch.Tensor) -> None:
        self.steps.append(Step(inputs=inputs, noise=noise, episode_ids=episode_ids))
        if self.previous is None:
            self.previous = noise.new_zeros(self.episodes, noise.shape[1])
        self.previous[episode_ids.to(noise.device)] = noise
        self.started[episode_ids] = True

    def clear(self) -> None:
        self.steps = []
        self.previous = None
        self.started = torch.zeros(self.episodes, dtype=torch.bool)

    def continue_sequences(self, fresh: torch.Tensor, correlation: float) -> torch.Tensor:
        """AR(1) noise ``[N, width]`` for this step from fresh draws ``xi[N, width]``: ``phi
        eps_prev + sqrt(1 - phi^2) xi`` for episodes that took a step since the last tell, ``xi``
        for the others (the stationary start). Computed for the whole population, so an
        episode's sequence does not depend on which others are live; `add` records the step."""
        if self.previous is None:
            return fresh
        started = self.started.to(fresh.device)[:, None]
        continued = correlation * self.previous + math.sqrt(1.0 - correlation**2) * fresh
        return torch.where(started, continued, fresh)

    def episode_of_record(self) -> torch.Tensor:
        """``[R]``: the episode of each recorded step, in recording order."""
        return torch.cat([step.episode_ids for step in self.steps])

    def counts(self) -> torch.Tensor:
        """``[1, N]`` float64: recorded steps per episode; every episode must have one."""
        counts = torch.bincount(self.episode_of_record(), minlength=self.episodes).to(torch.float64)[None]
        if bool((counts == 0).any()):
            missing = (counts[0] == 0).nonzero().flatten().tolist()
            raise ValueError(f"Invalid losses: episodes {missing} took no step (ask() each episode at least once)")
        return counts

    def inputs(self) -> torch.Tensor:
        return torch.cat([step.inputs for step in self.steps])

    def noise(self) -> torch.Tensor:
        return torch.cat([step.noise for step in self.steps])

    def step_weights(self, step_losses, weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Per-record weights ``[R]`` from per-step costs-to-go: each ask call is one group.

        ``step_losses[k][j]`` is the cost still to come for the j-th episode asked in call k;
        episodes not asked in call k count 0 there (nothing more comes to them). ``weights`` is
        the solver's rule ``(losses[G, N], counts[G, N]) -> [G, N]``.
        """
        if len(step_losses) != len(self.steps):
            raise ValueError(f"Invalid step_losses: {len(step_losses)} tensors for {len(self.steps)} ask() calls")
        to_go = torch.zeros(len(self.steps), self.episodes, dtype=torch.float64)
        for k, (values, step) in enumerate(zip(step_losses, self.steps, strict=True)):
            values = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
            if values.numel() != step.episode_ids.numel() or not bool(torch.isfinite(values).all()):
                raise ValueError(f"Invalid step_losses[{k}]: expected {step.episode_ids.numel()} finite values "
                                 f"(one per episode asked in that call), got {values.numel()}")  # fmt: skip
            to_go[k, step.episode_ids] = values
        per_call = weights(to_go, torch.ones_like(to_go))  # [calls, N]
        return torch.cat([per_call[k, step.episode_ids] for k, step in enumerate(self.steps)])


def ar1_score(noise: torch.Tensor, episode_of_record: torch.Tensor, correlation: float) -> torch.Tensor:
    """The score of each record's noise within its episode's stationary AR(1) sequence,
    ``-d log p(eps_0..eps_T) / d eps_t`` (the precision matrix times the sequence), ``[R, width]``:

        (eps_t - phi eps_{t-1}) / (1 - phi^2)   (eps_0 at the first step)
        - phi (eps_{t+1} - phi eps_t) / (1 - phi^2)   (where a next step exists)

    Records of one episode are in time order in ``noise[R, width]``. By Stein's lemma, costs
    before step t are uncorrelated with this score (they depend on earlier noise only through
    the sequence, and the score of step t has zero covariance with every function of the steps
    before it), so per-step credit stays unbiased."""
    return AR1Sequences(episode_of_record, correlation).score(noise)


class AR1Sequences:
    """Where each record sits in its episode's AR(1) sequence, and the sequence's densities.

    The density of an episode's noise factors over its steps into ``N(eta_t; 0, I)``, the
    innovations ``eta_t = (eps_t - phi eps_{t-1}) / sqrt(1 - phi^2)`` (``eta_0 = eps_0``). Factor
    t is the density of step t's action given the episode so far, the conditional that per-step
    credit and the likelihood ratios of sample reuse act on (`factor_score`).

    Records of one episode are in time order in the ``[R, width]`` tensors given to the methods."""

    def __init__(self, episode_of_record: torch.Tensor, correlation: float):
        episodes = episode_of_record.cpu()
        count = len(episodes)
        order = torch.sort(episodes * count + torch.arange(count)).indices  # by episode, then time
        same = episodes[order[1:]] == episodes[order[:-1]]
        previous = torch.full((count,), -1, dtype=torch.int64)
        following = torch.full((count,), -1, dtype=torch.int64)
        previous[order[1:][same]] = order[:-1][same]
        following[order[:-1][same]] = order[1:][same]
        self.previous, self.following = previous, following
        self.correlation = correlation
        self.rest = 1.0 - correlation**2

    def _neighbour(self, values: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``values`` of each record's neighbour (0 where there is none) and where there is one, ``[R, 1]``."""
        exists = (index >= 0).to(values.device)[:, None]
        return torch.where(exists, values[index.clamp_min(0).to(values.device)], 0.0), exists

    def score(self, noise: torch.Tensor) -> torch.Tensor:
        """The whole sequence's score, as `ar1_score`."""
        phi = self.correlation
        before, has_previous = self._neighbour(noise, self.previous)
        after, has_following = self._neighbour(noise, self.following)
        own = torch.where(has_previous, (noise - phi * before) / self.rest, noise)
        return own - torch.where(has_following, phi * (after - phi * noise) / self.rest, 0.0)

    def innovations(self, noise: torch.Tensor) -> torch.Tensor:
        """``eta[R, width]``: each record's innovation, standard normal and independent of the
        episode's earlier steps (linear in ``noise``)."""
        before, has_previous = self._neighbour(noise, self.previous)
        return torch.where(has_previous, (noise - self.correlation * before) / math.sqrt(self.rest), noise)

    def factor_score(self, innovations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_t w_t d log p_t / d eps``, ``[R, width]``, of the factors ``p_t = N(eta_t; 0, I)``
        weighted ``w[R]`` each: factor t acts on ``eps_t`` (``eta_t / sqrt(1 - phi^2)``, ``eta_0``
        at the first step) and on ``eps_{t-1}`` (``-phi eta_t / sqrt(1 - phi^2)``). With one weight
        per episode it is that weight times `score`; with per-step weights each step's cost-to-go
        credits its own factor only, the conditional density of its action (PPO's per-step
        credit). Unbiased either way: factor t's score has zero mean given the episode before step
        t, so costs before t, and any baseline of the state at t, add nothing in expectation."""
        weighted = weights.to(innovations)[:, None] * innovations
        _, has_previous = self._neighbour(innovations, self.previous)
        own = torch.where(has_previous, weighted / math.sqrt(self.rest), weighted)
        after, has_following = self._neighbour(weighted, self.following)
        return own - torch.where(has_following, self.correlation * after / math.sqrt(self.rest), 0.0)
