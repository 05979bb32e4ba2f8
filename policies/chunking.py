"""Action-chunking policies: one observation in, the next ``chunk`` actions out.

Predicting a chunk of future actions (Zhao et al., "Learning Fine-Grained Bimanual Manipulation
with Low-Cost Hardware", 2023: ACT) lowers the effective horizon of imitation. Here the chunk
head is an MLP on state observations. Observations are standardized and actions de-standardized
with statistics fitted on the training data (buffers, saved with the weights; the observation
statistics stay frozen afterwards, also under the rollout driver).

``members=k`` makes the head an ensemble: k MLPs on the same standardized features, their chunks
averaged. Each member is fit on its own (`bbopt.envs.aloha.imitation.behavior_clone`); averaging
k members cloned from the same few demonstrations smooths the errors each makes away from them
(on ALOHA insertion from 10 demos, 5 members: 52 / 56% against 39 / 43% for the members alone, on
100 validation placements). Fine-tuning then moves the average: one output, one VJP through all k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bbopt.checks import check_int
from bbopt.policies.mlp import MLP
from bbopt.policies.normalization import ObservationNormalizer

__all__ = ["ChunkMLP"]


class ChunkMLP(nn.Module):
    """``forward(obs[B, obs_dim]) -> [B, chunk * action_dim]``: actions t .. t + chunk - 1,
    flattened time-major (``.view(B, chunk, action_dim)`` recovers them).

    ``features`` selects the observation entries the network sees (default: all of them).
    ``members`` > 1: that many MLPs, the chunk their average; member j is initialized with seed
    ``seed * members + j`` (with one member, ``seed``), so ensembles of different seeds share no
    member.
    """

    observation_normalizer = None  # `normalizer` standardizes the selected features, not the observation

    def __init__(self, obs_dim: int, action_dim: int, chunk: int = 10, *, hidden: Sequence[int] = (512, 512),
                 features: Sequence[int] | None = None, seed: int = 0, members: int = 1):  # fmt: skip
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim), ("chunk", chunk), ("members", members)):
            check_int(value, name, minimum=1)
        if not -(2**63) <= seed * members <= 2**64 - members:  # every member seed in torch's manual_seed range
            raise ValueError(f"Invalid seed: {seed} with {members} members gives member seeds {seed * members}.."
                             f"{seed * members + members - 1}, outside torch's [-2**63, 2**64)")  # fmt: skip
        features = list(range(obs_dim)) if features is None else [int(f) for f in features]
        if not features or min(features) < 0 or max(features) >= obs_dim or len(set(features)) != len(features):
            raise ValueError(f"Invalid features: expected distinct indices in [0, {obs_dim}), got {features}")
        self.obs_dim, self.action_dim, self.chunk = obs_dim, action_dim, chunk
        self.hidden = tuple(hidden)
        self.register_buffer("features", torch.as_tensor(features, dtype=torch.long))
        self.normalizer = ObservationNormalizer(len(features))
        self.normalizer.frozen = True
        self.members = members
        nets = [MLP(len(features), chunk * action_dim, hidden=self.hidden, activation=nn.ReLU, seed=seed * members + j)
                for j in range(members)]  # fmt: skip
        self.net = nets[0] if members == 1 else nn.ModuleList(nets)  # one member: the layout of files saved before
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))

    @torch.no_grad()
    def fit_statistics(self, observations: torch.Tensor, actions: torch.Tensor, *, obs_floor: float = 0.05,
                       action_floor: float = 1e-3) -> None:  # fmt: skip
        """Set the observation and action standardization from data ``[N, obs_dim]``,
        ``[N, action_dim]``. Each observation's std is at least ``obs_floor``: a feature that
        barely varies in the data (a resting object's quaternion: std 1e-3) would otherwise turn
        millimetre deviations at test time into inputs many stds out."""
        observations = torch.as_tensor(observations, dtype=torch.float64).reshape(-1, self.obs_dim)[:, self.features]
        actions = torch.as_tensor(actions, dtype=torch.float32).reshape(-1, self.action_dim)
        self.normalizer.count.fill_(observations.shape[0])
        self.normalizer.mean.copy_(observations.mean(0))
        self.normalizer.var.copy_(observations.var(0, unbiased=False).clamp_min(obs_floor**2))
        self.action_mean.copy_(actions.mean(0))
        self.action_std.copy_(actions.std(0).clamp_min(action_floor))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = self.normalizer(observations[..., self.features])
        z = self.net(x) if self.members == 1 else torch.stack([net(x) for net in self.net]).mean(0)
        shape = z.shape
        actions = z.view(*shape[:-1], self.chunk, self.action_dim) * self.action_std + self.action_mean
        return actions.reshape(shape)

    def config(self) -> dict:
        """Constructor arguments, for saving next to the weights."""
        return {"obs_dim": self.obs_dim, "action_dim": self.action_dim, "chunk": self.chunk,
                "hidden": list(self.hidden), "features": self.features.tolist(), "members": self.members}  # fmt: skip

    def member_networks(self) -> list[nn.Module]:
        """The members' MLPs (one for a single network)."""
        return [self.net] if self.members == 1 else list(self.net)
