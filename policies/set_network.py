"""A permutation-equivariant set network: one output per element of a set (per-item priorities).

``forward(items[B, m, f]) -> [B, m]``: every item is embedded by the same MLP; the embeddings
are pooled over the set (mean and max) into a context that is appended to each item's
embedding; a second MLP maps each (item, context) pair to one number. Permuting the items
permutes the outputs the same way, and the set size m may change from call to call, so one
network serves instances of any size (Deep Sets / PointNet style).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bbopt.policies.mlp import MLP
from bbopt.seeding import derive

__all__ = ["SetNetwork"]


class SetNetwork(nn.Module):
    """Args:
    features: per-item input features f.
    width: embedding width.
    hidden: hidden widths of the two per-item MLPs.
    seed: initialization seed (the global RNG is never used).
    """

    def __init__(self, features: int, *, width: int = 64, hidden: Sequence[int] = (64,), seed: int = 0):
        super().__init__()
        self.features = features
        self.embed = MLP(features, width, hidden=hidden, activation=nn.ReLU, output_activation=nn.ReLU,
                         seed=derive(seed, 0))  # fmt: skip
        self.head = MLP(3 * width, 1, hidden=hidden, activation=nn.ReLU, seed=derive(seed, 1))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        if items.dim() != 3 or items.shape[-1] != self.features:
            raise ValueError(f"Invalid items: shape {list(items.shape)} (expected [B, m, {self.features}])")
        embedded = self.embed(items)  # [B, m, width]
        context = torch.cat([embedded.mean(dim=1), embedded.amax(dim=1)], dim=-1)  # [B, 2 width]
        joined = torch.cat([embedded, context[:, None].expand(-1, items.shape[1], -1)], dim=-1)
        return self.head(joined).squeeze(-1)
