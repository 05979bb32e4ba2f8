"""What a solver checks before it changes any state: told losses and loaded state dicts.

* `as_losses`: real numbers of the expected shape, as float64 (bool, complex, strings and
  objects refused: ``True`` is not a loss, and a complex loss would lose its imaginary part).
* `indices`: the positions of a mask, as a short text for messages.
* `loss_stats`: the mean and minimum of told losses for a tell's stats, the mean without
  overflow for losses near the largest float (their sum overflows, their mean does not).
* `check_state`: everything `bbopt.Solver.load_state_dict` will load, checked against the
  solver it goes into (keys, shapes, dtypes, finiteness, the optimizer's kind), so a refused
  state leaves the solver as it was instead of half loaded.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

__all__ = ["as_losses", "check_state", "indices", "loss_stats"]

_STATE_KEYS = ("solver", "policy", "optimizer", "generator", "dimension", "noise", "steps", "evaluations")


def as_losses(losses, expected: tuple[int, ...]) -> torch.Tensor:
    """``losses`` as a float64 CPU tensor of shape ``expected``; a clear error otherwise."""
    if isinstance(losses, torch.Tensor):
        kind = "bool" if losses.dtype == torch.bool else "complex" if losses.is_complex() else None
    else:
        try:
            array = np.asarray(losses)
        except (TypeError, ValueError) as error:  # ragged nesting
            raise ValueError(
                f"Invalid losses: {type(losses).__name__} (expected real numbers of shape {list(expected)})"
            ) from error
        kind = {"b": "bool", "c": "complex", "U": "str", "S": "bytes", "O": "object", "V": "void"}.get(
            array.dtype.kind, "date/time" if array.dtype.kind in "mM" else None
        )
        losses = array
    if kind is not None:
        raise ValueError(
            f"Invalid losses: {kind} values (expected real numbers, int or float, of shape {list(expected)})"
        )
    losses = torch.as_tensor(losses).detach().to(device="cpu", dtype=torch.float64)
    if tuple(losses.shape) != expected:
        raise ValueError(f"Invalid losses: shape {list(losses.shape)} (expected {list(expected)})")
    return losses


def indices(mask: torch.Tensor, limit: int = 10) -> tuple[int, str]:
    """``(count, text)``: how many entries of ``mask`` are set and where (``3`` or ``(2, 1)``
    per entry, at most ``limit`` shown)."""
    where = [tuple(i) if len(i) > 1 else i[0] for i in mask.nonzero().tolist()]
    text = ", ".join(map(str, where[:limit])) + (" ..." if len(where) > limit else "")
    return len(where), text


def loss_stats(losses: torch.Tensor) -> dict[str, float]:
    """``{"loss_mean", "loss_min"}`` of finite ``losses``. numpy's reductions (a tenth of
    torch's cost here) on the float64 values; where their sum overflows, the mean of each
    value divided by the count first, which cannot."""
    values = losses.detach().cpu().double().numpy()
    with np.errstate(over="ignore"):
        mean = float(values.mean())
    if not np.isfinite(mean):
        mean = float(np.sum(values / values.size))
    return {"loss_mean": mean, "loss_min": float(values.min())}


# --------------------------------------------------------------------------------- state
def check_state(solver, state) -> None:
    """Raise ``ValueError("Invalid state: ...")`` unless ``solver.load_state_dict(state)`` can
    load all of ``state``. Nothing is changed."""
    if not isinstance(state, dict):
        raise ValueError(f"Invalid state: {type(state).__name__} (expected a dict from Solver.state_dict())")
    if "solver" in state and state["solver"] != type(solver).__name__:
        raise ValueError(f"Invalid state: saved from {state['solver']!r} (expected {type(solver).__name__!r})")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"Invalid state: missing {', '.join(map(repr, missing))} (not a Solver.state_dict())")
    for key in ("steps", "evaluations"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"Invalid state: {key} = {value!r} (expected an int >= 0)")
    _check_tensors("policy", state["policy"], solver.policy.state_dict())
    _check_optimizer(state["optimizer"], solver.optimizer)
    _check_generator(state["generator"], solver.generator)
    _check_noise(solver, state["dimension"], state["noise"])


def _check_tensors(where: str, saved, current: dict) -> None:
    if not isinstance(saved, dict):
        raise ValueError(f"Invalid state: {where} is a {type(saved).__name__} (expected a state dict)")
    extra, missing = sorted(set(saved) - set(current)), sorted(set(current) - set(saved))
    if extra or missing:
        raise ValueError(f"Invalid state: {where} has unexpected entries {extra} and lacks {missing}")
    for key, value in current.items():
        _check_tensor(f"{where}.{key}", saved[key], value)


def _check_tensor(where: str, saved, like) -> None:
    if not isinstance(like, torch.Tensor):
        return
    if not isinstance(saved, torch.Tensor):
        raise ValueError(f"Invalid state: {where} is a {type(saved).__name__} (expected a tensor)")
    if saved.shape != like.shape:
        raise ValueError(f"Invalid state: {where} has shape {list(saved.shape)} (expected {list(like.shape)})")
    if saved.is_floating_point() != like.is_floating_point() or saved.is_complex() != like.is_complex():
        raise ValueError(f"Invalid state: {where} has dtype {saved.dtype} (expected {like.dtype})")
    if saved.is_floating_point() and not bool(torch.isfinite(saved).all()):
        raise ValueError(f"Invalid state: {where} holds non-finite values")


def _check_optimizer(saved, optimizer: torch.optim.Optimizer) -> None:
    if not isinstance(saved, dict) or not {"state", "param_groups"} <= set(saved):
        raise ValueError("Invalid state: optimizer is not a torch.optim state dict")
    current = optimizer.state_dict()
    groups, now = saved["param_groups"], current["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(now):
        size = len(groups) if isinstance(groups, list) else type(groups).__name__
        raise ValueError(f"Invalid state: optimizer has {size} parameter group(s) (expected {len(now)})")
    for index, (group, mine) in enumerate(zip(groups, now, strict=True)):
        if not isinstance(group, dict) or len(group.get("params", ())) != len(mine["params"]):
            raise ValueError(f"Invalid state: optimizer parameter group {index} does not match this optimizer's")
        theirs, ours = sorted(set(group) - {"params"}), sorted(set(mine) - {"params"})
        if (set(theirs) ^ set(ours)) - _OPTIONAL_OPTIONS == {"initial_lr"}:  # a schedule's mark, on one side only
            saved_with, now_with = ("with", "without") if "initial_lr" in theirs else ("without", "with")
            raise ValueError(
                f"Invalid state: the optimizer was saved {saved_with} a step schedule and this one runs {now_with} "
                "(resume with the run's lr_schedule: a Trainer's 'linear' or 'kl' keeps 'initial_lr' in the "
                "optimizer's groups, 'constant' does not)"
            )
        if set(theirs) - set(ours) or set(ours) - set(theirs) - _OPTIONAL_OPTIONS:
            raise ValueError(
                f"Invalid state: optimizer options {theirs} were saved from another kind of optimizer "
                f"(this one has {ours})"
            )
    shapes = {}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for group, mine in zip(groups, now, strict=True):
        for saved_id, own_id in zip(group["params"], mine["params"], strict=True):
            shapes[saved_id] = params[own_id].shape
    if not isinstance(saved["state"], dict):
        raise ValueError("Invalid state: optimizer.state is not a dict")
    for key, entry in saved["state"].items():
        if key not in shapes or not isinstance(entry, dict):
            raise ValueError(f"Invalid state: optimizer state for an unknown parameter {key!r}")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != shapes[key]:
                raise ValueError(
                    f"Invalid state: optimizer.state[{key}].{name} has shape {list(value.shape)} "
                    f"(expected {list(shapes[key])})"
                )
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"Invalid state: optimizer.state[{key}].{name} holds non-finite values")


# Options that newer torch versions add to a group; a state saved by an older one may lack them.
_OPTIONAL_OPTIONS = {"foreach", "maximize", "capturable", "differentiable", "fused", "decoupled_weight_decay"}


def _check_generator(saved, generator: torch.Generator) -> None:
    trial = torch.Generator(device=generator.device)
    try:
        trial.set_state(saved)
    except (TypeError, RuntimeError) as error:
        raise ValueError(f"Invalid state: generator ({error})") from error


def _check_noise(solver, dimension, saved) -> None:
    if dimension is not None and (isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1):
        raise ValueError(f"Invalid state: dimension = {dimension!r} (expected an int >= 1 or None)")
    if dimension is not None and solver.noise.dimension not in (None, dimension):
        raise ValueError(f"Invalid state: dimension {dimension} (this solver is set up for {solver.noise.dimension})")
    trial = copy.deepcopy(solver.noise)
    try:
        if dimension is not None and trial.dimension is None:
            trial.setup(dimension, solver.group_size)
        trial.load_state_dict(saved)
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        model = type(solver.noise).__name__
        raise ValueError(f"Invalid state: noise model {model} cannot load it ({first})") from error
