"""Solvers by name, with their presets: ``bbopt.make_solver("cem", policy, optimizer, ...)``,
``bbopt.presets.get("cem", "problem")``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["PRESETS", "SOLVERS", "make_solver", "register_solver"]

SOLVERS: dict[str, type] = {}
PRESETS: dict[str, Mapping] = {}  # name -> {use: bbopt.presets.Preset}


def register_solver(name: str, *, presets: Mapping | None = None) -> Callable[[type], type]:
    """Class decorator: make a solver available as ``name`` to `make_solver`, with its presets
    per use (``{"problem": Preset(...), "batch": ..., "episodes": ...}``, `bbopt.presets`), so
    that every command and runner offers it."""

    def register(cls: type) -> type:
        if name in SOLVERS and SOLVERS[name] is not cls:
            raise ValueError(f"Invalid solver name: {name!r} is already registered to {SOLVERS[name].__name__}")
        SOLVERS[name] = cls
        PRESETS[name] = dict(presets or {})
        return cls

    return register


def make_solver(name: str, policy, optimizer, **options):
    """Build the solver registered as ``name`` (case-insensitive) with keyword ``options``."""
    key = name.lower() if isinstance(name, str) else name
    if key not in SOLVERS:
        raise ValueError(f"Invalid solver name: {name!r} (expected one of {sorted(SOLVERS)})")
    return SOLVERS[key](policy, optimizer, **options)
