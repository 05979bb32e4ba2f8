"""Honest layers: policies use nothing of bbopt but its argument checks; the core (``bbopt/``)
never imports the problem packages (``bbopt.envs``), finding them through entry points
(`bbopt.plugins`); Gymnasium makes every bbopt id in a process that never imports bbopt."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from bbopt import cli, plugins

ROOT = Path(__file__).resolve().parent.parent
IDS = ["bbopt/BBOB-v0", "bbopt/PBO-v0", "bbopt/Graph-v0", "bbopt/BinPacking-v0", "bbopt/BinPackingOnline-v0",
       "bbopt/AlohaTransferCube-v0", "bbopt/AlohaInsertion-v0"]  # fmt: skip


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_the_core_never_imports_the_problem_packages():
    offending = [f"{path.relative_to(ROOT)}:{line} {name}" for path in sorted((ROOT / "bbopt").rglob("*.py"))
                 for line, name in imported_modules(path)
                 if name == "bbopt.envs" or name.startswith("bbopt.envs.")]  # fmt: skip
    assert offending == []


def test_policies_use_nothing_of_bbopt_but_its_checks_and_seeding():
    allowed = ("bbopt.checks.", "bbopt.seeding.", "bbopt.policies.")  # the two leaves: numpy and each other only
    leaves = [name for leaf in ("checks", "seeding") for _, name in imported_modules(ROOT / "bbopt" / f"{leaf}.py")]
    assert [name for name in leaves if name.startswith("bbopt") and not name.startswith("bbopt.checks.")] == []
    offending = [f"{path.relative_to(ROOT)}:{line} {name}" for path in sorted((ROOT / "policies").rglob("*.py"))
                 for line, name in imported_modules(path)
                 if name.startswith("bbopt") and not name.startswith(allowed)]  # fmt: skip
    assert offending == []


def test_importing_the_core_loads_no_problem_package():
    code = ("import sys, bbopt, bbopt.cli, bbopt.rollout, bbopt.rollout.runs, bbopt.training, bbopt.plugins\n"
            "print(sorted(m for m in sys.modules if m.startswith('bbopt.envs')))")  # fmt: skip
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert completed.stdout.strip() == "[]"


def test_gymnasium_makes_every_bbopt_id_without_an_import_of_bbopt(tmp_path):
    code = (
        "import sys, gymnasium\n"
        f"for env_id in {IDS!r}:\n"
        "    before = 'bbopt' in sys.modules\n"
        "    env = gymnasium.make('bbopt.envs:' + env_id)  # Gymnasium's module prefix: it imports bbopt.envs\n"
        "    env.reset(seed=0)\n"
        "    print(env_id, before, type(env.unwrapped).__name__)\n"
        "    env.close()\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                               env={"PATH": "/usr/bin:/bin", "MUJOCO_GL": "egl"}, timeout=300)  # fmt: skip
    lines = completed.stdout.split("\n")[: len(IDS)]
    assert [line.split()[0] for line in lines] == IDS
    assert lines[0].split()[1] == "False"  # the first make imported bbopt, nothing before it


def test_make_env_loads_the_problem_packages_in_a_fresh_process():
    code = ("from bbopt.plugins import make_env\n"
            "print(type(make_env('bbopt/BinPacking-v0').unwrapped).__name__)")  # fmt: skip
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert completed.stdout.strip() == "BinPackingEnv"


def test_the_command_line_is_the_core_commands_and_the_contributed_ones():
    assert list(cli.all_commands()) == ["train", "evaluate", "aloha", "binpacking", "demo", "ioh"]


@pytest.mark.parametrize(
    "entry, message",
    [
        (EntryPoint("train", "bbopt.cli:TRAIN", plugins.COMMANDS), "clash with the core's commands"),
        (EntryPoint("other", "bbopt.cli:TRAIN", plugins.COMMANDS), "not a bbopt.cli.Command named other"),
    ],
)
def test_a_bad_command_entry_point_is_refused(entry, message, monkeypatch):
    monkeypatch.setattr(plugins, "entry_points", lambda group: [entry] if group == plugins.COMMANDS else [])
    with pytest.raises(RuntimeError, match=message):
        cli.all_commands()


def test_without_problem_packages_an_unknown_env_is_still_refused(monkeypatch):
    from bbopt.rollout.runs import RunConfig

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    plugins.load_problems.cache_clear()
    try:
        assert plugins.load_problems() == ()
        with pytest.raises(ValueError, match="Invalid env: 'NoSuchEnv-v0'"):
            RunConfig(env="NoSuchEnv-v0")
    finally:
        plugins.load_problems.cache_clear()
