"""Data-parallel solvers: a policy wrapped in `torch.nn.parallel.DistributedDataParallel`.

A solver built on a DDP-wrapped policy works in batch mode on each rank's shard of the batch:
``ask(shard[B_r, ...])`` runs the backbone's forward on the shard, ``tell(losses[B_r, n])``
runs the one VJP, whose parameter gradients DDP all-reduces as it does backprop's. The
update equals the one-process update on the concatenated batch (ranks in order) with the
same seed:

* **noise**: every rank holds the same generator (the same ``seed``; refused otherwise; with
  no seed, rank 0's fresh seed is broadcast) and draws the noise of the *whole* batch, keeping
  its shard's rows (``offset = B_0 + ... + B_{r-1}``). The noise lives in the output space, so
  drawing all of it costs ``world`` times a small draw; in exchange the run does not depend
  on how the batch is split.
* **scale**: the gradient of the mean over the whole batch: each rank weights its groups by
  ``world / B`` (DDP divides the sum over ranks by ``world``), so unequal shards are exact.
* **noise model**: a model that learns (a learned sigma or shape) updates from the weights
  and noise of the whole batch, gathered from every rank, so its state stays the same on
  every rank (and equal to one process's).
* **refusals**: a tell that one rank refuses (bad losses, overflowing weights) is refused on
  every rank before any backward, with the refusing ranks named; otherwise one rank would
  wait forever in DDP's all-reduce.

Stats (``loss_mean``...) and ``evaluations`` are the rank's own. Episode mode stays on Ray
(`bbopt.rollout`); ``allocation=`` and ``ask()`` without inputs are refused under DDP.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Shard", "shard_of"]


def shard_of(policy: nn.Module) -> Shard | None:
    """A `Shard` for a DDP-wrapped policy, None for any other module."""
    if not isinstance(policy, nn.parallel.DistributedDataParallel):
        return None
    return Shard(policy.process_group)


class Shard:
    """One rank's place in the process group, and the few small collectives a solver needs."""

    def __init__(self, group):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.agreed = False  # whether this tell's agreement has run (a refusal after it needs none)

    def layout(self, count: int) -> tuple[int, int]:
        """``(offset, total)``: where this rank's ``count`` groups start in the whole batch, and
        its size (one all-gather of the counts)."""
        counts = self._gather_ints([count])[:, 0]
        return int(counts[: self.rank].sum()), int(counts.sum())

    def agree(self, failure: str | None) -> None:
        """Every rank calls it before its backward: raises ValueError on every rank if any rank
        reports a failure (this rank's own message re-raised by the caller, the others named)."""
        failed = self._gather_ints([failure is not None])[:, 0]
        self.agreed = True
        others = [rank for rank in range(self.world) if failed[rank] and rank != self.rank]
        if others and failure is None:
            raise ValueError(
                f"Invalid losses: rank(s) {others} refused their losses (see their error); nothing was updated on "
                "any rank: tell corrected losses or ask again, on every rank"
            )

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor[B_r, ...]`` of every rank, concatenated in rank order along dim 0 (shards
        may differ in size: padded for the all-gather, then cut)."""
        counts = self._gather_ints([tensor.shape[0]])[:, 0].tolist()
        padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded.contiguous(), group=self.group)
        return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])

    def common_generator(self, generator: torch.Generator, fresh: bool) -> None:
        """Make every rank's generator the same: ``fresh`` (no seed given) takes rank 0's state;
        otherwise the ranks' states must already be equal (refused, naming the ranks, if not)."""
        state = generator.get_state().to(self._device())
        if fresh:
            dist.broadcast(state, src=dist.get_global_rank(self.group, 0), group=self.group)
            generator.set_state(state.cpu())
            return
        states = [torch.empty_like(state) for _ in range(self.world)]
        dist.all_gather(states, state, group=self.group)
        differ = [rank for rank in range(self.world) if not torch.equal(states[rank], states[0])]
        if differ:
            raise ValueError(
                f"Invalid seed: rank(s) {differ} hold another generator state than rank 0; under "
                "DistributedDataParallel every rank draws the whole batch's noise from one generator and keeps its "
                "shard's rows: give every rank the same seed"
            )

    def _gather_ints(self, values: list[int]) -> torch.Tensor:
        local = torch.tensor(values, dtype=torch.int64, device=self._device())
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local, group=self.group)
        return torch.stack(parts).cpu()

    def _device(self) -> torch.device:
        backend = dist.get_backend(self.group)
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
