"""Layer-wise likelihood ratio: training without a backward pass (the LR-method paper, §3).

Noise is added to the pre-activations ``z = W x + b`` of chosen ``nn.Linear`` / ``nn.Conv2d``
layers, ``z' = z + sigma_l * eps``, in n noisy copies of every input (input-level repetition),
all under ``torch.no_grad()``. With ``w`` the solver's weights on the copies' losses
(`bbopt.ovlr.baseline_weights`: OVLR's leave-pair-out baseline, so exactly unbiased), each
layer's gradient comes from its own input, its own noise and the loss alone:

    g_l = sum_copies w * score(eps_l) / sigma_l       (a "grad_output" of the layer, no backward)
    Linear:  dW = g_l^T x_l,   db = sum g_l
    Conv2d:  dW = conv2d_weight(x_l, g_l),   db = sum g_l over batch and positions

which estimates the gradient of the expected loss under the noise of every chosen layer
(`torch.nn.grad.conv2d_weight` forms the Conv2d weight gradient from the input and g_l alone).
A layer called several times in one forward (weights shared over time steps, as in a spiking or
recurrent network) gets fresh noise at every call and the sum of its calls' estimates.
The batch contract is the solvers': ``ask(inputs[B, ...]) -> outputs[B, n, d]`` of the noisy
forward passes, ``tell(losses[B, n])`` -> one optimizer step. ``bbopt.fit(model, loss, data,
solver=LayerwiseLR(...))`` drives it like OVLR.

    solver = bbopt.layerwise.LayerwiseLR(model, torch.optim.Adam(model.parameters(), 1e-3),
                                         sigma=0.1, samples=32, seed=0)

Hybrid (the paper's LR-WL): ``head="name"`` trains that submodule (the layers near the output,
any modules) by output-level likelihood ratio instead: noise ``head_sigma * eps`` on its output,
its parameters' gradient by one VJP through the head alone (a graph is built inside the head
only; its input is detached), while the layers below it keep their layer-wise estimates.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from bbopt.checks import check_bool, check_int
from bbopt.noise.families import Noise, make_noise
from bbopt.noise.qmc import Sobol
from bbopt.ovlr import baseline_weights
from bbopt.solver import _clear_gradients, _total_norm
from bbopt.validation import as_losses, indices, loss_stats

__all__ = ["LAYER_TYPES", "LayerwiseLR"]

LAYER_TYPES = (nn.Linear, nn.Conv2d)


class LayerwiseLR:
    """Args:
    model: any ``nn.Module`` whose chosen layers are ``nn.Linear`` or ``nn.Conv2d``.
    optimizer: a ``torch.optim`` optimizer over (at least) the chosen layers' parameters.
    layers: names of the layers to perturb and train (``model.named_modules()``); None: every
        Linear and Conv2d layer. The other parameters get no gradient (None) from this solver.
    sigma: the noise scale of every chosen layer, or ``{name: sigma}`` for each.
    samples: noisy copies per input (even with ``antithetic``).
    antithetic: copies ``k`` and ``k + n/2`` carry negated noise in every layer.
    noise: the family of eps (``"gaussian"``, ``"laplace"``, ``"student_t"`` with ``df``).
    baseline: OVLR's leave-pair-out (leave-one-out) baseline on the copies' losses.
    seed: seeds the solver's own generator (the global RNG is never used).
    head: the name of a submodule trained by output-level LR (OVLR at its output, one VJP through
        it): the hybrid. ``layers=None`` then means every Linear and Conv2d outside the head.
    head_sigma: the noise scale at the head's output.
    qmc: draw each layer's noise from scrambled Sobol points mapped through the family's inverse
        CDF (`bbopt.noise.qmc`, as ``qmc=True`` on the solvers): per input and layer, the n copies
        (n/2 with pairs) are the first points of one scrambled net under their own random shift, so
        every eps stays exactly distributed (the estimator stays unbiased) while the copies of one
        input spread evenly. A layer of more than ``Sobol.MAX_WIDTH`` noise coordinates is refused.
    """

    batched_only = True

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, layers: Sequence[str] | None = None,
                 sigma: float | Mapping[str, float] = 0.1, samples: int = 16, antithetic: bool = True,
                 noise: str = "gaussian", df: float = 5.0, baseline: bool = True, seed: int | None = None,
                 head: str | None = None, head_sigma: float = 0.1, qmc: bool = False):  # fmt: skip
        if not isinstance(model, nn.Module):
            raise ValueError(f"Invalid model: {type(model).__name__} (expected a torch.nn.Module)")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"Invalid optimizer: {type(optimizer).__name__} (expected a torch.optim.Optimizer)")
        self.head_name, self.head = _head(model, head)
        self.layers = _chosen_layers(model, layers, exclude=head)
        self.sigmas = _sigmas(sigma, self.layers)
        if self.head is not None:
            self.head_sigma = _sigmas({"head": head_sigma}, {"head": None})["head"]
        self.samples = check_int(samples, "samples", minimum=1)
        self.antithetic = check_bool(antithetic, "antithetic")
        if self.antithetic and self.samples % 2:
            raise ValueError(f"Invalid samples: {samples} with antithetic=True (pairs (eps, -eps) need an even number)")
        self.baseline = check_bool(baseline, "baseline")
        self.family: Noise = make_noise(noise, df=df)
        self.sampler = Sobol() if check_bool(qmc, "qmc") else None
        if self.sampler is not None and self.baseline and not self.antithetic:  # the rule of bbopt.OVLR
            raise ValueError(
                "Invalid qmc: with baseline=True, QMC noise needs antithetic=True (the baseline "
                "then cancels in each pair; without pairs it would bias the gradient), or baseline=False"
            )
        modules = [*self.layers.values(), *([self.head] if self.head is not None else [])]
        trained = {id(p) for module in modules for p in module.parameters()}
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not trained <= stepped:
            raise ValueError("Invalid optimizer: it does not step every chosen layer's parameters")
        self.model, self.optimizer = model, optimizer
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(check_int(seed, "seed"))
        self.steps = 0
        self.evaluations = 0
        self.pending = False  # the solvers' contract (bbopt.fit): no pilot rounds here
        self._asked: dict | None = None

    # ------------------------------------------------------------------------------ ask/tell
    @torch.no_grad()
    def ask(self, inputs: torch.Tensor) -> torch.Tensor:
        """The outputs of ``samples`` noisy forward passes of every input, ``[B, n, d]``; no
        autograd graph is built."""
        if self._asked is not None:
            raise RuntimeError("ask() called twice without tell(): tell the losses of the last outputs first")
        inputs = torch.as_tensor(inputs)
        if inputs.dim() < 1 or inputs.shape[0] < 1:
            raise ValueError(f"Invalid inputs: shape {list(inputs.shape)} (expected a batch [B, ...])")
        batch = inputs.shape[0]
        # restored if the forward fails, so a refused ask changes nothing (the Sobol seed is drawn at the first ask)
        drawn_from, scramble = self.generator.get_state(), self.sampler.seed if self.sampler is not None else None
        copies = inputs.repeat_interleave(self.samples, dim=0)
        record: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in self.layers}
        hooks = [module.register_forward_hook(self._perturb(name, batch, record))
                 for name, module in self.layers.items()]  # fmt: skip
        head_calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.head is not None:  # the head's forward with a graph over its own parameters only
            hooks.append(self.head.register_forward_pre_hook(_enable_grad))
            hooks.append(self.head.register_forward_hook(self._perturb_head(batch, head_calls)))
        try:
            outputs = self.model(copies)
        except BaseException:
            self.generator.set_state(drawn_from)
            if self.sampler is not None:
                self.sampler.seed = scramble
            raise
        finally:
            for hook in hooks:
                hook.remove()
        if not isinstance(outputs, torch.Tensor) or outputs.dim() < 2 or outputs.shape[0] != copies.shape[0]:
            raise ValueError("Invalid model output: expected [B * n, ...] for the noisy copies")
        self._asked = {"batch": batch, "record": record, "head": head_calls}
        return outputs.reshape(batch, self.samples, *outputs.shape[1:])

    def _perturb_head(self, batch: int, calls: list):
        def hook(module, args, output):
            torch.set_grad_enabled(False)  # back to ask's no_grad for the modules after the head
            eps = self._draw(batch, output)
            calls.append((output, eps))
            return output.detach() + self.head_sigma * eps

        return hook

    def _draw(self, batch: int, output: torch.Tensor) -> torch.Tensor:
        """Noise shaped like ``output[B * n, ...]``: per input, n copies (pairs negated)."""
        half = self.samples // 2 if self.antithetic else self.samples
        shape = (batch, half, *output.shape[1:])
        if self.sampler is None:
            eps = self.family.sample(shape, generator=self.generator, dtype=output.dtype)
        else:
            width = math.prod(output.shape[1:])
            if width > Sobol.MAX_WIDTH:
                raise ValueError(f"Invalid qmc: a layer output of {width} noise coordinates (Sobol points exist up to "
                                 f"{Sobol.MAX_WIDTH}); use qmc=False")  # fmt: skip
            uniforms = self.sampler.uniforms(batch, half, width, generator=self.generator)
            eps = self.family.quantile(uniforms).to(output.dtype).reshape(shape)
        if self.antithetic:
            eps = torch.cat([eps, -eps], dim=1)
        return eps.reshape(output.shape)

    def _perturb(self, name: str, batch: int, record: dict):
        sigma = self.sigmas[name]

        def hook(module, args, output):
            eps = self._draw(batch, output)
            record[name].append((args[0], eps))
            return output + sigma * eps

        return hook

    def tell(self, losses) -> dict[str, float]:
        """One optimizer step from the losses of the asked copies, ``[B, n]``."""
        if self._asked is None:
            raise RuntimeError("tell() called before ask(): ask for outputs first")
        batch = self._asked["batch"]
        losses = as_losses(losses, (batch, self.samples))  # float64 on the CPU
        if not bool(torch.isfinite(losses).all()):
            count, where = indices(~torch.isfinite(losses))
            raise ValueError(f"Invalid losses: {count} non-finite value(s) at indices {where}")
        weights = baseline_weights(losses, antithetic=self.antithetic, baseline=self.baseline) / batch
        limit = math.sqrt(torch.finfo(self._dtype()).max)
        if not float(weights.abs().max()) <= limit:
            raise ValueError("Invalid losses: their weights overflow the model's float type; scale the losses down")
        gradients = {}
        with torch.no_grad():
            for name, module in self.layers.items():
                calls = self._asked["record"][name]
                if not calls:
                    raise RuntimeError(f"layer {name!r} was not called in the forward pass: no gradient to estimate")
                for inputs, eps in calls:  # one call per forward, or one per time step of shared weights
                    per_copy = weights.reshape(-1).to(device=eps.device, dtype=eps.dtype)
                    scale = per_copy.reshape(-1, *([1] * (eps.dim() - 1))) / self.sigmas[name]
                    weight, bias = _layer_gradients(module, inputs, scale * self.family.score(eps))
                    summed = gradients.get(name)
                    gradients[name] = (weight, bias) if summed is None else (summed[0] + weight, summed[1] + bias)
        _clear_gradients(self.optimizer)
        if self._asked["head"]:  # the head: one VJP of its outputs with OVLR's signal
            outputs = [output for output, _ in self._asked["head"]]
            signals = []
            for _, eps in self._asked["head"]:
                per_copy = weights.reshape(-1).to(device=eps.device, dtype=eps.dtype)
                scale = per_copy.reshape(-1, *([1] * (eps.dim() - 1))) / self.head_sigma
                signals.append(scale * self.family.score(eps))
            torch.autograd.backward(outputs, signals)
        elif self.head is not None:
            raise RuntimeError(f"head {self.head_name!r} was not called in the forward pass: no gradient to estimate")
        for name, module in self.layers.items():
            weight_grad, bias_grad = gradients[name]
            module.weight.grad = weight_grad
            if module.bias is not None:
                module.bias.grad = bias_grad
        if not math.isfinite(_total_norm(self.optimizer)):  # its square overflows: Adam's state would become inf
            _clear_gradients(self.optimizer)
            raise ValueError("Invalid losses: the gradient they imply overflows the model's float type (scale the "
                             "losses down); nothing was updated: tell corrected losses or ask again")  # fmt: skip
        self.optimizer.step()
        self._asked = None
        self.steps += 1
        self.evaluations += losses.numel()
        return {"step": float(self.steps), **loss_stats(losses)}

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        if self._asked is not None:
            raise RuntimeError("state_dict() between ask() and tell(): tell the pending losses first")
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "generator": self.generator.get_state(), "steps": self.steps,
                 "evaluations": self.evaluations}  # fmt: skip
        if self.sampler is not None:
            state["sampler"] = self.sampler.get_extra_state()  # the scramble seed, drawn at the first ask
        return state

    def load_state_dict(self, state: dict) -> None:
        missing = sorted({"model", "optimizer", "generator", "steps", "evaluations"} - set(state))
        if missing:
            raise ValueError(f"Invalid state: missing {missing}")
        if ("sampler" in state) != (self.sampler is not None):
            raise ValueError(f"Invalid state: saved with qmc={'sampler' in state}, this solver has "
                             f"qmc={self.sampler is not None}")  # fmt: skip
        if self.sampler is not None:
            Sobol().set_extra_state(state["sampler"])  # checked before anything is loaded
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # torch.optim keeps the given tensors
        self.generator.set_state(state["generator"])
        self.steps, self.evaluations = int(state["steps"]), int(state["evaluations"])
        if self.sampler is not None:
            self.sampler.set_extra_state(state["sampler"])
        self._asked = None

    @property
    def policy(self) -> nn.Module:
        """The model trained (the name the solvers use, so `bbopt.fit` checks it alike)."""
        return self.model

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        head = f", head={self.head_name!r}" if self.head is not None else ""
        qmc = ", qmc=True" if self.sampler is not None else ""
        return (f"LayerwiseLR(layers={list(self.layers)}{head}, samples={self.samples}, "
                f"antithetic={self.antithetic}{qmc})")  # fmt: skip


def _layer_gradients(module: nn.Module, inputs: torch.Tensor, signal: torch.Tensor):
    """Weight and bias gradients of one layer from its input and its per-copy signal (the
    weighted noise score, the layer's "grad_output")."""
    if isinstance(module, nn.Linear):
        flat_in, flat_signal = inputs.reshape(-1, inputs.shape[-1]), signal.reshape(-1, signal.shape[-1])
        return flat_signal.T @ flat_in, flat_signal.sum(dim=0)
    weight = torch.nn.grad.conv2d_weight(inputs, module.weight.shape, signal, stride=module.stride,
                                         padding=module.padding, dilation=module.dilation,
                                         groups=module.groups)  # fmt: skip
    return weight, signal.sum(dim=(0, 2, 3))


def _enable_grad(module, args) -> None:
    """The head's forward pre-hook: build a graph inside it (its input stays detached); returns
    None so that the input is left as it is."""
    torch.set_grad_enabled(True)


def _inside(name: str, head: str | None) -> bool:
    return head is not None and (name == head or name.startswith(head + "."))


def _head(model: nn.Module, head: str | None) -> tuple[str | None, nn.Module | None]:
    if head is None:
        return None, None
    modules = dict(model.named_modules())
    if not isinstance(head, str) or head not in modules or head == "":
        raise ValueError(
            f"Invalid head: {head!r} (expected the name of a submodule; the model has {list(modules)[1:]})"
        )
    if not any(p.requires_grad for p in modules[head].parameters()):
        raise ValueError(f"Invalid head: {head!r} has no trainable parameters")
    return head, modules[head]


def _chosen_layers(
    model: nn.Module, layers: Sequence[str] | None, *, exclude: str | None = None
) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if layers is None:
        chosen = {name: module for name, module in modules.items()
                  if isinstance(module, LAYER_TYPES) and not _inside(name, exclude)}  # fmt: skip
        if not chosen and exclude is None:
            raise ValueError(f"Invalid model: {type(model).__name__} has no nn.Linear or nn.Conv2d layer to perturb")
        return chosen
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers) or not layers:
        raise ValueError(f"Invalid layers: {layers!r} (expected a non-empty list of module names)")
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"Invalid layers: {unknown} are not modules of the model (it has {list(modules)[1:]})")
    wrong = [name for name in layers if not isinstance(modules[name], LAYER_TYPES)]
    if wrong:
        raise ValueError(f"Invalid layers: {wrong} are not nn.Linear or nn.Conv2d")
    overlap = [name for name in layers if _inside(name, exclude)]
    if overlap:
        raise ValueError(f"Invalid layers: {overlap} are inside the head {exclude!r} (it is trained by its VJP)")
    return {name: modules[name] for name in layers}


def _sigmas(sigma, layers: dict) -> dict[str, float]:
    given = dict(sigma) if isinstance(sigma, Mapping) else dict.fromkeys(layers, sigma)
    missing = sorted(set(layers) - set(given))
    if missing:
        raise ValueError(f"Invalid sigma: no value for layers {missing}")
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not 0 < value < math.inf:
            raise ValueError(f"Invalid sigma: {value!r} for layer {name!r} (expected a finite number > 0)")
    return {name: float(given[name]) for name in layers}
