"""Episode-mode training on ``bbopt/BinPackingOnline-v0``: a slot-scoring policy and a
lockstep rollout of a population of episodes.

`SlotScorer` reads the online observation ``[size, items left, room_1..room_K]`` (all / C),
builds per-slot features ``(size, items left, room, room - size, opened)`` and scores every
slot with a shared `SetNetwork`, so the policy is equivariant in the slots and works for any
K. `rollout` runs N episodes side by side: at each step one ``solver.ask`` for all live
episodes, then one ``tell`` with ``bins - lower bound`` per episode; antithetic partners
(i, i + N/2) get the same instance (common random numbers).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bbopt.envs.binpacking.env import BinPackingOnlineEnv
from bbopt.policies.set_network import SetNetwork

__all__ = ["SlotScorer", "evaluate_online", "rollout"]


class SlotScorer(nn.Module):
    """``forward(observations[B, 2 + K]) -> scores[B, K]``."""

    def __init__(self, *, width: int = 32, seed: int = 0):
        super().__init__()
        self.network = SetNetwork(5, width=width, hidden=(width,), seed=seed)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        size, left, room = observations[:, :1], observations[:, 1:2], observations[:, 2:]
        features = torch.stack(
            [size.expand_as(room), left.expand_as(room), room, room - size, (room < 1).to(room.dtype)], dim=-1
        )
        return self.network(features)


def rollout(solver, family: str, items: int, seeds: list[int]) -> np.ndarray:
    """One update's episodes: episode i packs the instance drawn with ``seeds[i]``; returns
    ``bins - lower bound`` per episode after telling them to ``solver`` (episode mode)."""
    envs = [BinPackingOnlineEnv(family=family, items=items) for _ in seeds]
    observations = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)])
    excess = np.zeros(len(envs))
    for _ in range(items):  # every episode has exactly `items` steps
        actions = solver.ask(torch.as_tensor(observations)).detach().numpy()
        for i, env in enumerate(envs):
            observations[i], _, done, _, info = env.step(actions[i])
            if done:
                excess[i] = info["bins"] - env.instance.lower_bound
    solver.tell(torch.as_tensor(excess, dtype=torch.float32))
    return excess


@torch.no_grad()
def evaluate_online(policy: nn.Module, family: str, items: int, seeds: list[int]) -> float:
    """Mean ``bins - lower bound`` of the noiseless policy over instances drawn with ``seeds``."""
    excess = []
    for seed in seeds:
        env = BinPackingOnlineEnv(family=family, items=items)
        observation, _ = env.reset(seed=seed)
        done = False
        while not done:
            scores = policy(torch.as_tensor(observation)[None])[0].numpy()
            observation, _, done, _, info = env.step(scores)
        excess.append(info["bins"] - env.instance.lower_bound)
    return float(np.mean(excess))
