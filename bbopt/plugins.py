"""Problem packages and CLI commands, found through entry points: the core never names them.

Two entry-point groups (``pyproject.toml``; any installed package may add to them):

* ``bbopt.problems``: modules that register Gymnasium ids when imported (bbopt's own:
  ``bbopt.envs``, the ``bbopt/...`` ids). `make_env` imports them all before
  ``gymnasium.make``, in every process, so a worker process resolves ``bbopt/...`` ids too.
* ``bbopt.commands``: `bbopt.cli.Command` objects, one subcommand each (``demo``, ``ioh``,
  ``binpacking``, ``aloha`` from the problem packages; the core's ``train`` and ``evaluate``
  are built in).

Gymnasium 1.x has no plugin loading of its own; without importing bbopt, a user writes the
module prefix Gymnasium does resolve: ``gymnasium.make("bbopt.envs:bbopt/BBOB-v0")``.
"""

from __future__ import annotations

import functools
from importlib import import_module
from importlib.metadata import entry_points

import gymnasium as gym

__all__ = ["COMMANDS", "PROBLEMS", "commands", "load_problems", "make_env"]

PROBLEMS = "bbopt.problems"
COMMANDS = "bbopt.commands"


@functools.cache
def load_problems() -> tuple[str, ...]:
    """Import every ``bbopt.problems`` module once per process (they register their ids);
    their names."""
    loaded = []
    for entry in sorted(entry_points(group=PROBLEMS), key=lambda e: e.name):
        import_module(entry.value)
        loaded.append(entry.value)
    return tuple(loaded)


def make_env(env_id: str, **kwargs) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` once the problem packages have registered their ids."""
    load_problems()
    return gym.make(env_id, **kwargs)


def commands() -> dict:
    """``{name: Command}`` of every ``bbopt.commands`` entry point, by name."""
    found = {}
    for entry in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        command = entry.load()
        if getattr(command, "name", None) != entry.name:
            raise RuntimeError(f"entry point {entry.name} = {entry.value}: not a bbopt.cli.Command named {entry.name}")
        found[entry.name] = command
    return found
