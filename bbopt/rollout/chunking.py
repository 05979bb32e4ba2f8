"""Executing action chunks: ACT's temporal ensembling, and an env that takes whole chunks.

A chunk policy predicts actions t .. t + k - 1 at every step t. `TemporalEnsemble` turns the
stream of chunks into one action per step: the average of every stored chunk's prediction for
step t, weighted ``exp(-m * age)`` (age 0 = the newest chunk). `ChunkedActions` moves that
inside the env: its action is the whole flattened chunk, so a solver's output-space noise
reaches every predicted action that is executed, and the rollout driver can train a chunk
policy through the simulator unchanged.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from bbopt.checks import check_int

__all__ = ["CHUNK_NOISES", "ChunkedActions", "TemporalEnsemble"]

# How a solver's noise covers a chunk policy's output: "independent", a draw per entry, or
# "shared", one draw per step repeated over the chunk's steps (`bbopt.noise.Tiled`: with noise
# correlated over time the executed ensemble moves by nearly the whole sigma).
CHUNK_NOISES = ("independent", "shared")


class TemporalEnsemble:
    """``add(chunk[k, a]) -> action[a]`` for the current step; ``reset()`` between episodes."""

    def __init__(self, chunk: int, *, decay: float = 0.1):
        check_int(chunk, "chunk", minimum=1)
        if not decay >= 0:
            raise ValueError(f"Invalid decay: {decay!r} (expected >= 0)")
        self.chunk, self.decay = chunk, float(decay)
        self.chunks: list[np.ndarray] = []

    def reset(self) -> None:
        self.chunks = []

    def add(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] != self.chunk:
            raise ValueError(f"Invalid chunk shape {chunk.shape}: expected [{self.chunk}, action_dim]")
        self.chunks = [*self.chunks[max(0, len(self.chunks) - self.chunk + 1) :], chunk]  # the k newest
        ages = np.arange(len(self.chunks))[::-1]
        predictions = np.stack([c[age] for c, age in zip(self.chunks, ages, strict=True)])
        weights = np.exp(-self.decay * ages)
        return (weights[:, None] * predictions).sum(0) / weights.sum()


class ChunkedActions(gym.Wrapper):
    """An env whose action is a flattened chunk ``[k * a]`` of the wrapped env's Box actions;
    each step executes the temporal ensemble of the chunks so far (``decay`` as in
    `TemporalEnsemble`; ``decay=inf`` would be the newest chunk's first action)."""

    def __init__(self, env: gym.Env, chunk: int, *, decay: float = 0.1):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"Invalid env: ChunkedActions needs a 1-D Box action space, not {space}")
        self.ensemble = TemporalEnsemble(chunk, decay=decay)
        self.base_shape = space.shape[0]
        self.action_space = gym.spaces.Box(np.tile(space.low, chunk), np.tile(space.high, chunk), dtype=space.dtype)

    def reset(self, **kwargs):
        self.ensemble.reset()
        return self.env.reset(**kwargs)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"Invalid action shape {action.shape}: expected {self.action_space.shape}")
        executed = self.ensemble.add(action.reshape(self.ensemble.chunk, self.base_shape))
        return self.env.step(np.clip(executed, self.env.action_space.low, self.env.action_space.high))
