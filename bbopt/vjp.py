"""Unbiased randomized vector-Jacobian products (Bakong et al. 2026, `003_*` in the seeds).

`randomize(model, keep=0.5)` switches the model's ``nn.Linear`` and ``nn.Conv2d`` layers to a
backward that keeps a random subset of the back-propagated vector's output units (columns of
``grad_output``; channels for a convolution), each kept with probability ``p_i`` and scaled by
``1 / p_i``, and forms the layer's input, weight and bias gradients from the kept units only:
the products shrink to the kept rows of the weight, so the backward does less work (a masked
dense product would save nothing). ``E[kept_i / p_i] = 1``, so every gradient stays unbiased;
the price is variance.

Rules for ``p``, with ``sum_i p_i = keep * units`` in expectation:

* ``"magnitude"`` (the minimal-variance choice under that budget): ``p_i = min(1, c * |g_i|)``
  with ``|g_i|`` the norm of unit i's column of ``grad_output``; units with no gradient are
  never kept (they contribute nothing);
* ``"uniform"``: ``p_i = keep``.

It serves backprop and OVLR's one VJP alike (both call the layers' backward). The draws come
from the model's own generator (``seed=``), not from the global RNG.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from bbopt.checks import check_choice, check_float, check_int

__all__ = ["RULES", "keep_probabilities", "randomize"]

RULES = ("magnitude", "uniform")


def randomize(model: nn.Module, keep: float = 0.5, *, rule: str = "magnitude", layers=None,
              seed: int | None = None) -> nn.Module:  # fmt: skip
    """Switch ``model``'s Linear and Conv2d layers (or the modules named in ``layers``, by
    their names in ``model.named_modules()``) to the randomized backward, in place; ``keep=1``
    restores the exact one. Returns ``model``."""
    keep = check_float(keep, "keep", above=0.0, at_most=1.0)
    check_choice(rule, "rule", RULES)
    targets = dict(model.named_modules())
    if layers is None:
        chosen = [m for m in targets.values() if isinstance(m, nn.Linear | nn.Conv2d)]
    else:
        missing = [name for name in layers if name not in targets]
        if missing:
            raise ValueError(f"Invalid layers: {missing} are not modules of the model")
        chosen = [targets[name] for name in layers]
        wrong = [name for name in layers if not isinstance(targets[name], nn.Linear | nn.Conv2d)]
        if wrong:
            raise ValueError(f"Invalid layers: {wrong} are not nn.Linear or nn.Conv2d")
    bad = [m for m in chosen if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros")]
    if bad and keep < 1:
        raise ValueError("Invalid layers: the randomized backward supports Conv2d with groups=1 and zero padding")
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(check_int(seed, "seed"))
    for module in chosen:
        if keep == 1.0:
            module.__dict__.pop("forward", None)  # back to the class's forward
            module.__dict__.pop("_randomized", None)
            continue
        module._randomized = (keep, rule, generator)
        module.forward = types.MethodType(_linear_forward if isinstance(module, nn.Linear) else _conv_forward, module)
    return model


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    keep, rule, generator = self._randomized
    return _RandomizedLinear.apply(x, self.weight, self.bias, keep, rule, generator)


def _conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    keep, rule, generator = self._randomized
    geometry = (self.stride, self.padding, self.dilation)
    return _RandomizedConv2d.apply(x, self.weight, self.bias, keep, rule, generator, geometry)


def keep_probabilities(scores: torch.Tensor, keep: float, rule: str) -> torch.Tensor:
    """``p[units]`` with ``sum p = keep * units`` (magnitude: ``min(1, c * score)``, found by
    water-filling over the sorted scores; uniform: ``keep``)."""
    units = scores.numel()
    if rule == "uniform":
        return torch.full_like(scores, keep)
    budget = keep * units
    positive = int((scores > 0).sum())
    if positive <= budget:  # every unit with a gradient fits the budget
        return (scores > 0).to(scores.dtype)
    ordered, _ = torch.sort(scores, descending=True)
    tail = ordered.flip(0).cumsum(0).flip(0)  # sum of the scores from position j on
    capped = torch.arange(units, dtype=scores.dtype, device=scores.device)
    scale = (budget - capped) / tail.clamp_min(torch.finfo(scores.dtype).tiny)
    fits = (scale * ordered <= 1.0) & (capped < budget)  # the first j whose own p is below 1
    first = int(torch.nonzero(fits)[0]) if bool(fits.any()) else units - 1
    return (scale[first] * scores).clamp(max=1.0)


def _kept_units(grad: torch.Tensor, unit_dim: int, keep: float, rule: str, generator) -> tuple:
    """``(indices, scale)`` of the kept units of ``grad`` along ``unit_dim``."""
    if rule == "magnitude":
        other = [d for d in range(grad.dim()) if d != unit_dim]
        scores = torch.linalg.vector_norm(grad.detach(), dim=other).double().cpu()  # one pass, no copy
        finite = bool(torch.isfinite(scores).all())  # a NaN or inf entry makes its column's norm so
    else:
        scores = torch.ones(grad.shape[unit_dim], dtype=torch.float64)
        finite = bool(torch.isfinite(grad).all())
    if not finite:  # keep every unit: a NaN/inf gradient then shows downstream instead of vanishing
        return torch.arange(grad.shape[unit_dim], device=grad.device), grad.new_ones(grad.shape[unit_dim])
    p = keep_probabilities(scores, keep, rule)
    kept = torch.rand(p.shape, generator=generator) < p
    indices = torch.nonzero(kept).flatten()
    return indices.to(grad.device), (1.0 / p[indices]).to(device=grad.device, dtype=grad.dtype)


def _rows(like: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A gradient shaped like ``like`` holding ``rows`` at ``indices`` and zeros elsewhere,
    each entry written once (no zero-fill of the whole tensor first)."""
    out = torch.empty(like.shape, dtype=rows.dtype, device=rows.device)
    out.index_copy_(0, indices, rows)
    dropped = torch.ones(like.shape[0], dtype=torch.bool, device=rows.device)
    dropped[indices] = False
    out[dropped] = 0
    return out


