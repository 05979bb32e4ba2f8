"""argparse types shared by every command line (`bbopt.cli`'s and the problem packages'), and
the run configs whose fields carry them (`bbopt.rollout.runs.RunConfig`). Each raises
`argparse.ArgumentTypeError` with what was expected."""

from __future__ import annotations

import argparse
import math

__all__ = ["count", "names", "positive_int", "seconds_or_none", "step_count", "widths"]


def positive_int(text: str) -> int:
    """An int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def count(text: str) -> int:
    """An int >= 0 (0 switches the thing off)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text}")
    return value


def seconds_or_none(text: str) -> float | None:
    """A number of seconds > 0 (at most 1e6), or "none" (no limit)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1e6:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 1e6] or 'none', got {text!r}")
    return value


def step_count(text: str) -> int:
    """A whole number of env steps, '2e6' or '2000000'."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive whole number of steps, got {text}")
    return int(value)


def names(text: str) -> list[str]:
    """A comma-separated, non-empty list of names."""
    listed = [name.strip() for name in text.split(",") if name.strip()]
    if not listed:
        raise argparse.ArgumentTypeError(f"expected at least one name, got {text!r}")
    return listed


def widths(text: str) -> list[int]:
    """Comma-separated layer widths >= 1, e.g. 64,64; '' for none (a linear policy)."""
    try:
        values = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"Invalid hidden: {text!r} (expected widths like 64,64)") from None
    if any(w < 1 for w in values):
        raise argparse.ArgumentTypeError(f"Invalid hidden: {text!r} (expected widths >= 1)")
    return values
