"""Experiment tracking: one small interface, `Tracker`, for every long-running loop.

``log(scalars, step)`` records a mapping of named numbers at an integer step (epoch, env
steps, run index); ``close()`` flushes. `TensorBoard` writes them as TensorBoard scalars
through `torch.utils.tensorboard` (the optional ``tensorboard`` package: ``pip install
'bbopt[tracking]'``); any object with those two methods works (W&B, MLflow, a list in a test).

    with bbopt.tracking.TensorBoard("runs/tb/digits") as tracker:
        bbopt.fit(model, loss, loader, epochs=50, solver=solver, tracker=tracker)

    tensorboard --logdir runs/tb

The CLI's long-running commands take ``--tensorboard DIR`` (besides their CSV/JSON outputs).
Values that are not finite real numbers (None, NaN, a string) are skipped, not written: a
curve shows the steps where the value existed.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["TensorBoard", "Tracker", "add_tensorboard_argument", "scalars_of", "tensorboard_or_none"]


@runtime_checkable
class Tracker(Protocol):
    def log(self, scalars: Mapping[str, object], step: int) -> None: ...

    def close(self) -> None: ...


def scalars_of(record: Mapping[str, object], prefix: str = "") -> dict[str, float]:
    """The finite real numbers of ``record`` (bools excluded), keys prefixed."""
    return {
        f"{prefix}{key}": float(value)
        for key, value in record.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    }


class TensorBoard:
    """Scalars to TensorBoard event files under ``directory`` (created), each tag prefixed
    with ``prefix``; flushed after every ``log`` so a crashed run keeps its curves.
    ``purge_step``: a resumed run's first step; TensorBoard hides what an earlier session
    logged from that step on (the steps redone after the last checkpoint)."""

    def __init__(self, directory: str | Path, *, prefix: str = "", purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch's module needs the tensorboard package
            raise ImportError(
                "TensorBoard logging needs the tensorboard package: pip install 'bbopt[tracking]' "
                "(or pip install tensorboard)"
            ) from error
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"Invalid tensorboard directory: {directory} is a file")
        self.directory = directory
        self.prefix = prefix
        self._writer = SummaryWriter(log_dir=str(directory), purge_step=purge_step)

    def log(self, scalars: Mapping[str, object], step: int) -> None:
        if self._writer is None:
            raise RuntimeError("log() after close()")
        for tag, value in scalars_of(scalars, self.prefix).items():
            self._writer.add_scalar(tag, value, global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorBoard({str(self.directory)!r})"


TENSORBOARD_HELP = "also log scalars to TensorBoard event files in DIR (pip install 'bbopt[tracking]')"


def add_tensorboard_argument(parser) -> None:
    """The CLI's ``--tensorboard DIR`` (every long-running command)."""
    parser.add_argument("--tensorboard", type=Path, metavar="DIR", help=TENSORBOARD_HELP)


def tensorboard_or_none(directory: str | Path | None, **options) -> contextlib.AbstractContextManager:
    """For a CLI's ``--tensorboard DIR``: a `TensorBoard` tracker (a context manager), or a
    null context giving None without a directory; a missing package is a ValueError naming
    the option (the CLI's one-line error)."""
    if directory is None:
        return contextlib.nullcontext()
    try:
        return TensorBoard(directory, **options)
    except ImportError as error:
        raise ValueError(f"Invalid --tensorboard: {error}") from None
