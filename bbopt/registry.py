"""Solvers by name, with their presets: ``bbopt.make_solver("cem", policy, optimizer, ...)``,
``bbopt.presets.get("cem", "problem")``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

__all__ = ["ALIASES", "PRESETS", "SOLVERS", "canonical", "make_solver", "register_solver"]

SOLVERS: dict[str, type] = {}
PRESETS: dict[str, Mapping] = {}  # name -> {use: bbopt.presets.Preset}
ALIASES: dict[str, str] = {}  # a solver's old name -> its name, kept one release with a FutureWarning


def register_solver(name: str, *, presets: Mapping | None = None, aliases=()) -> Callable[[type], type]:
    """Class decorator: make a solver available as ``name`` to `make_solver`, with its presets
    per use (``{"problem": Preset(...), "batch": ..., "episodes": ...}``, `bbopt.presets`), so
    that every command and runner offers it. ``aliases``: its old names (accepted, warned,
    never listed)."""

    def register(cls: type) -> type:
        if name in SOLVERS and SOLVERS[name] is not cls:
            raise ValueError(f"Invalid solver name: {name!r} is already registered to {SOLVERS[name].__name__}")
        SOLVERS[name] = cls
        PRESETS[name] = dict(presets or {})
        ALIASES.update(dict.fromkeys(aliases, name))
        return cls

    return register


def canonical(name):
    """``name`` lower-cased, an old name replaced by the solver's name (with a FutureWarning);
    anything else as it is (the caller refuses unknown names)."""
    if not isinstance(name, str):
        return name
    key = name.lower()
    if key in ALIASES:
        warnings.warn(f"solver name {name!r} is deprecated: use {ALIASES[key]!r} (the old name goes in the next "
                      "release)", FutureWarning, stacklevel=3)  # fmt: skip
        return ALIASES[key]
    return key


def make_solver(name: str, policy, optimizer, **options):
    """Build the solver registered as ``name`` (case-insensitive) with keyword ``options``."""
    key = canonical(name)
    if key not in SOLVERS:
        raise ValueError(f"Invalid solver name: {name!r} (expected one of {sorted(SOLVERS)})")
    return SOLVERS[key](policy, optimizer, **options)
