"""A set network that maps an instance's items to priorities, trained across a distribution
of instances with a bbopt solver (batch mode: each instance is a group of n candidates).

Once trained it packs an unseen instance with one forward pass and one decode (zero-shot), or
gives the start of a per-instance `search` (warm start).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

import bbopt
from bbopt.envs.binpacking.decoders import decode
from bbopt.envs.binpacking.env import make_instance
from bbopt.envs.binpacking.instance import Instance
from bbopt.policies.set_network import SetNetwork

__all__ = ["FEATURES", "item_features", "priorities", "train_set_network", "zero_shot"]

FEATURES = 4


def item_features(instance: Instance) -> torch.Tensor:
    """``[items, 4]`` per item: size / C; size rank (the fraction of other items that are larger);
    size z-score within the instance; the fraction of other items that fit beside it in one
    bin. Invariant to the item order and to scaling sizes and capacity together."""
    sizes = instance.sizes.astype(np.float64)
    m = sizes.size
    rank = (sizes[None, :] > sizes[:, None]).sum(axis=1) / max(m - 1, 1)  # equal sizes share a rank
    spread = sizes.std() if sizes.std() > 0 else 1.0
    beside = ((sizes[:, None] + sizes[None, :]) <= instance.capacity).sum(axis=1) - (2 * sizes <= instance.capacity)
    columns = [sizes / instance.capacity, rank, (sizes - sizes.mean()) / spread, beside / max(m - 1, 1)]
    return torch.tensor(np.stack(columns, axis=1), dtype=torch.float32)


@torch.no_grad()
def priorities(network: SetNetwork, instance: Instance) -> torch.Tensor:
    """The network's priorities for ``instance``, ``[items]`` (no noise)."""
    return network(item_features(instance)[None])[0]


def zero_shot(network: SetNetwork, instance: Instance, decoder: str = "completion"):
    """Pack ``instance`` with the network's priorities: one forward, one decode."""
    return decode(instance, priorities(network, instance), decoder)


def train_set_network(family: str = "triplet", items: int = 60, *, steps: int = 300, instances_per_step: int = 16,
                      samples: int = 32, solver: str = "ovlr", sigma: float = 1.0, lr: float = 3e-3,
                      decoder: str = "completion", seed: int = 0, progress: bool = False,
                      callback: Callable[[int, dict], None] | None = None) -> tuple[SetNetwork, list]:  # fmt: skip
    """Train a `SetNetwork` on fresh instances of ``family``: every step draws
    ``instances_per_step`` instances (seeds derived from ``seed``; use seeds apart from the
    evaluation instances'), asks ``samples`` priority vectors per instance, decodes them and
    tells the losses. Returns the network and one record per step (mean bins above the best
    bound of the candidates, mean loss, seconds)."""
    network = SetNetwork(FEATURES, seed=seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    trainer = bbopt.make_solver(solver, network, optimizer, sigma=sigma, samples=samples, seed=seed)
    rng = np.random.default_rng(seed)
    history, began = [], time.perf_counter()
    for step in tqdm(range(steps), desc=f"set network ({solver})", disable=not progress):
        batch = [make_instance(family, items, rng) for _ in range(instances_per_step)]
        candidates = trainer.ask(torch.stack([item_features(instance) for instance in batch]))
        packings = [decode(instance, candidates[i], decoder) for i, instance in enumerate(batch)]
        losses = np.stack([p.loss - inst.best_bound for p, inst in zip(packings, batch, strict=True)])
        trainer.tell(torch.as_tensor(losses, dtype=torch.float32))
        excess = np.mean([p.bins.mean() - inst.best_bound for p, inst in zip(packings, batch, strict=True)])
        record = {"step": step, "excess_bins": float(excess), "loss": float(losses.mean()),
                  "seconds": time.perf_counter() - began}  # fmt: skip
        history.append(record)
        if callback is not None:
            callback(step, record)
    return network, history
