"""IOH problems as one-step Gymnasium environments (``bbopt/BBOB-v0``, ``bbopt/PBO-v0``,
``bbopt/Graph-v0``).

Each episode is one evaluation: ``reset`` returns a constant observation (the problem has no
input), ``step(action)`` evaluates the candidate and ends the episode with
``reward = -loss`` (the loss of `Objective`: precision, plus the box penalty for reals). The
action space is the problem's domain: a ``Box`` (BBOB; out-of-box actions are projected and
penalized) or ``MultiBinary`` (PBO, GRAPH). ``info`` carries ``f`` (ioh's value),
``precision``, ``evaluations`` (ioh's count) and ``optimum``. The ioh problem is
``env.unwrapped.problem``, so an ioh logger can be attached to it. ``reset(seed=...)`` starts
a new ioh run; ``reset()`` continues the current one (its evaluations count toward ``budget``).
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np

from bbopt.envs.ioh.problems import Objective, get_problem

__all__ = ["IOHEnv"]


class IOHEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, suite: str = "bbob", function: int | str = 1, instance: int = 1, dimension: int = 5,
                 budget: int | None = None):  # fmt: skip
        self.problem = get_problem(suite, function, instance, dimension)
        self.objective = Objective(self.problem, budget=budget)
        size = self.objective.dimension
        if self.objective.binary:
            self.action_space = gym.spaces.MultiBinary(size)
        else:
            self.action_space = gym.spaces.Box(
                self.objective.lower.astype(np.float32), self.objective.upper.astype(np.float32), dtype=np.float32
            )
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``reset(seed=...)`` starts a fresh ioh run (evaluations, best and trace cleared; an
        attached logger starts a new run); ``reset()`` continues the current run."""
        super().reset(seed=seed)
        if seed is not None:
            self.objective.restart()
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        action = np.asarray(action, dtype=float).reshape(1, -1)
        if self.objective.binary:
            action = np.where(action > 0.5, 1.0, -1.0)  # bits in, signs for the decoder
        loss = float(self.objective(action)[0])
        info = {
            "f": float(self.problem.state.current.y),
            "precision": self.objective.trace[-1][1],
            "evaluations": self.objective.evaluations,
            "optimum": self.objective.optimum,
        }
        return np.zeros(1, dtype=np.float32), -loss, True, False, info
