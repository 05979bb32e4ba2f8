"""Atomic checkpoints: write a temporary file next to the target, flush it to disk, rename.

A crash mid-write leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``: tensors and plain containers only, no arbitrary pickle.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

__all__ = ["atomic_write", "load_checkpoint", "save_checkpoint"]


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, flush it to disk, rename it
    to ``path``; on any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(state: dict, path) -> Path:
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)
