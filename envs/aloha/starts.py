"""Episodes that start from demonstrations' states: a reset distribution for fine-tuning.

A staged task (insertion: touch both, grasp both, peg at the socket, pin) pays a stage only
after the ones before it, so a policy that fails the first stages rarely practises the last.
Started from a state a demonstration passed through, an episode practises the later stages
directly: the reset distribution drawn from the demonstrations' states of Nair et al. 2018
("Overcoming exploration in reinforcement learning with demonstrations") and Salimans & Chen
2018 ("Learning Montezuma's Revenge from a single demonstration"). The evaluation placements
still start from the beginning; only training episodes are moved.

`demo_states` re-runs the scripted policy on each demonstration's placement (with the demo's
DART noise, so the run is the recorded one) and keeps MuJoCo's full state before every step;
the re-run is checked against the recorded observations, so a file made by another version of
the scripted policy or of MuJoCo is refused, naming the episode. `DemoStarts` then starts a
fraction of the episodes from one of those states: whether, which demonstration and which step
are drawn from the reset seed alone (uniform over demonstrations, then over their steps), so a
run is reproducible and the Trainer's antithetic partners, which share a seed, share the start.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from bbopt.checks import check_float
from bbopt.envs.aloha.demos import Demos, scripted_episode
from bbopt.envs.aloha.env import AlohaStateEnv, Snapshot
from bbopt.envs.aloha.scripted import SCRIPTED

__all__ = ["DemoStarts", "demo_states"]

REPLAY_TOLERANCE = 1e-4  # largest observation difference between a re-run and its recorded demo
_STREAM = 0x5DA7  # the start's draw: its own stream of the reset seed


def demo_states(demos: Demos) -> list[list[Snapshot]]:
    """Per demonstration, the env's `Snapshot` before each of its steps (steps ``0 .. length - 1``)."""
    env = AlohaStateEnv(demos.task)
    policy = SCRIPTED[demos.task](env.physics.model.ptr)
    states = []
    for episode, ((recorded, _), placement) in enumerate(zip(demos.split(), demos.placement_seeds, strict=True)):
        snapshots: list[Snapshot] = []
        keep = snapshots.append
        observations, _, _ = scripted_episode(env, policy, int(placement), demos.noise,
                                              before_step=lambda _, keep=keep: keep(env.snapshot()))  # fmt: skip
        replayed = np.asarray(observations[: len(recorded)], dtype=np.float32)
        gap = np.abs(replayed - recorded).max() if len(replayed) == len(recorded) else np.inf
        if not gap <= REPLAY_TOLERANCE:
            raise ValueError(f"Invalid demos: episode {episode} (placement {placement}) does not replay: "
                             f"{len(observations)} steps vs {len(recorded)} recorded, observations {gap:.3g} apart "
                             "(made by another version of the scripted policy or of MuJoCo?)")  # fmt: skip
        states.append(snapshots[: len(recorded)])
    env.close()
    return states


class DemoStarts(gym.Wrapper):
    """Start a ``fraction`` of the episodes from ``states`` (`demo_states`); the others, and a
    reset without a seed, from a fresh placement. ``info["start_step"]`` names a moved start's step."""

    def __init__(self, env: gym.Env, states: list[list[Snapshot]], fraction: float):
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(base, AlohaStateEnv):
            raise ValueError(f"Invalid env: DemoStarts needs an AlohaStateEnv, not {type(base).__name__}")
        self.fraction = check_float(fraction, "fraction", at_least=0.0, at_most=1.0)
        if not states or not all(states) or any(s.task != base.task for states_of in states for s in states_of):
            raise ValueError(f"Invalid states: expected a non-empty list of {base.task!r} snapshots per demonstration")
        self.states = states

    def start(self, seed: int) -> Snapshot | None:
        """The state an episode reset with ``seed`` starts from (None: a fresh placement)."""
        rng = np.random.default_rng([int(seed), _STREAM])
        if rng.random() >= self.fraction:
            return None
        snapshots = self.states[int(rng.integers(len(self.states)))]
        return snapshots[int(rng.integers(len(snapshots)))]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        start = None if seed is None or (options and "snapshot" in options) else self.start(seed)
        if start is None:
            return self.env.reset(seed=seed, options=options)
        return self.env.reset(seed=seed, options=(options or {}) | {"snapshot": start})
