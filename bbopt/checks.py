"""Argument checks shared by every constructor, with one message format:
``Invalid <argument>: <value> (expected ...)`` (torch.optim's style).

Each check returns the value converted (``int``, ``float``, ``bool``), so a caller writes
``self.samples = check_int(samples, "samples", minimum=1)``. ``bool`` is refused where a number
is expected (``True`` is an ``int`` to Python, not to a user), and so are complex numbers,
NaN and infinities unless asked for.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_bool", "check_choice", "check_float", "check_int"]


def check_int(value, argument: str, *, minimum: int | None = None, maximum: int | None = None,
              even: bool = False) -> int:  # fmt: skip
    """An int (or numpy integer) within ``[minimum, maximum]``, even if asked."""
    ok = not isinstance(value, bool) and isinstance(value, int | np.integer)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (not even or value % 2 == 0)
    if not ok:
        bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
        expected = ("an even int" if even else "an int") + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"Invalid {argument}: {value!r} (expected {expected})")
    return int(value)


def check_float(value, argument: str, *, above: float | None = None, at_least: float | None = None,
                below: float | None = None, at_most: float | None = None, finite: bool = True) -> float:  # fmt: skip
    """A real number (not bool, not complex, not NaN; finite unless ``finite=False``) within the
    given open (``above``, ``below``) or closed (``at_least``, ``at_most``) bounds."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(float(value))
    if ok:
        number = float(value)
        ok = (not finite or math.isfinite(number)) and (above is None or number > above)
        ok = ok and (at_least is None or number >= at_least) and (below is None or number < below)
        ok = ok and (at_most is None or number <= at_most)
    if not ok:
        bounds = [f"> {above}"] * (above is not None) + [f">= {at_least}"] * (at_least is not None)
        bounds += [f"< {below}"] * (below is not None) + [f"<= {at_most}"] * (at_most is not None)
        expected = ("a finite float" if finite else "a float") + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"Invalid {argument}: {value!r} (expected {expected})")
    return float(value)


def check_bool(value, argument: str) -> bool:
    """``True`` or ``False`` (numpy's bool too), not a truthy stand-in."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"Invalid {argument}: {value!r} (expected True or False)")
    return bool(value)


def check_choice(value, argument: str, choices) -> str:
    """One of ``choices`` (compared as given)."""
    if value not in choices:
        raise ValueError(f"Invalid {argument}: {value!r} (expected one of {sorted(choices)})")
    return value
