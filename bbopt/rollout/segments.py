"""Per-step credit for fixed-length segments of running episodes (``Trainer(horizon=T)``).

With whole episodes an update waits for every episode of the population to end: a thousand
steps per update on MuJoCo locomotion, some sixty updates per million steps. PPO instead steps
each of its envs a fixed number of steps per update, whatever episode they are in, and closes
the unfinished ends with its critic's value. `segment_credit` is that credit for one update's
``[T, N]`` steps of N env slots: a slot's episode may end at any step (``ends``), and the next
one starts in the same slot at the next step.

Costs-to-go run back within each episode's part of the segment and are closed with the critic's
value of the state the slot is in after the last step (``bootstrap``, zero past an episode's
end): ``G_t = c_t + gamma (1 - end_t) G_{t+1}``, ``G_T = V(s_T)``. GAE(lambda) is the same
recursion on TD errors, ``delta_t = c_t + gamma (1 - end_t) V(s_{t+1}) - V(s_t)``. With
lambda = 1 the advantage is ``G_t - V(s_t)``: the bootstrap ``V(s_T)`` depends on the noise of
the segment's steps, so unlike whole-episode credit it is biased unless V is exact (as PPO's
is); a longer horizon T shrinks its weight by gamma^(T - t).
"""

from __future__ import annotations

import numpy as np

__all__ = ["segment_credit"]


def segment_credit(costs: np.ndarray, ends: np.ndarray, values: np.ndarray, bootstrap: np.ndarray, *,
                   discount: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``costs``, ``ends`` (bool) and ``values`` ``[T, N]``: step t's cost in slot j, whether
    the slot's episode ended with it, ``V(s_t)``; ``bootstrap[N]``: ``V`` of each slot's state
    after the last step. Returns (advantages, costs-to-go), each ``[T, N]``: GAE(lambda)
    advantages and the bootstrapped discounted costs-to-go (the critic's targets)."""
    costs, values = np.asarray(costs, dtype=np.float64), np.asarray(values, dtype=np.float64)
    ends = np.asarray(ends, dtype=bool)
    if not (costs.shape == ends.shape == values.shape and costs.ndim == 2):
        raise ValueError(f"Invalid segment: costs {costs.shape}, ends {ends.shape}, values {values.shape}")
    following_value = np.asarray(bootstrap, dtype=np.float64).reshape(-1)
    if following_value.shape != (costs.shape[1],):
        raise ValueError(f"Invalid bootstrap: shape {following_value.shape} for {costs.shape[1]} slots")
    advantages, to_go = np.zeros_like(costs), np.zeros_like(costs)
    following_advantage, following = np.zeros(costs.shape[1]), following_value.copy()
    for t in range(costs.shape[0] - 1, -1, -1):
        going_on = discount * ~ends[t]  # 0 where the episode ended with this step
        following = costs[t] + going_on * following
        delta = costs[t] + going_on * following_value - values[t]
        following_advantage = delta + going_on * gae_lambda * following_advantage
        to_go[t], advantages[t] = following, following_advantage
        following_value = values[t]
    return advantages, to_go
