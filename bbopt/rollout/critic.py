"""A learned state-value control variate for per-step credit (``Trainer(credit="to_go", critic=...)``).

With per-step credit each recorded step t of episode j is weighted by its cost still to come,
``G_t``, against the other episodes' at the same step. `StateValue` learns ``V(s_t, t)``, the
expected cost-to-go from the state and the time step, and the solver is told the advantages
``A_t = G_t - V(s_t, t)`` instead. The noise of step t acts from step t on: neither the state
``s_t`` nor the time step depends on it, and V is fitted only on earlier updates' episodes (the
advantages are formed before this update's fit), so ``E[V(s_t, t) * score(eps_t)] = 0`` and the
estimate stays unbiased while the variance of what the state already decides is gone (the
state-dependent baseline of REINFORCE and of PPO's critic, Williams 1992; Schulman et al. 2016).

``gae_lambda < 1`` uses generalized advantage estimation with the costs-to-go's discount gamma
(the Trainer's ``discount``, 1 by default): ``A_t = sum_k (gamma lambda)^k delta_{t+k}``,
``delta_t = c_t + gamma V(s_{t+1}) - V(s_t)``, ``V = 0`` past the episode's end; V learns the
discounted cost-to-go, so the TD errors telescope and lambda = 1 gives ``G_t - V(s_t, t)``. Its
``V(s_{t+1})`` depends on step t's noise, so it is biased unless V is exact: it trades bias for
variance. ``gae_lambda = 1`` (default) is ``G_t - V(s_t, t)``, exactly unbiased (for the
discounted cost-to-go the Trainer credits).

What V is regressed on (``target``): ``"to_go"`` (default), the discounted cost-to-go ``G_t``
(closed with the critic's own value only at a segment's end, ``Trainer(horizon=T)``), or
``"lambda_return"``, ``A_t + V(s_t)`` with this update's GAE(lambda) advantages, the TD(lambda)
return: what PPO's value network is fitted on (``returns = advantages + values`` in
Stable-Baselines3's rollout buffer). The two are equal at lambda 1; below 1 the lambda-return
cuts each step's sum short with the critic's own values, so its targets vary less (and lean on
V's bias). The advantages the solver is told are the same either way: only the next updates' V
changes, and the estimate stays unbiased at lambda 1 as with any V. Not `bbopt train`'s default:
it did not hold on held-out seeds (docs/results/locomotion.md).

The network sees the observation through the policy's `ObservationNormalizer` (when it has
one) and the time step as ``t / horizon`` (the env's TimeLimit; left out when the env has none).
Targets are normalized by their batch mean and standard deviation, and when those change the
last layer is rescaled so that the predictions stay the same (PopArt, van Hasselt et al. 2016).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from bbopt.checks import check_choice, check_float, check_int
from bbopt.policies import MLP

__all__ = ["CRITIC_EPOCHS", "CRITIC_HIDDEN", "TARGETS", "StateValue"]

# StateValue's default widths and passes per fit (`bbopt train`'s per-step recipe fits 256-256 x 10: runs.RECIPES)
CRITIC_HIDDEN, CRITIC_EPOCHS = (64, 64), 5
TARGETS = ("to_go", "lambda_return")  # what V is regressed on (see the module)


class StateValue:
    """Args:
    hidden: widths of the value network's hidden layers (Tanh).
    lr: Adam's step for the value network.
    epochs, batch_size: passes and minibatch size of each fit on one update's steps.
    gae_lambda: 1 (default): ``G_t - V``; below 1: GAE(lambda) (biased, see the module).
    target: what V is regressed on: ``"to_go"`` (default), the discounted costs-to-go, or
        ``"lambda_return"``, the advantages plus V's values (PPO's; see the module).
    seed: the network's initialization and the minibatch order.
    """

    def __init__(self, *, hidden: Sequence[int] = CRITIC_HIDDEN, lr: float = 1e-3, epochs: int = CRITIC_EPOCHS,
                 batch_size: int = 1024, gae_lambda: float = 1.0, target: str = "to_go", seed: int = 0):  # fmt: skip
        self.hidden = [check_int(width, "hidden width", minimum=1) for width in hidden]
        self.lr = check_float(lr, "lr", above=0)
        self.epochs = check_int(epochs, "epochs", minimum=1)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.gae_lambda = check_float(gae_lambda, "gae_lambda", at_least=0.0, at_most=1.0)
        self.target = check_choice(target, "target", TARGETS)
        self.seed = check_int(seed, "seed", minimum=0)
        self.network: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.normalizer = None
        self.horizon: int | None = None
        self.offset, self.scale = 0.0, 1.0  # targets = offset + scale * network output
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_error = float("nan")  # mean squared error of the last fit's final pass, in target units

    def setup(self, observation_size: int, *, horizon: int | None, normalizer=None) -> None:
        """Called by the Trainer: the observation width, the env's step limit, the policy's normalizer."""
        self.normalizer, self.horizon = normalizer, horizon
        inputs = observation_size + (horizon is not None)
        self.network = MLP(inputs, 1, hidden=self.hidden, seed=self.seed).double()
        with torch.no_grad():  # start at V = 0: the first update's advantages are the plain costs-to-go
            self.network.layers[-1].weight.zero_()
            self.network.layers[-1].bias.zero_()
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.lr)

    # ----------------------------------------------------------------------------- values
    def features(self, observations: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        observations = torch.as_tensor(observations).to(torch.float64)
        if self.normalizer is not None:
            observations = self.normalizer(observations).to(torch.float64)
        if self.horizon is None:
            return observations
        return torch.cat([observations, (steps.to(torch.float64) / self.horizon)[:, None]], dim=1)

    @torch.no_grad()
    def predict(self, observations: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``V(s, t)`` in cost units, ``[m]`` float64."""
        return self.offset + self.scale * self.network(self.features(observations, steps))[:, 0]

    def advantages(self, to_go: np.ndarray, costs: np.ndarray, values: np.ndarray, alive: np.ndarray, *,
                   discount: float = 1.0) -> np.ndarray:  # fmt: skip
        """Per call and episode ``[calls, N]``: ``G - V`` (lambda 1), or GAE(lambda) from the
        per-step costs with the discount ``to_go`` was summed with; ``alive[k, j]``: episode j
        was asked at call k (0 elsewhere)."""
        discount = check_float(discount, "discount", above=0.0, at_most=1.0)
        if self.gae_lambda == 1.0:
            return np.where(alive, to_go - values, 0.0)
        advantages = np.zeros_like(to_go)
        following_value, following = np.zeros(to_go.shape[1]), np.zeros(to_go.shape[1])
        for k in range(to_go.shape[0] - 1, -1, -1):
            delta = costs[k] + discount * following_value - values[k]
            following = np.where(alive[k], delta + discount * self.gae_lambda * following, 0.0)
            advantages[k] = following
            following_value = np.where(alive[k], values[k], 0.0)
        return advantages

    def targets(self, to_go: np.ndarray, advantages: np.ndarray, values: np.ndarray) -> np.ndarray:
        """What `fit` regresses on, per step (same shapes): the costs-to-go, or with ``target=
        "lambda_return"`` the advantages (GAE(lambda), before any change for failed episodes) plus
        the values they were formed with."""
        return np.asarray(to_go) if self.target == "to_go" else np.asarray(advantages) + np.asarray(values)

    # -------------------------------------------------------------------------------- fit
    def fit(self, observations: torch.Tensor, steps: torch.Tensor, targets: torch.Tensor) -> float:
        """Regress V on one update's `targets` (after the advantages were formed); returns the
        last pass's mean squared error in target units."""
        targets = torch.as_tensor(targets, dtype=torch.float64)
        if targets.numel() == 0:
            return self.last_error
        if not bool(torch.isfinite(targets).all()):
            raise ValueError(f"Invalid targets: non-finite values (target {self.target!r})")
        self._rescale(float(targets.mean()), float(targets.std()) if targets.numel() > 1 else 1.0)
        features = self.features(observations, steps)
        normalized = (targets - self.offset) / self.scale
        total = 0.0
        for _ in range(self.epochs):
            total = 0.0
            for batch in torch.randperm(len(targets), generator=self.generator).split(self.batch_size):
                self.optimizer.zero_grad(set_to_none=True)
                loss = ((self.network(features[batch])[:, 0] - normalized[batch]) ** 2).mean()
                loss.backward()
                self.optimizer.step()
                total += float(loss.detach()) * len(batch)
        self.last_error = total / len(targets) * self.scale**2
        return self.last_error

    @torch.no_grad()
    def _rescale(self, offset: float, scale: float) -> None:
        """New target statistics, the last layer rescaled so that every prediction is unchanged."""
        scale = max(scale, 1e-8 * max(1.0, abs(offset)))
        last = self.network.layers[-1]
        last.weight.mul_(self.scale / scale)
        last.bias.mul_(self.scale).add_(self.offset - offset).div_(scale)
        self.offset, self.scale = offset, scale

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "offset": self.offset, "scale": self.scale, "generator": self.generator.get_state(),
                "last_error": self.last_error}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("network", "optimizer", "offset", "scale", "generator") if k not in state]
        if missing:
            raise ValueError(f"Invalid critic state: missing {missing}")
        if not (math.isfinite(state["offset"]) and math.isfinite(state["scale"]) and state["scale"] > 0):
            raise ValueError(f"Invalid critic state: offset {state['offset']!r}, scale {state['scale']!r}")
        self.network.load_state_dict(state["network"])
        # a copy: torch's Adam keeps the given state's tensors as its own, and later fits would change them
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.offset, self.scale = float(state["offset"]), float(state["scale"])
        self.generator.set_state(state["generator"])
        self.last_error = float(state.get("last_error", float("nan")))
