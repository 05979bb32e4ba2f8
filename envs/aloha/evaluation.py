"""Success rate of a policy over seeded ALOHA episodes, optionally with a video.

An *agent* has ``reset(obs)`` and ``__call__(obs) -> action``: the scripted policies are
agents; `ChunkAgent` makes one of a chunk policy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bbopt.checks import check_int
from bbopt.envs.aloha.env import AlohaStateEnv
from bbopt.envs.aloha.placements import EVAL_SEED
from bbopt.policies.chunking import ChunkMLP
from bbopt.rollout.chunking import TemporalEnsemble
from bbopt.rollout.video import write_video

__all__ = ["EVAL_SEED", "ChunkAgent", "evaluate_success"]


class ChunkAgent:
    """Acts with a `ChunkMLP`, querying it every step and executing the temporal ensemble of
    its chunks (`bbopt.rollout.chunking.TemporalEnsemble`, weight ``exp(-decay * age)``);
    ``decay=None`` executes the newest chunk's first action alone."""

    def __init__(self, policy: ChunkMLP, *, decay: float | None = 0.1):
        self.policy = policy
        self.ensemble = None if decay is None else TemporalEnsemble(policy.chunk, decay=decay)

    def reset(self, obs: np.ndarray) -> None:
        if self.ensemble is not None:
            self.ensemble.reset()

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        chunk = self.policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0]
        chunk = chunk.view(self.policy.chunk, self.policy.action_dim).numpy()
        return chunk[0].astype(np.float64) if self.ensemble is None else self.ensemble.add(chunk)


def evaluate_success(task: str, agent, episodes: int = 50, *, seed: int = EVAL_SEED, video: Path | None = None,
                     video_episodes: int = 1, video_size: tuple[int, int] = (640, 480),
                     progress: bool = True) -> dict:  # fmt: skip
    """Run ``agent`` on placements ``seed, seed + 1, ...``; returns ``success_rate``,
    ``mean_stage`` (the highest stage each episode reached, averaged), per-episode records and
    ``seconds``. ``video`` records the first ``video_episodes`` episodes from the top camera at
    ``video_size`` (width, height)."""
    check_int(episodes, "episodes", minimum=1)
    width, height = video_size
    env = AlohaStateEnv(task, render_mode="rgb_array" if video else None, width=width, height=height)
    records, frames = [], []
    recording, failure = bool(video), None
    began = time.perf_counter()
    bar = tqdm(range(episodes), desc=f"evaluate {task}", disable=not progress)
    for k in bar:
        obs, info = env.reset(seed=seed + k)
        agent.reset(obs)
        best, done, steps = 0, False, 0
        while not done:
            obs, _, terminated, truncated, info = env.step(
                np.clip(agent(obs), env.action_space.low, env.action_space.high)
            )
            best, steps, done = max(best, info["stage"]), steps + 1, terminated or truncated
            if recording and k < video_episodes:
                try:
                    frames.append(env.render())
                except Exception as error:  # no GL context or renderer: say so, keep the success rates
                    recording, failure = False, f"{type(error).__name__}: {error}"
        records.append({"seed": seed + k, "success": bool(info["is_success"]), "max_stage": best, "steps": steps})
        bar.set_postfix_str(f"success {sum(r['success'] for r in records)}/{k + 1}")
    env.close()
    result = {
        "task": task,
        "episodes": episodes,
        "success_rate": float(np.mean([r["success"] for r in records])),
        "mean_stage": float(np.mean([r["max_stage"] for r in records])),
        "seconds": time.perf_counter() - began,
        "records": records,
    }
    if video:
        result["video"] = (str(write_video(frames, Path(video), fps=env.metadata["render_fps"])) if failure is None
                           else f"not recorded: rendering failed ({failure}); set MUJOCO_GL=egl or osmesa")  # fmt: skip
    return result
