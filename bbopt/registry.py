"""Solvers by name: ``bbopt.make_solver("cem", policy, optimizer, ...)``."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SOLVERS", "make_solver", "register_solver"]

SOLVERS: dict[str, type] = {}


def register_solver(name: str) -> Callable[[type], type]:
    """Class decorator: make a `bbopt.Solver` subclass available to `make_solver` as ``name``."""

    def register(cls: type) -> type:
        if name in SOLVERS and SOLVERS[name] is not cls:
            raise ValueError(f"Invalid solver name: {name!r} is already registered to {SOLVERS[name].__name__}")
        SOLVERS[name] = cls
        return cls

    return register


def make_solver(name: str, policy, optimizer, **options):
    """Build the solver registered as ``name`` (case-insensitive) with keyword ``options``."""
    key = name.lower() if isinstance(name, str) else name
    if key not in SOLVERS:
        raise ValueError(f"Invalid solver name: {name!r} (expected one of {sorted(SOLVERS)})")
    return SOLVERS[key](policy, optimizer, **options)
