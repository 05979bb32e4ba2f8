"""ALOHA policy files: a `ChunkMLP`'s constructor arguments, weights and statistics, with a
``meta`` record (task, how it was trained), in one verified checkpoint file
(`bbopt.rollout.checkpoint`: atomic, SHA-256 checked before unpickling)."""

from __future__ import annotations

import pickle
from pathlib import Path

from bbopt.policies.chunking import ChunkMLP
from bbopt.rollout.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_chunk_policy", "save_chunk_policy"]


def save_chunk_policy(policy: ChunkMLP, path, **meta) -> Path:
    """Write the policy's constructor arguments, weights and statistics, and ``meta`` (JSON-able
    values, e.g. the task and how it was trained) to ``path``, atomically."""
    return save_checkpoint(
        {"config": policy.config(), "state_dict": policy.state_dict(), "meta": meta}, path, keep_previous=False
    )


def load_chunk_policy(path) -> tuple[ChunkMLP, dict]:
    """The policy saved by `save_chunk_policy` (in eval mode) and its ``meta``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No policy file at {path}")
    try:
        saved = load_checkpoint(path)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"Invalid policy file {path}: {error}") from error
    if not isinstance(saved, dict) or not {"config", "state_dict", "meta"} <= set(saved):
        raise ValueError(f"Invalid policy file {path}: expected config, state_dict and meta")
    config = dict(saved["config"])
    policy = ChunkMLP(config.pop("obs_dim"), config.pop("action_dim"), config.pop("chunk"), **config)
    policy.load_state_dict(saved["state_dict"])
    return policy.eval(), saved["meta"]
