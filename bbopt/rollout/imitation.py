"""Demonstrations mixed into simulator training (``Trainer(..., imitation=ImitationLoss(...))``).

At each update the Trainer hands the solver ``autograd_loss = weight_k * mean loss(policy(x), y)``
over a minibatch of demonstration pairs ``(x, y)``; the solver adds its gradient, by autograd,
to the likelihood-ratio estimate in the same backward call and optimizer step (see
`bbopt.Solver.tell`), so each update descends ``E[episode loss] + weight_k * imitation loss``:
the demo-augmented policy gradient of Rajeswaran et al. (2018, DAPG), whose imitation term keeps
the policy near the demonstrated behaviour while the simulator's signal is still sparse.
``weight_k = weight * decay**k`` at update k (``decay < 1`` hands the objective back to the
simulator over time, as DAPG's schedule does). The minibatches come from the loss's own
generator, kept in the Trainer's checkpoint, so a resumed run draws the same ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bbopt.checks import check_float, check_int

__all__ = ["ImitationLoss"]


class ImitationLoss:
    """Args:
    inputs: the demonstrations' policy inputs ``[N, ...]``.
    targets: what the policy should output for them ``[N, ...]``.
    loss: ``loss(outputs, targets) -> [batch]`` per-pair losses (e.g. an action-chunk L1).
    weight: the imitation term's weight at the first update (> 0).
    decay: its factor per update, in (0, 1] (1: constant).
    batch_size: pairs per update (at most N; all of them when N is smaller).
    seed: the minibatch draws.
    """

    def __init__(self, inputs, targets, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                 weight: float = 1.0, decay: float = 1.0, batch_size: int = 256, seed: int = 0):  # fmt: skip
        self.inputs, self.targets = torch.as_tensor(inputs), torch.as_tensor(targets)
        if self.inputs.dim() < 1 or len(self.inputs) < 1 or len(self.inputs) != len(self.targets):
            raise ValueError(f"Invalid demonstrations: {list(self.inputs.shape)} inputs and "
                             f"{list(self.targets.shape)} targets (expected N >= 1 of each, the same N)")  # fmt: skip
        for name, tensor in (("inputs", self.inputs), ("targets", self.targets)):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"Invalid demonstrations: non-finite {name}")
        if not callable(loss):
            raise ValueError(f"Invalid loss: {loss!r} is not callable")
        self.loss = loss
        self.weight = check_float(weight, "weight", above=0.0)
        self.decay = check_float(decay, "decay", above=0.0, at_most=1.0)
        self.batch_size = min(check_int(batch_size, "batch_size", minimum=1), len(self.inputs))
        self.seed = check_int(seed, "seed", minimum=0)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.updates = 0
        self.last_loss: float | None = None  # the last minibatch's mean imitation loss (unweighted)

    def current_weight(self) -> float:
        return self.weight * self.decay**self.updates

    def __call__(self, policy: nn.Module) -> torch.Tensor:
        """This update's weighted imitation loss: a scalar on ``policy``'s graph."""
        rows = torch.randperm(len(self.inputs), generator=self.generator)[: self.batch_size]
        losses = self.loss(policy(self.inputs[rows]), self.targets[rows])
        if losses.shape != (len(rows),):
            raise ValueError(f"Invalid imitation loss: shape {list(losses.shape)} (expected one per pair, "
                             f"[{len(rows)}])")  # fmt: skip
        weighted = self.current_weight() * losses.mean()
        self.last_loss = float(losses.detach().mean())
        self.updates += 1
        return weighted

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "updates": self.updates, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted({"generator", "updates", "seed"} - set(state))
        if missing:
            raise ValueError(f"Invalid imitation state: missing {missing}")
        if state["seed"] != self.seed:
            raise ValueError(f"Invalid imitation state: seed {state['seed']} (this loss has seed {self.seed})")
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])

    def __repr__(self) -> str:
        return (f"ImitationLoss({len(self.inputs)} pairs, weight={self.weight}, decay={self.decay}, "
                f"batch_size={self.batch_size})")  # fmt: skip
