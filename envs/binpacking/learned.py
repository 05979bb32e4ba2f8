"""A set network that maps an instance's items to priorities, trained across a distribution
of instances with a bbopt solver (batch mode: each instance is a group of n candidates).

Once trained it packs an unseen instance with one forward pass and one decode (zero-shot), or
gives the start of a per-instance `search` (warm start).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import bbopt
from bbopt.allocation import Allocation
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


def train_set_network(family: str | Sequence[str] = "triplet", items: int = 60, *, steps: int = 300,
                      instances_per_step: int = 16, samples: int = 32, solver: str = "ovlr", sigma: float = 1.0,
                      lr: float = 3e-3, decoder: str = "completion", allocation: Allocation | None = None,
                      seed: int = 0, progress: bool = False,
                      callback: Callable[[int, dict], None] | None = None) -> tuple[SetNetwork, list]:  # fmt: skip
    """Train a `SetNetwork` on fresh instances of ``family``: every step draws
    ``instances_per_step`` instances (seeds derived from ``seed``; use seeds apart from the
    evaluation instances'), asks ``samples`` priority vectors per instance, decodes them and
    tells the losses. ``family`` may be a sequence of families: a mixed batch, instance k of a
    step from ``family[k % len(family)]`` (all with ``items`` items). ``allocation``: a
    `bbopt.allocation` allocator spreading the step's ``instances_per_step * samples`` decodes
    unevenly across the instances (its pilot round, if any, is part of the step). Returns the
    network and one record per step (mean bins above the best bound over every decode of the
    step, mean loss, seconds)."""
    families = (family,) if isinstance(family, str) else tuple(family)
    if not families:
        raise ValueError("Invalid family: an empty sequence (expected a family name or a sequence of them)")
    network = SetNetwork(FEATURES, seed=seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    trainer = bbopt.make_solver(solver, network, optimizer, sigma=sigma, samples=samples, seed=seed,
                                allocation=allocation)  # fmt: skip
    rng = np.random.default_rng(seed)
    history, began = [], time.perf_counter()
    for step in tqdm(range(steps), desc=f"set network ({solver})", disable=not progress):
        batch = [make_instance(families[k % len(families)], items, rng) for k in range(instances_per_step)]
        features = torch.stack([item_features(instance) for instance in batch])
        excess, losses_told = [], []
        while True:  # one round, or a pilot round and the allocated one
            candidates = trainer.ask(features)
            groups = trainer.groups if allocation is not None else None
            losses, bins = _decoded(batch, candidates, groups, decoder)
            trainer.tell(torch.as_tensor(losses, dtype=torch.float32))
            excess.append(bins.reshape(-1))
            losses_told.append(losses.reshape(-1))
            if not trainer.pending:
                break
        record = {"step": step, "excess_bins": float(np.concatenate(excess).mean()),
                  "loss": float(np.concatenate(losses_told).mean()),
                  "seconds": time.perf_counter() - began}  # fmt: skip
        history.append(record)
        if callback is not None:
            callback(step, record)
    return network, history


def _decoded(batch: list[Instance], candidates: torch.Tensor, groups: torch.Tensor | None, decoder: str):
    """Losses above each instance's best bound and excess bins, shaped like the candidates'
    leading dimensions: ``[B, n]`` (``groups`` None), or flat ``[N]`` rows grouped by instance."""
    losses = np.empty(candidates.shape[:-1])
    bins = np.empty(candidates.shape[:-1])
    for i, instance in enumerate(batch):
        rows = i if groups is None else (groups == i).numpy()
        packing = decode(instance, candidates[i] if groups is None else candidates[rows], decoder)
        losses[rows] = packing.loss - instance.best_bound
        bins[rows] = packing.bins - instance.best_bound
    return losses, bins
