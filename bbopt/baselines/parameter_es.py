"""Parameter-space ES (OpenAI-ES / PGPE style): the baseline that output-space solvers beat.

Salimans et al., "Evolution Strategies as a Scalable Alternative to Reinforcement Learning"
(2017): perturb the flattened parameters ``theta_i = theta + sigma * eps_i`` (antithetic
pairs), evaluate each perturbed network, and step the optimizer along
``g = sum_i u_i eps_i / (n sigma)`` with centered-rank utilities ``u``. Every candidate costs a
forward pass of the whole network and the noise is ``[n/2, P]`` for P parameters: time and
memory grow with the model, which is what ``benchmarks/overhead.py`` measures against OVLR.
Same ask/tell shapes as `bbopt.Solver` (no input: ``[n, d]``; inputs: ``[B, n, d]``), and
the same episode mode (``episodes=N``: ``ask(obs[m], episode_ids)`` once per step, episode i
acting with network i, ``tell(losses[N])``), so the rollout driver runs it unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap

from bbopt.checks import check_float, check_int
from bbopt.es import centered_ranks
from bbopt.presets import Preset
from bbopt.registry import register_solver
from bbopt.validation import loss_stats

__all__ = ["PRESETS", "ParameterES"]

# Per episode (parameter-space sigma); from single-seed runs on HalfCheetah-v5 (bbopt train).
PRESETS = {"episodes": Preset(lr=0.03, sigma=0.03)}


@register_solver("param_es", presets=PRESETS, aliases=("pes",))  # PES usually means Persistent ES
class ParameterES:
    """Antithetic parameter-space ES with centered ranks and any ``torch.optim`` optimizer.

    Args:
        policy: the network; its trainable parameters are searched.
        optimizer: a ``torch.optim.Optimizer`` over them (the estimate is written to ``p.grad``).
        sigma: parameter noise scale (> 0).
        samples: perturbed networks per update, even.
        episodes: episode mode with N episodes (one perturbed network each; N even, and
            ``samples`` is set to N).
        seed: seed of the solver's own generator.
    """

    def __init__(
        self,
        policy: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        sigma: float = 0.02,
        samples: int = 16,
        episodes: int | None = None,
        seed: int = 0,
    ):
        if not isinstance(policy, nn.Module):
            raise ValueError(f"Invalid policy: {type(policy).__name__} (expected a torch.nn.Module)")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"Invalid optimizer: {type(optimizer).__name__} (expected a torch.optim.Optimizer)")
        check_float(sigma, "sigma", above=0.0)
        if episodes is not None:
            samples = check_int(episodes, "episodes", minimum=2, even=True)
        check_int(samples, "samples", minimum=2, even=True)
        self.episodes = episodes
        self.policy, self.optimizer, self.sigma, self.samples = policy, optimizer, float(sigma), samples
        self.names = [name for name, p in policy.named_parameters() if p.requires_grad]
        self.parameters = [p for p in policy.parameters() if p.requires_grad]
        self.generator = torch.Generator(device=self.parameters[0].device).manual_seed(int(seed))
        self.steps = 0
        self._noise: torch.Tensor | None = None  # [n/2, P]
        self._batched = False

    def _perturbed(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        tensors, offset = {}, 0
        for name, parameter in zip(self.names, self.parameters, strict=True):
            tensors[name] = flat[offset : offset + parameter.numel()].view_as(parameter)
            offset += parameter.numel()
        return tensors

    def _draw(self, theta: torch.Tensor) -> None:
        self._noise = torch.randn(
            (self.samples // 2, theta.numel()), generator=self.generator, device=theta.device, dtype=theta.dtype
        )

    def _signed_noise(self, index: torch.Tensor) -> torch.Tensor:
        half = self.samples // 2
        sign = torch.where(index < half, 1.0, -1.0).to(self._noise.dtype)
        return self._noise[index % half] * sign[:, None]

    @torch.no_grad()
    def ask(self, inputs: torch.Tensor | None = None, *, episode_ids=None) -> torch.Tensor:
        if self.episodes is not None:
            return self._ask_episodes(inputs, episode_ids)
        if self._noise is not None:
            raise RuntimeError("ask() called twice without tell(): tell the losses of the last candidates first")
        theta = torch.cat([p.reshape(-1) for p in self.parameters])
        self._draw(theta)
        outputs = []
        for index in range(self.samples):  # one forward of the whole network per candidate
            eps = self._noise[index % (self.samples // 2)] * (1.0 if index < self.samples // 2 else -1.0)
            args = () if inputs is None else (inputs,)
            outputs.append(functional_call(self.policy, self._perturbed(theta + self.sigma * eps), args))
        self._batched = inputs is not None
        return torch.stack(outputs, dim=1 if self._batched else 0)

    def _ask_episodes(self, inputs, episode_ids) -> torch.Tensor:
        """Episode mode: the actions of the live episodes, each from its own network."""
        if inputs is None:
            raise ValueError("Invalid inputs: episode mode needs the observations of the live episodes, [m, ...]")
        inputs = torch.as_tensor(inputs)
        ids = torch.arange(self.episodes) if episode_ids is None else torch.as_tensor(episode_ids).reshape(-1)
        if ids.numel() != inputs.shape[0] or (ids.numel() and (ids.min() < 0 or ids.max() >= self.episodes)):
            raise ValueError(f"Invalid episode_ids: {ids.tolist()} for {inputs.shape[0]} inputs and {self.episodes} "
                             "episodes")  # fmt: skip
        theta = torch.cat([p.reshape(-1) for p in self.parameters])
        if self._noise is None:  # the first step of an update draws the population's networks
            self._draw(theta)
            self._stepped = torch.zeros(self.episodes, dtype=torch.bool)
        self._stepped[ids] = True
        flat = theta + self.sigma * self._signed_noise(ids.to(theta.device))  # [m, P]

        def act(parameters, observation):
            return functional_call(self.policy, self._perturbed(parameters), (observation[None],))[0]

        return vmap(act)(flat, inputs.to(theta.dtype))

    def tell(self, losses) -> dict[str, float]:
        if self._noise is None:
            raise RuntimeError("tell() called before ask(): ask for candidates first")
        if self.episodes is not None and not bool(self._stepped.all()):
            missing = (~self._stepped).nonzero().flatten().tolist()
            raise ValueError(f"Invalid losses: episodes {missing} took no step (ask() each episode at least once)")
        losses = torch.as_tensor(losses, dtype=torch.float64).detach().cpu()
        expected = (self.samples,) if not self._batched else (losses.shape[0], self.samples)
        if tuple(losses.shape) != expected or losses.dim() not in (1, 2):
            raise ValueError(f"Invalid losses: shape {list(losses.shape)} (expected {list(expected)})")
        fitness = losses.reshape(-1, self.samples).mean(0, keepdim=True)  # one score per network
        utilities = centered_ranks(fitness)[0].to(self._noise.device, self._noise.dtype)
        half = self.samples // 2
        # Antithetic: eps_i and -eps_i share noise row i; their utilities enter with opposite signs.
        gradient = (utilities[:half] - utilities[half:]) @ self._noise / (self.samples * self.sigma)
        self._noise = None
        offset = 0
        for parameter in self.parameters:
            parameter.grad = gradient[offset : offset + parameter.numel()].view_as(parameter).clone()
            offset += parameter.numel()
        self.optimizer.step()
        self.steps += 1
        return {"step": float(self.steps), **loss_stats(losses), "sigma": self.sigma}

    def state_dict(self) -> dict:
        """Policy, optimizer, generator and step count (between updates)."""
        if self._noise is not None:
            raise RuntimeError("state_dict() between ask() and tell(): finish the update first")
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "steps": self.steps}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
