"""Policies for Box-action simulators: observation normalization, an MLP, a squash to the box."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from bbopt.policies.mlp import MLP
from bbopt.policies.normalization import ObservationNormalizer

__all__ = ["BoxSquash", "control_policy", "normalizer_of"]


class BoxSquash(nn.Module):
    """``low + (high - low) * (tanh(x) + 1) / 2``: the policy's mean action lies inside the box.

    The solver's noisy action (mean + sigma * eps) can leave the box; the rollout driver clips
    it before ``env.step`` (the clip is part of the black box the solver sees).
    """

    def __init__(self, low, high):
        super().__init__()
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
            raise ValueError("Invalid action box: BoxSquash needs finite bounds with high > low")
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * (torch.tanh(x) + 1) / 2


def control_policy(observation_space: gym.Space, action_space: gym.Space, *, hidden: Sequence[int] = (64, 64),
                   seed: int = 0, normalize: bool = True) -> nn.Sequential:  # fmt: skip
    """``[ObservationNormalizer] -> MLP -> BoxSquash`` for a Box observation and action space
    (``hidden=()`` gives a linear policy)."""
    if not isinstance(observation_space, gym.spaces.Box) or not isinstance(action_space, gym.spaces.Box):
        raise ValueError(
            f"Invalid spaces: {type(observation_space).__name__} -> {type(action_space).__name__} "
            "(control_policy needs Box observations and Box actions)"
        )
    size, actions = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
    layers = [ObservationNormalizer(size)] if normalize else []
    layers += [MLP(size, actions, hidden=tuple(hidden), seed=seed), BoxSquash(action_space.low, action_space.high)]
    return nn.Sequential(*layers)


def normalizer_of(policy: nn.Module) -> ObservationNormalizer | None:
    """The `ObservationNormalizer` that standardizes the policy's observations as they come, if it
    has one: the Trainer updates its statistics and its critic reads observations through it. A
    policy whose normalizer sees something else (`ChunkMLP`'s: a selection of the observation's
    entries) says so with an ``observation_normalizer`` attribute (None there)."""
    if hasattr(policy, "observation_normalizer"):
        return policy.observation_normalizer
    return next((m for m in policy.modules() if isinstance(m, ObservationNormalizer)), None)
