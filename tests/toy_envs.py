"""Small deterministic Gymnasium envs for the rollout tests (importable by worker processes)."""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np


class PointMass(gym.Env):
    """A point in the plane pushed by the action; reward -||x||^2 per step. The episode
    terminates inside radius 0.2 and is truncated after a horizon of 5-30 steps drawn from
    the reset seed, so episodes have different lengths."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, fail_seed: int | None = None, fail_step: int = 3):
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.fail_seed, self.fail_step = fail_seed, fail_step

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_used = seed
        self.position = self.np_random.uniform(-2, 2, size=2)
        self.horizon = int(self.np_random.integers(5, 31))
        self.t = 0
        return self.position.astype(np.float32), {}

    def step(self, action):
        if self.seed_used == self.fail_seed and self.t == self.fail_step:
            raise RuntimeError("simulated simulator crash")
        self.position = np.clip(self.position + 0.3 * np.asarray(action, dtype=np.float64), -10, 10)
        self.t += 1
        reward = -float(self.position @ self.position)
        terminated = bool(np.linalg.norm(self.position) < 0.2)
        return self.position.astype(np.float32), reward, terminated, self.t >= self.horizon, {}


def point_mass(**kwargs) -> PointMass:
    return PointMass(**kwargs)


class HangingPointMass(PointMass):
    """A PointMass whose step ``hang_step`` of the episode with seed ``hang_seed`` sleeps for an
    hour: once if ``marker`` names a file (created when it hangs; a replay then passes), at
    every replay too if ``marker`` is None."""

    def __init__(self, hang_seed: int = 0, hang_step: int = 3, marker: str | None = None):
        super().__init__()
        self.hang_seed, self.hang_step, self.marker = hang_seed, hang_step, marker

    def step(self, action):
        if self.seed_used == self.hang_seed and self.t == self.hang_step:
            import os
            import time

            if self.marker is None or not os.path.exists(self.marker):
                if self.marker is not None:
                    open(self.marker, "w").close()
                time.sleep(3600)
        return super().step(action)


def hanging_point_mass(**kwargs) -> HangingPointMass:
    return HangingPointMass(**kwargs)


class SlowPointMass(PointMass):
    """A PointMass whose every step sleeps ``step_seconds`` (a slow simulator)."""

    def __init__(self, step_seconds: float = 0.1):
        super().__init__()
        self.step_seconds = step_seconds

    def step(self, action):
        import time

        time.sleep(self.step_seconds)
        return super().step(action)


def slow_point_mass(**kwargs) -> SlowPointMass:
    return SlowPointMass(**kwargs)
