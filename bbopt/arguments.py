"""argparse types shared by every command line (`bbopt.cli`'s and the problem packages'), and
the run configs whose fields carry them (`bbopt.rollout.runs.RunConfig`). Each raises
`argparse.ArgumentTypeError` with what was expected. Also the renamed options' old spellings,
kept one release with a FutureWarning (`add_deprecated_spelling`, `renamed_keywords`)."""

from __future__ import annotations

import argparse
import math
import warnings

__all__ = [
    "add_deprecated_spelling",
    "count",
    "names",
    "positive_int",
    "renamed_keywords",
    "seconds_or_none",
    "step_count",
    "widths",
]


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
    return _steps(text, minimum=1)


def steps_or_zero(text: str) -> int:
    """A whole number of env steps or 0 (an option that counts steps, written out as off)."""
    return _steps(text, minimum=0)


def _steps(text: str, *, minimum: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or value != int(value):
        kind = "positive" if minimum else "non-negative"
        raise argparse.ArgumentTypeError(f"expected a {kind} whole number of steps, got {text}")
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


class _DeprecatedSpelling(argparse.Action):
    """Stores into the new option's dest, with a FutureWarning naming the new spelling."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated: use {self.new} (the old spelling goes in the next release)",
                      FutureWarning, stacklevel=2)  # fmt: skip
        setattr(namespace, self.dest, values)


def add_deprecated_spelling(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """``old`` (e.g. ``--evaluator``) as a hidden spelling of the existing option ``new`` for one
    release: same destination, type and choices, and a FutureWarning when used."""
    target = next(action for action in parser._actions if new in action.option_strings)
    parser.add_argument(old, dest=target.dest, type=target.type, choices=target.choices, help=argparse.SUPPRESS,
                        action=_DeprecatedSpelling, new=new)  # fmt: skip


def renamed_keywords(given: dict, renames: dict[str, str], where: str) -> dict:
    """``given`` with each deprecated key of ``renames`` (old -> new) moved to its new name, a
    FutureWarning for each; both spellings at once are refused."""
    given = dict(given)
    for old, new in renames.items():
        if old in given:
            if new in given:
                raise ValueError(f"Invalid {where}: both {old!r} and its new name {new!r} are given")
            warnings.warn(f"{where}: {old!r} is deprecated: use {new!r} (the old name goes in the next release)",
                          FutureWarning, stacklevel=3)  # fmt: skip
            given[new] = given.pop(old)
    return given
