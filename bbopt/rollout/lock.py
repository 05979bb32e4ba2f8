"""One writer per run directory: an advisory lock on ``<dir>/.lock``.

`RunLock` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the lock file and writes its pid into it.
The kernel drops the lock when the process ends, however it ends (a SIGKILL leaves no stale
lock to clean up). A second process that opens the same directory gets `RunLocked` naming the
holder's pid; within one process the lock is re-entrant (the CLI and `train_run` both take it).
POSIX only (``fcntl``); where it is missing, the lock is a no-op with a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["RunLock", "RunLocked"]

_HELD: dict[Path, list] = {}  # directory -> [open lock file, depth], this process


class RunLocked(FileExistsError):
    """Another process holds the run directory."""


class RunLock:
    """Context manager: hold ``directory``'s lock (creating the directory) while inside."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def __enter__(self) -> RunLock:
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"{self.directory} is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.directory.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        if fcntl is None:  # pragma: no cover
            warnings.warn("no fcntl on this platform: run directories are not locked", stacklevel=2)
            _HELD[key] = [None, 1]
            return self
        handle = open(key / ".lock", "a+")  # held open for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLocked(
                f"{self.directory} is in use by another bbopt process (pid {holder}); wait for it to finish, "
                "or choose another directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD[key] = [handle, 1]
        return self

    def __exit__(self, *exc) -> None:
        key = self.directory.resolve()
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            if entry[0] is not None:
                entry[0].close()  # closing the descriptor releases the flock
