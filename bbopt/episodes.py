"""Episode mode's bookkeeping: what each ``ask`` recorded, and per-step credit.

In episode mode a solver is asked once per time step for the live episodes and told one loss
per episode at the end. `EpisodeRecord` keeps, per ask, the inputs, the noise and which
episodes they belong to, so that ``tell`` can run one batched forward over all recorded inputs
and attribute each episode's loss (or each step's cost-to-go) to its steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["EpisodeRecord", "Step"]


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

    def clear(self) -> None:
        self.steps = []

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
