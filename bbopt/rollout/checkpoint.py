"""Verified, atomic checkpoints, with the previous good one kept beside the latest.

A checkpoint file is one header line and a ``torch.save`` payload::

    BBOPT-CHECKPOINT 1 sha256=<64 hex digits> size=<payload bytes>\\n<payload>

`save_checkpoint` writes it to a temporary file next to the target, flushes it to disk, moves
the target to ``<name>.prev<suffix>`` and renames the new file to the target: a crash at any
moment leaves at least one complete checkpoint (between the two renames only the previous one,
which `load_checkpoint(fallback=True)` takes). `load_checkpoint` checks the header, the size
and the SHA-256 of the payload before unpickling anything, and unpickles with
``torch.load(weights_only=True)`` (tensors and plain containers, no arbitrary code). A file
that fails (bit flip, truncation, an empty or foreign file) raises `CheckpointError` naming the
file and what is wrong; with ``fallback=True`` the previous checkpoint is loaded instead, with
a warning. Files written before this format (a bare ``torch.save``) still load, unverified.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

__all__ = [
    "CheckpointError",
    "atomic_write",
    "checkpoint_exists",
    "load_checkpoint",
    "previous_path",
    "remove_stale_temporaries",
    "save_checkpoint",
    "write_json",
    "write_text",
]

MAGIC = b"BBOPT-CHECKPOINT 1 "
_HEADER_LIMIT = 128  # bytes: the header line is ~100


class CheckpointError(ValueError):
    """A checkpoint or policy file that cannot be trusted: corrupt, truncated, or not ours."""


def atomic_write(path, write: Callable[[BinaryIO], None], *, before_replace: Callable[[], None] | None = None) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, flush it to disk, call
    ``before_replace()`` and rename the file to ``path``; on any error the temporary file is
    removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)
    return path


def write_json(path, value, *, indent: int | None = 1) -> Path:
    """``value`` as JSON at ``path``, written whole or not at all (`atomic_write`: Ctrl-C, a kill
    or a full disk leaves the previous file as it was). Serialized before anything is written."""
    return write_text(path, json.dumps(value, indent=indent))


def write_text(path, text: str) -> Path:
    """``text`` (UTF-8) at ``path``, written whole or not at all (`atomic_write`)."""
    data = text.encode()
    return atomic_write(path, lambda handle: handle.write(data))


def previous_path(path) -> Path:
    """Where the checkpoint before ``path``'s latest is kept: ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict, path, *, keep_previous: bool = True) -> Path:
    """Write ``state`` to ``path`` (verified format, atomic); the file it replaces becomes
    `previous_path` (``keep_previous``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = MAGIC + f"sha256={hashlib.sha256(payload).hexdigest()} size={len(payload)}\n".encode()

    def write(handle: BinaryIO) -> None:
        handle.write(header)
        handle.write(payload)

    def keep() -> None:  # once the new file is safely on disk; a corrupt latest is not kept
        if keep_previous and _is_verified(path):
            os.replace(path, previous_path(path))

    path = Path(path)
    return atomic_write(path, write, before_replace=keep)


def checkpoint_exists(path) -> bool:
    """Whether ``path`` or its `previous_path` is there: what `load_checkpoint(fallback=True)` can try."""
    return Path(path).is_file() or previous_path(path).is_file()


def load_checkpoint(path, *, fallback: bool = False) -> dict:
    """The state saved at ``path``, verified; with ``fallback``, the previous checkpoint when
    the latest is missing or corrupt (a warning says which was loaded and why)."""
    path = Path(path)
    try:
        return _load(path)
    except (CheckpointError, FileNotFoundError) as error:
        previous = previous_path(path)
        if not fallback or not previous.is_file():
            raise
        state = _load(previous)
        warnings.warn(f"{error}; loaded the previous checkpoint {previous} instead", stacklevel=2)
        return state


def remove_stale_temporaries(directory) -> list[Path]:
    """Remove the temporary files `atomic_write` leaves when a process dies mid-write (call it
    only under the run directory's lock: a live writer's file looks the same)."""
    removed = []
    for candidate in Path(directory).glob(".*.tmp"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


# ------------------------------------------------------------------------------ internals
def _load(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}")
    data = path.read_bytes()
    payload = _verified_payload(path, data) if data.startswith(MAGIC) else _legacy_payload(path, data)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds Python objects beyond tensors and plain containers (refused: loaded with "
            "weights_only=True, which runs no code from the file)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint ({first})") from error


def _verified_payload(path: Path, data: bytes) -> bytes:
    end = data.find(b"\n", 0, _HEADER_LIMIT)
    try:
        fields = dict(item.split("=", 1) for item in data[len(MAGIC) : end].decode("ascii").split())
        digest, size = fields["sha256"], int(fields["size"])
    except (ValueError, KeyError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: corrupt header (not a bbopt checkpoint, or damaged)") from None
    payload = data[end + 1 :]
    if len(payload) != size:
        raise CheckpointError(f"{path}: truncated or padded ({len(payload):,} payload bytes, expected {size:,})")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path}: corrupt (SHA-256 mismatch: the file changed after it was written)")
    return payload


def _legacy_payload(path: Path, data: bytes) -> bytes:
    if not data:
        raise CheckpointError(f"{path}: empty file")
    if not data.startswith(b"PK\x03\x04"):  # torch.save's zip format
        raise CheckpointError(f"{path}: not a checkpoint (neither bbopt's verified format nor torch.save's)")
    return data  # a bare torch.save from before the verified format: loaded unverified


def _is_verified(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    try:
        _verified_payload(path, data)
    except CheckpointError:
        return False
    return data.startswith(MAGIC)


def _sync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