class _RandomizedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, keep, rule, generator):
        ctx.save_for_backward(x, weight)
        ctx.settings, ctx.has_bias = (keep, rule, generator), bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        keep, rule, generator = ctx.settings
        flat = grad_output.reshape(-1, grad_output.shape[-1])
        indices, scale = _kept_units(flat, 1, keep, rule, generator)
        kept = flat.index_select(1, indices) * scale  # [N, k]: the products below are k wide, not `out`
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (kept @ weight.index_select(0, indices)).reshape(*grad_output.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            grad_weight = _rows(weight, indices, kept.t() @ x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = _rows(weight[:, 0], indices, kept.sum(0))
        return grad_x, grad_weight, grad_bias, None, None, None


class _RandomizedConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, keep, rule, generator, geometry):
        ctx.save_for_backward(x, weight)
        ctx.settings, ctx.geometry, ctx.has_bias = (keep, rule, generator), geometry, bias is not None
        stride, padding, dilation = geometry
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        keep, rule, generator = ctx.settings
        stride, padding, dilation = ctx.geometry
        indices, scale = _kept_units(grad_output, 1, keep, rule, generator)
        kept = grad_output.index_select(1, indices) * scale.view(1, -1, 1, 1)  # the kept output channels
        kept_weight = weight.index_select(0, indices)
        grad_x = grad_weight = grad_bias = None
        if indices.numel() == 0:  # nothing kept this time: every gradient of this call is zero
            bias = torch.zeros(weight.shape[0], dtype=grad_output.dtype, device=grad_output.device)
            return (torch.zeros_like(x), torch.zeros_like(weight), bias if ctx.has_bias else None,
                    None, None, None, None)  # fmt: skip
        if ctx.needs_input_grad[0]:
            grad_x = nn.grad.conv2d_input(x.shape, kept_weight, kept, stride, padding, dilation)
        if ctx.needs_input_grad[1]:
            grad_weight = _rows(weight, indices, nn.grad.conv2d_weight(x, kept_weight.shape, kept, stride, padding,
                                                                       dilation))  # fmt: skip
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = _rows(weight[:, 0, 0, 0], indices, kept.sum(dim=(0, 2, 3)))
        return grad_x, grad_weight, grad_bias, None, None, None, None
