"""Supervised training on black-box losses: one loop for a bbopt solver and for backprop.

    history = bbopt.fit(model, bbopt.losses.ZeroOneLoss(), train_loader, epochs=50,
                        solver=bbopt.OVLR(model, optimizer, sigma=1.0, samples=64),
                        eval_data=test_loader, metrics={"accuracy": accuracy})

With ``solver=`` each batch is one ask/tell: the n candidates of each example are scored by
``loss(candidates[B, n, d], targets[:, None])`` (no gradient needed) and the solver makes one
VJP. With an allocating solver (``allocation=``) the candidates are flat, scored by
``loss(candidates[N, d], targets[solver.groups])``, and a pilot round comes first where the
allocator asks for one. With ``optimizer=`` the same loop runs plain backprop on ``loss(model(x), y).mean()`` (the
loss must then be differentiable): the baseline shares data order, evaluation and history.
Either way: one backbone forward and one backward per step. (``fit`` was ``train`` until
0.1; the old name, which the ``bbopt train`` command for simulators also had, is kept one
release with a FutureWarning.)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from bbopt.checks import check_int
from bbopt.tracking import Tracker

__all__ = ["accuracy", "evaluate", "fit", "squared_error", "train"]

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example 1/0 for a correct/incorrect argmax."""
    return (outputs.argmax(dim=-1) == targets).to(outputs.dtype)


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example squared error, summed over output dimensions."""
    return ((outputs - targets.reshape(outputs.shape)) ** 2).sum(dim=-1)


def _solver_step(solver, loss, inputs, targets) -> torch.Tensor:
    """One solver step on a batch: one ask/tell, or a pilot's and the rest's; the losses told."""
    told = []
    while True:
        candidates = solver.ask(inputs)  # [B, n, d] (flat [N, d] when allocated), one forward
        groups = getattr(solver, "groups", None) if getattr(solver, "allocation", None) is not None else None
        with torch.no_grad():
            losses = loss(candidates, targets.unsqueeze(1) if groups is None else targets[groups.to(targets.device)])
        solver.tell(losses)  # the pilot's: no update; else one VJP, one optimizer step
        told.append(losses.reshape(-1))
        if not getattr(solver, "pending", False):
            return torch.cat(told)


@torch.no_grad()
def evaluate(model: nn.Module, data: Iterable, metrics: dict[str, Metric]) -> dict[str, float]:
    """Mean of each per-example metric over ``data`` (the model's deterministic output)."""
    was_training = model.training
    model.eval()
    totals = dict.fromkeys(metrics, 0.0)
    count = 0
    for inputs, targets in data:
        outputs = model(inputs)
        for name, metric in metrics.items():
            totals[name] += float(metric(outputs, targets).sum())
        count += len(inputs)
    model.train(was_training)
    if count == 0:
        raise ValueError("Invalid eval_data: it yielded no examples")
    return {name: total / count for name, total in totals.items()}


def fit(
    model: nn.Module,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_data: Iterable,
    *,
    epochs: int,
    solver=None,
    optimizer: torch.optim.Optimizer | None = None,
    eval_data: Iterable | None = None,
    metrics: dict[str, Metric] | None = None,
    scheduler=None,
    progress: bool = True,
    tracker: Tracker | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` passes over ``train_data`` (re-iterable ``(inputs, targets)``).

    Give exactly one of ``solver`` (a `bbopt.Solver` over ``model`` in batch mode) or
    ``optimizer`` (backprop). ``metrics`` are evaluated on ``eval_data`` after each epoch;
    ``scheduler.step()`` runs after each epoch; a loader whose sampler has ``set_epoch`` (a
    `DistributedSampler`) gets it before each epoch. The model may be wrapped in
    `DistributedDataParallel` (`bbopt.distributed`): each rank trains on its shard. Returns
    one record per epoch: ``epoch``, ``train_loss`` (mean loss of the epoch's candidates, or
    of the batches under backprop), ``seconds`` and the metrics; ``tracker`` (`bbopt.tracking`)
    gets each record at its epoch."""
    if (solver is None) == (optimizer is None):
        raise ValueError("Invalid solver/optimizer: give exactly one (a bbopt solver, or an optimizer for backprop)")
    if solver is not None and solver.policy is not model:
        raise ValueError("Invalid solver: it must be built on the model being trained")
    check_int(epochs, "epochs", minimum=1)
    if tracker is not None and not isinstance(tracker, Tracker):
        raise ValueError(f"Invalid tracker: {type(tracker).__name__} (expected log(scalars, step) and close())")
    if metrics and eval_data is None:
        raise ValueError("Invalid metrics: they need eval_data to be evaluated on")
    history: list[dict[str, float]] = []
    bar = tqdm(range(1, epochs + 1), disable=not progress, desc="solver" if solver else "backprop", leave=False)
    for epoch in bar:
        began = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        sampler = getattr(train_data, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):  # DistributedSampler: a new shuffle each epoch
            sampler.set_epoch(epoch)
        for inputs, targets in train_data:
            if solver is not None:
                losses = _solver_step(solver, loss, inputs, targets)
            else:
                optimizer.zero_grad(set_to_none=True)
                losses = loss(model(inputs), targets)
                if not losses.requires_grad:
                    raise RuntimeError(f"{loss!r} gives no gradient: backprop cannot train on it; use a bbopt solver")
                losses.mean().backward()
                optimizer.step()
            total += float(losses.detach().sum())
            count += losses.numel()
        record = {"epoch": float(epoch), "train_loss": total / max(count, 1), "seconds": time.perf_counter() - began}
        if scheduler is not None:
            scheduler.step()
        if metrics:
            record |= evaluate(model, eval_data, metrics)
        history.append(record)
        if tracker is not None:
            tracker.log(record, step=epoch)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("epoch", "seconds")})
    return history


def train(*args, **kwargs) -> list[dict[str, float]]:
    """Deprecated name of `fit` (``bbopt train`` is the simulator command); kept one release."""
    warnings.warn("bbopt.train() is deprecated: use bbopt.fit() (the old name goes in the next release)",
                  FutureWarning, stacklevel=2)  # fmt: skip
    return fit(*args, **kwargs)
