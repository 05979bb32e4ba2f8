"""Bin packing as Gymnasium environments.

``bbopt/BinPacking-v0``: one step per episode. The observation is the instance's item sizes
divided by the capacity; the action is one priority per item; the decoder packs the items
and the episode ends with ``reward = -loss`` (bins plus the fill tie-breaker of
`bbopt.envs.binpacking.decoders`). ``info`` has ``bins``, ``lower_bound``, ``optimum``
(None when unknown) and ``success``.

``bbopt/BinPackingOnline-v0``: items arrive one at a time in the instance's order. The
observation is ``[size / C, items left / items, room_1 / C, ..., room_K / C]`` over K bin
slots (K = the item count: a policy may open a bin per item; a slot not opened yet has room 1); the action is
one score per slot and the item goes into the highest-scoring slot it fits (so every action
is feasible; an unopened slot means a new bin). The reward is -1 per bin opened, so the
return is -bins; ``info`` at the end has the same keys as the one-step env.

Both take a fixed ``instance`` or draw a fresh one at every ``reset`` from a generator
(``family="triplet" | "uniform"``, ``items``), seeded by ``reset(seed=...)``.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np

from bbopt.envs.binpacking.decoders import DECODERS, decode
from bbopt.envs.binpacking.instance import Instance, triplet, uniform

__all__ = ["FAMILIES", "BinPackingEnv", "BinPackingOnlineEnv", "make_instance"]

FAMILIES = {"triplet": triplet, "uniform": uniform}


def make_instance(family: str, items: int, seed) -> Instance:
    """A seeded instance of a generator family (``"triplet"`` or ``"uniform"``)."""
    if family not in FAMILIES:
        raise ValueError(f"Invalid family: {family!r} (expected one of {sorted(FAMILIES)})")
    return FAMILIES[family](items, seed=seed)


class _InstanceSource:
    """A fixed instance, or a fresh one per reset from a family."""

    def __init__(self, instance: Instance | None, family: str, items: int):
        if instance is not None and not isinstance(instance, Instance):
            raise ValueError(f"Invalid instance: {type(instance).__name__} (expected a bbopt Instance)")
        if instance is None:
            make_instance(family, items, seed=0)  # validates family and items now, not at reset
        self.fixed, self.family, self.items = instance, family, instance.items if instance else items

    def next(self, rng: np.random.Generator) -> Instance:
        return self.fixed if self.fixed is not None else make_instance(self.family, self.items, rng)


def _summary(instance: Instance, bins: int) -> dict:
    return {"bins": bins, "lower_bound": instance.lower_bound, "optimum": instance.optimum,
            "success": bins <= instance.best_bound}  # fmt: skip


class BinPackingEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, instance: Instance | None = None, *, family: str = "triplet", items: int = 60,
                 decoder: str = "completion"):  # fmt: skip
        if decoder not in DECODERS:
            raise ValueError(f"Invalid decoder: {decoder!r} (expected one of {list(DECODERS)})")
        self.source = _InstanceSource(instance, family, items)
        self.decoder = decoder
        self.instance = self.source.fixed
        n = self.source.items
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.instance = self.source.next(self.np_random)
        return (self.instance.sizes / self.instance.capacity).astype(np.float32), {}

    def step(self, action):
        if self.instance is None:
            raise RuntimeError("Call reset() before step()")
        packing = decode(self.instance, np.asarray(action, dtype=np.float64), self.decoder)
        info = {**_summary(self.instance, int(packing.bins[0])), "bin_of": packing.bin_of[0]}
        observation = (self.instance.sizes / self.instance.capacity).astype(np.float32)
        return observation, -float(packing.loss[0]), True, False, info


class BinPackingOnlineEnv(gym.Env):
    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, instance: Instance | None = None, *, family: str = "triplet", items: int = 60):
        self.source = _InstanceSource(instance, family, items)
        self.slots = self.source.items  # a policy may open a bin per item
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(2 + self.slots,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.slots,), dtype=np.float32)
        self.instance = None

    def _observation(self) -> np.ndarray:
        n = self.instance.items
        size = self.instance.sizes[self.position] / self.instance.capacity if self.position < n else 0.0
        head = [size, (n - self.position) / n]
        return np.concatenate([head, self.room / self.instance.capacity]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.instance = self.source.next(self.np_random)
        self.room = np.full(self.slots, self.instance.capacity, dtype=np.int64)
        self.position, self.bins = 0, 0
        return self._observation(), {}

    def step(self, action):
        if self.instance is None or self.position >= self.instance.items:
            raise RuntimeError("Call reset() before step() (the episode has ended)")
        scores = np.asarray(action, dtype=np.float64).reshape(-1)
        if scores.shape != (self.slots,) or not np.isfinite(scores).all():
            raise ValueError(f"Invalid action: expected {self.slots} finite scores, got shape {list(scores.shape)}")
        size = self.instance.sizes[self.position]
        fits = self.room >= size
        slot = int(np.flatnonzero(fits)[np.argmax(scores[fits])])
        opened = self.room[slot] == self.instance.capacity
        self.room[slot] -= size
        self.bins += int(opened)
        self.position += 1
        done = self.position == self.instance.items
        info = _summary(self.instance, self.bins) if done else {}
        return self._observation(), -float(opened), done, False, info
