"""A benchmark run's state between its evaluations, so that a run stopped by Ctrl-C, a kill or the
end of a session goes on from its last evaluation when the same command runs again (``--state DIR``).

Each run has a directory ``DIR/<name>/`` (``<env>-<method>-seed<seed>`` for a locomotion run),
held by one process at a time (`bbopt.rollout.lock.RunLock`), with ``state.pt`` (a verified,
atomic checkpoint, the previous one kept beside it: `bbopt.rollout.checkpoint`) while it runs and
``row.json`` once it has ended. A state saved by a run of other settings (budget, evaluation
interval, population, milestones) is refused, never continued. A resumed run records the env
steps it resumed at (``resumed_at``) and, where the state keeps them, the code of each process
that ran a part of it (``commits``).
"""

from __future__ import annotations

import json
from pathlib import Path

from bbopt.rollout.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    previous_path,
    remove_stale_temporaries,
    save_checkpoint,
    write_json,
)
from bbopt.rollout.lock import RunLock


class RunState:
    """Context manager over one run's state directory ``root / name``; ``run`` is the run's identity
    (its settings, JSON-like)."""

    def __init__(self, root, name: str, run: dict, commit: str) -> None:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"a run's state directory is one folder name, not {name!r}")
        self.run, self.commit = dict(run), commit
        self.directory = Path(root) / name
        self.resumed_at: list[int] = []
        self.commits: list[str] | None = [commit]
        self._lock = RunLock(self.directory)

    @property
    def path(self) -> Path:
        return self.directory / "state.pt"

    @property
    def row_path(self) -> Path:
        return self.directory / "row.json"

    def __enter__(self) -> RunState:
        self._lock.__enter__()
        remove_stale_temporaries(self.directory)
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def finished_row(self) -> dict | None:
        """The row of this run if it has ended, else None."""
        if not self.row_path.is_file():
            return None
        try:
            row = json.loads(self.row_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{self.row_path}: not a finished run's row ({type(error).__name__}: {error}); move "
                             "it away to run this run again") from None  # fmt: skip
        self._check(row.get("state_run") if isinstance(row, dict) else None, self.row_path)
        return {key: value for key, value in row.items() if key != "state_run"}

    def holds_state(self) -> bool:
        """Whether a stopped run left its state here (the latest or the previous checkpoint)."""
        return checkpoint_exists(self.path)

    def load(self) -> dict | None:
        """The state this run saved at its last evaluation (None if it saved none): what the caller
        saved with `save`, and ``env_steps``."""
        if not self.holds_state():
            return None
        state = load_checkpoint(self.path, fallback=True)
        self._check(state.get("run"), self.path)
        self.resumed_at = [*state["resumed_at"], int(state["env_steps"])]
        self.commits = [*state["commits"], self.commit]
        return state["parts"] | {"env_steps": int(state["env_steps"])}

    def resumed_from_own_state(self, env_steps: int) -> None:
        """Note that the run goes on from a state it kept itself in `path` (a fine-tuning's
        checkpoint) at ``env_steps``; the code of its earlier parts is not known."""
        self.resumed_at.append(int(env_steps))
        self.commits = None

    def save(self, env_steps: int, **parts) -> None:
        """Keep ``parts`` (tensors and plain containers) as this run's state at ``env_steps``."""
        save_checkpoint({"run": self.run, "env_steps": int(env_steps), "resumed_at": self.resumed_at,
                         "commits": self.commits, "parts": parts}, self.path)  # fmt: skip

    def finish(self, row: dict) -> dict:
        """Keep the ended run's ``row`` (with ``resumed_at`` and ``commits`` if it was resumed); the
        state is then removed. Returns the row as kept."""
        if self.resumed_at:
            row = row | {"resumed_at": self.resumed_at} | ({} if self.commits is None else {"commits": self.commits})
        write_json(self.row_path, row | {"state_run": self.run})
        for path in (self.path, previous_path(self.path)):
            path.unlink(missing_ok=True)
        return row

    def _check(self, saved, path: Path) -> None:
        if saved != self.run:
            raise ValueError(f"{path} was saved by another run ({saved}), not this one ({self.run}): give this run "
                             "another --state directory")  # fmt: skip
