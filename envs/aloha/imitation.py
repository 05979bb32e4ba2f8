"""Behavior cloning of the scripted demonstrations, by backprop or by OVLR, on one loss.

The loss is the L1 distance between a predicted action chunk and the demonstrated one, in
units of each action's standard deviation over the demos (ACT's chunk L1). Backprop
differentiates it; OVLR treats it as a black box: per example, ``samples`` noisy chunks around
the policy's output are scored and one VJP updates the network (`bbopt.fit`). Same model,
data order, epochs and optimizer for both.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt.envs.aloha.demos import Demos, action_chunks
from bbopt.envs.aloha.env import policy_features
from bbopt.policies.chunking import ChunkMLP
from bbopt.tracking import Tracker

__all__ = ["METHODS", "ChunkL1", "behavior_clone", "make_chunk_policy"]

METHODS = ("bp", "ovlr")


class ChunkL1:
    """``loss(outputs[..., chunk * a], targets[..., chunk * a]) -> [...]``: mean over the chunk of
    ``|output - target| / action_std`` (broadcasts candidates ``[B, n, d]`` against ``[B, 1, d]``)."""

    def __init__(self, action_std: torch.Tensor, chunk: int):
        self.scale = torch.as_tensor(action_std, dtype=torch.float32).repeat(chunk)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((outputs - targets).abs() / self.scale).mean(dim=-1)


def make_chunk_policy(demos: Demos, *, chunk: int = 10, hidden=(512, 512), seed: int = 0,
                      members: int = 1) -> ChunkMLP:  # fmt: skip
    """A `ChunkMLP` sized for the demos' task (`policy_features`), standardized with their
    statistics."""
    policy = ChunkMLP(demos.observations.shape[1], demos.actions.shape[1], chunk, hidden=hidden,
                      features=policy_features(demos.task), seed=seed, members=members)  # fmt: skip
    policy.fit_statistics(torch.as_tensor(demos.observations), torch.as_tensor(demos.actions))
    return policy


def behavior_clone(demos: Demos, method: str = "bp", *, chunk: int = 10, hidden=(512, 512), epochs: int = 100,
                   batch_size: int = 256, lr: float = 1e-3, samples: int = 32, sigma: float = 0.01,
                   seed: int = 0, members: int = 1, progress: bool = True,
                   tracker: Tracker | None = None) -> tuple[ChunkMLP, list[dict]]:  # fmt: skip
    """Fit a `ChunkMLP` to the demos by ``method`` ("bp" or "ovlr").

    ``members`` > 1 fits an ensemble (`ChunkMLP`'s ``members``): member j is the policy this
    function fits alone with seed ``seed * members + j`` (its own initialization and data order),
    and the ensemble averages their chunks. Its history is the members' mean ``train_loss`` per
    epoch, ``member_losses`` each member's, and ``seconds`` the members' training time summed.

    OVLR's noise is per action dimension: ``sigma`` times the action's std over the demos
    (antithetic pairs, ``samples`` per example). Adam with ``lr``, cosine-decayed to 0 over
    the epochs, for both methods. Returns the policy and the per-epoch history
    (``train_loss`` is the chunk L1 of the policy's outputs, or of OVLR's noisy candidates),
    also given to ``tracker`` (`bbopt.tracking`) epoch by epoch.
    """
    if method not in METHODS:
        raise ValueError(f"Invalid method {method!r}: expected one of {METHODS}")
    bbopt.checks.check_int(members, "members", minimum=1)
    if members > 1:
        return _clone_members(demos, method, members, seed=seed, tracker=tracker, chunk=chunk, hidden=hidden,
                              epochs=epochs, batch_size=batch_size, lr=lr, samples=samples, sigma=sigma,
                              progress=progress)  # fmt: skip
    lr = bbopt.checks.check_float(lr, "lr", above=0.0)
    sigma = bbopt.checks.check_float(sigma, "sigma", above=0.0)  # as given, before it is scaled per dimension
    policy = make_chunk_policy(demos, chunk=chunk, hidden=hidden, seed=seed)
    inputs, targets = action_chunks(demos, chunk)
    generator = torch.Generator().manual_seed(seed)
    data = DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=True, generator=generator)
    loss = ChunkL1(policy.action_std, chunk)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if method == "bp":
        history = bbopt.fit(policy, loss, data, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                            progress=progress, tracker=tracker)  # fmt: skip
    else:
        solver = bbopt.OVLR(policy, optimizer, sigma=sigma * policy.action_std.repeat(chunk), samples=samples,
                            seed=seed)  # fmt: skip
        history = bbopt.fit(policy, loss, data, epochs=epochs, solver=solver, scheduler=scheduler,
                            progress=progress, tracker=tracker)  # fmt: skip
    policy.eval()
    return policy, history


def _clone_members(demos: Demos, method: str, members: int, *, seed: int, tracker: Tracker | None,
                   **options) -> tuple[ChunkMLP, list[dict]]:  # fmt: skip
    """`behavior_clone`'s ensemble: each member fit alone, then their weights put in one `ChunkMLP`."""
    # the ensemble first: its seed checks come before any member is fit
    policy = make_chunk_policy(demos, chunk=options["chunk"], hidden=options["hidden"], seed=seed, members=members)
    fits = [behavior_clone(demos, method, seed=seed * members + j, **options) for j in range(members)]
    for net, (member, _) in zip(policy.member_networks(), fits, strict=True):
        net.load_state_dict(member.net.state_dict())
    history = []
    for records in zip(*(member_history for _, member_history in fits), strict=True):
        losses = [record["train_loss"] for record in records]
        record = {"epoch": records[0]["epoch"], "train_loss": sum(losses) / members, "member_losses": losses,
                  "seconds": sum(record["seconds"] for record in records)}  # fmt: skip
        history.append(record)
        if tracker is not None:
            tracker.log({k: v for k, v in record.items() if k != "member_losses"}, step=int(record["epoch"]))
    return policy.eval(), history
