"""Scripted demonstrations: generation (success-filtered), a validated ``.npz`` schema, chunks.

A file holds the successful episodes end to end (each stops at its success step, as the env
terminates there)::

    observations     float32 [N, obs_dim]   every step's observation, episodes concatenated
    actions          float32 [N, 14]        the scripted joint targets taken there
    episode_lengths  int64   [E]            steps per episode (sum = N)
    placement_seeds  int64   [E]            object placement of each episode (replayable)
    meta             str (JSON)             schema, task, attempted, succeeded, noise, seconds

`load_demos` checks all of it and names what is wrong.
"""

from __future__ import annotations

import itertools
import json
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bbopt.checks import check_int
from bbopt.envs.aloha.env import TASKS, AlohaStateEnv, observation_size
from bbopt.envs.aloha.scripted import SCRIPTED
from bbopt.rollout.checkpoint import atomic_write

__all__ = ["SCHEMA", "Demos", "action_chunks", "generate_demos", "load_demos", "save_demos", "scripted_episode"]

SCHEMA = "bbopt.aloha.demos/1"
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)  # what reading a bad .npz raises
ACTION_DIM = 14
NOISE_CORRELATION = 0.95


@dataclass
class Demos:
    task: str
    observations: np.ndarray
    actions: np.ndarray
    episode_lengths: np.ndarray
    placement_seeds: np.ndarray
    attempted: int
    noise: float = 0.0
    seconds: float = 0.0

    @property
    def episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def success_rate(self) -> float:
        """Successful / attempted episodes of the scripted policy that made these demos."""
        return self.episodes / self.attempted if self.attempted else float("nan")

    def __post_init__(self):
        validate(self)

    def split(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(observations, actions)`` of each episode."""
        bounds = np.concatenate([[0], np.cumsum(self.episode_lengths)])
        return [(self.observations[a:b], self.actions[a:b]) for a, b in itertools.pairwise(bounds)]


def validate(demos: Demos) -> None:
    """Raise ``ValueError`` naming the first field that breaks the schema."""
    if demos.task not in TASKS:
        raise ValueError(f"Invalid demos: task {demos.task!r} (expected one of {TASKS})")
    obs, actions = demos.observations, demos.actions
    lengths, seeds = demos.episode_lengths, demos.placement_seeds
    expected = observation_size(demos.task)
    if obs.ndim != 2 or obs.shape[1] != expected:
        raise ValueError(
            f"Invalid demos: observations have shape {obs.shape} (expected [N, {expected}] for {demos.task})"
        )
    if actions.shape != (obs.shape[0], ACTION_DIM):
        raise ValueError(f"Invalid demos: actions have shape {actions.shape} (expected [{obs.shape[0]}, {ACTION_DIM}])")
    if lengths.ndim != 1 or seeds.shape != lengths.shape:
        raise ValueError(f"Invalid demos: episode_lengths {lengths.shape} and placement_seeds {seeds.shape} "
                         "must be 1-D of one length")  # fmt: skip
    if len(lengths) == 0 or (lengths < 1).any() or int(lengths.sum()) != obs.shape[0]:
        raise ValueError(f"Invalid demos: episode_lengths must be >= 1 and sum to the {obs.shape[0]} steps "
                         f"(they sum to {int(lengths.sum())} over {len(lengths)} episodes)")  # fmt: skip
    if not (np.isfinite(obs).all() and np.isfinite(actions).all()):
        raise ValueError("Invalid demos: observations or actions contain NaN or inf")
    if not isinstance(demos.attempted, int) or demos.attempted < len(lengths):
        raise ValueError(f"Invalid demos: attempted {demos.attempted!r} < {len(lengths)} successful episodes")


def generate_demos(task: str, episodes: int, *, seed: int = 0, noise: float = 0.0, progress: bool = True) -> Demos:
    """Run the scripted policy on placement seeds ``seed, seed + 1, ...`` and keep the
    ``episodes`` first attempts' successes (the failures are counted in ``attempted``).

    ``noise`` > 0 adds slowly varying Gaussian noise of that std (radians; an AR(1) process
    with correlation ``NOISE_CORRELATION`` per step, about 0.4 s) to the executed arm-joint
    targets while the scripted (clean) action is recorded (DART, Laskey et al. 2017): the demos
    then show how to return to the plan from nearby states, which imitation needs.
    """
    check_int(episodes, "episodes", minimum=1)
    if not noise >= 0:
        raise ValueError(f"Invalid noise: {noise!r} (expected >= 0)")
    env = AlohaStateEnv(task)
    policy = SCRIPTED[task](env.physics.model.ptr)
    observations, actions, lengths, seeds = [], [], [], []
    began = time.perf_counter()
    bar = tqdm(range(seed, seed + episodes), desc=f"demos {task}", disable=not progress)
    for placement in bar:
        steps_obs, steps_act, info = scripted_episode(env, policy, placement, noise)
        if info["is_success"]:
            observations += steps_obs
            actions += steps_act
            lengths.append(len(steps_act))
            seeds.append(placement)
        bar.set_postfix_str(f"success {len(lengths)}/{placement - seed + 1}")
    env.close()
    if not lengths:
        raise RuntimeError(f"The scripted {task} policy succeeded in none of {episodes} episodes")
    return Demos(task, np.asarray(observations, dtype=np.float32), np.asarray(actions, dtype=np.float32),
                 np.asarray(lengths, dtype=np.int64), np.asarray(seeds, dtype=np.int64), attempted=episodes,
                 noise=noise, seconds=time.perf_counter() - began)  # fmt: skip


def scripted_episode(env: AlohaStateEnv, policy, placement: int, noise: float = 0.0, *,
                     before_step: Callable[[int], None] | None = None) -> tuple[list, list, dict]:  # fmt: skip
    """One episode of the scripted ``policy`` on ``placement``, as `generate_demos` runs it (the
    DART noise drawn from the placement seed, so an episode replays exactly): every step's
    observation and recorded (clean) action, and the last step's info. ``before_step(k)`` is
    called before the action of step ``k`` is taken."""
    arms = np.r_[0:6, 7:13]
    obs, info = env.reset(seed=placement)
    policy.reset(obs)
    rng = np.random.default_rng([placement, 1])
    offset = rng.normal(0.0, noise, size=len(arms))
    steps_obs, steps_act = [], []
    done = False
    while not done:
        if before_step is not None:
            before_step(len(steps_act))
        action = policy(obs)
        steps_obs.append(obs)
        steps_act.append(action)
        executed = action.copy()
        if noise > 0:
            executed[arms] += offset
            rho = NOISE_CORRELATION
            offset = rho * offset + np.sqrt(1 - rho**2) * rng.normal(0.0, noise, size=len(arms))
        obs, _, terminated, truncated, info = env.step(executed)
        done = terminated or truncated
    return steps_obs, steps_act, info


def save_demos(demos: Demos, path) -> Path:
    """Write ``demos`` to ``path`` (``.npz``, compressed), atomically."""
    meta = {"schema": SCHEMA, "task": demos.task, "attempted": demos.attempted, "succeeded": demos.episodes,
            "noise": demos.noise, "seconds": round(demos.seconds, 3)}  # fmt: skip
    arrays = {"observations": demos.observations, "actions": demos.actions, "episode_lengths": demos.episode_lengths,
              "placement_seeds": demos.placement_seeds, "meta": np.array(json.dumps(meta))}  # fmt: skip
    return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


def load_demos(path) -> Demos:
    """Read and validate a demonstrations file written by `save_demos`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No demonstrations file at {path} (make one with: bbopt aloha demos --out {path})")
    not_npz = f"Invalid demos file {path}: not an .npz archive of demonstrations (make one with: bbopt aloha demos)"
    try:
        data = np.load(path, allow_pickle=False)
    except _UNREADABLE:  # a pickle, a torch file, a torn archive, text
        raise ValueError(not_npz) from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a single .npy array
        raise ValueError(not_npz)
    with data:
        missing = {"observations", "actions", "episode_lengths", "placement_seeds", "meta"} - set(data.files)
        if missing:
            raise ValueError(f"Invalid demos file {path}: missing {sorted(missing)}")
        try:
            meta = json.loads(str(data["meta"]))
            fields = {name: data[name] for name in ("observations", "actions", "episode_lengths", "placement_seeds")}
        except _UNREADABLE as error:  # a damaged member (CRC, truncation), bad JSON
            raise ValueError(f"Invalid demos file {path}: an unreadable member ({error})") from None
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
            schema = meta.get("schema") if isinstance(meta, dict) else None
            raise ValueError(f"Invalid demos file {path}: schema {schema!r} (expected {SCHEMA!r})")
    for name, kind in (("observations", "f"), ("actions", "f"), ("episode_lengths", "i"), ("placement_seeds", "i")):
        if fields[name].dtype.kind != kind:
            raise ValueError(f"Invalid demos file {path}: {name} has dtype {fields[name].dtype}")
    return Demos(
        meta.get("task"),
        **fields,
        attempted=meta.get("attempted"),
        noise=meta.get("noise", 0.0),
        seconds=meta.get("seconds", 0.0),
    )


def action_chunks(demos: Demos, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs: each step's observation ``[N, obs_dim]`` and the next ``chunk`` actions
    ``[N, chunk * 14]`` from that step (past the episode's end, its last action repeats)."""
    check_int(chunk, "chunk", minimum=1)
    targets = []
    for _, actions in demos.split():
        index = np.minimum(np.arange(len(actions))[:, None] + np.arange(chunk)[None], len(actions) - 1)
        targets.append(actions[index].reshape(len(actions), -1))
    return torch.as_tensor(demos.observations), torch.as_tensor(np.concatenate(targets))
