"""Presets and the registry: every solver builds from each preset it declares, and a solver
added in one file appears in every command's choices."""

import importlib.util
import subprocess
import sys
import textwrap

import pytest
import torch

import bbopt
from bbopt.policies import MLP, LearnedVector
from bbopt.registry import PRESETS, SOLVERS


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_registered_solver_builds_from_each_of_its_presets(name):
    presets = PRESETS[name]
    assert presets, f"{name} declares no preset"
    for use, preset in presets.items():
        if use == "problem":
            solver = preset.build(name, LearnedVector(5, init=torch.ones(5)), dimension=5, seed=0)
            candidates = solver.ask()
            solver.tell((candidates**2).sum(1))
        elif use == "batch":
            solver = preset.build(name, MLP(3, 2, hidden=(8,), seed=0), seed=0)
            candidates = solver.ask(torch.randn(4, 3))
            solver.tell((candidates**2).sum(-1))
        else:
            solver = preset.build(name, MLP(3, 2, hidden=(8,), seed=0), episodes=8, seed=0)
            solver.ask(torch.randn(8, 3))
            solver.tell(torch.arange(8.0))
        assert solver.steps == 1


def test_replace_merges_options_and_bad_names_are_refused():
    preset = bbopt.presets.get("ovlr", "problem")
    changed = preset.replace(sigma=3.0, options={"baseline": False})
    assert changed.sigma == 3.0 and changed.options == {**preset.options, "baseline": False}
    assert preset.sigma != 3.0  # presets are immutable
    with pytest.raises(ValueError, match=r"Invalid use: 'fixed' \(expected one of"):
        bbopt.presets.get("ovlr", "fixed")
    with pytest.raises(ValueError, match=r"Invalid use: solver 'param_es' has no 'problem' preset"):
        bbopt.presets.get("param_es", "problem")
    with pytest.raises(ValueError, match=r"Invalid solver name: 'pso' \(expected one of \['cem', 'es', 'ovlr'\]\)"):
        bbopt.presets.get("pso", "problem")


NEW_SOLVER = '''
"""A new solver in one file: random search around the mean (weights all zero)."""
import torch

from bbopt.presets import Preset
from bbopt.registry import register_solver
from bbopt.solver import Solver

PRESETS = {"problem": Preset(optimizer=torch.optim.SGD, lr=1.0, sigma=1.0),
           "episodes": Preset(lr=0.01, sigma=0.3)}


@register_solver("blind", presets=PRESETS)
class Blind(Solver):
    def weights(self, losses, counts):
        return torch.zeros_like(losses)
'''


@pytest.fixture
def blind_solver(tmp_path):
    path = tmp_path / "blind.py"
    path.write_text(textwrap.dedent(NEW_SOLVER))
    spec = importlib.util.spec_from_file_location("blind", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield path
    SOLVERS.pop("blind", None)
    PRESETS.pop("blind", None)


def test_a_solver_added_in_one_file_appears_in_every_command(blind_solver):
    from bbopt.cli import build_parser
    from bbopt.envs.binpacking.runs import known_methods
    from bbopt.rollout.runs import RunConfig

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    train_choices = next(a.choices for a in commands["train"]._actions if a.dest == "solver")
    assert "blind" in train_choices
    ioh_default = next(a.default for a in commands["ioh"]._actions if a.dest == "solvers")
    assert "blind" in ioh_default.split(",")
    packing_default = next(a.default for a in commands["binpacking"]._actions if a.dest == "solvers")
    assert "blind" in packing_default.split(",")
    finetune = commands["aloha"]._subparsers._group_actions[0].choices["finetune"]
    assert "blind" in next(a.choices for a in finetune._actions if a.dest == "method")
    assert "blind" in known_methods()
    assert RunConfig(solver="blind", credit="episode").lr == 0.01  # the preset's step (to_go: the recipe's)
    from bbopt.envs.demo import solvers

    assert "blind" in solvers()


def test_a_new_solver_runs_through_the_cli(blind_solver, tmp_path):
    """End to end: the module is imported first, then `bbopt ioh --solvers blind` runs it."""
    arguments = ["ioh", "--functions", "1", "--instances", "1", "--dimensions", "2", "--budget-per-dim", "10",
                 "--solvers", "blind", "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    code = f"import runpy, sys; runpy.run_path({str(blind_solver)!r}); from bbopt.cli import main; "
    code += f"sys.exit(main({arguments!r}))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "blind" in completed.stdout


def test_the_old_solver_name_pes_still_works_for_one_release_and_is_never_listed():
    from bbopt import cli
    from bbopt.baselines import ParameterES
    from bbopt.rollout.runs import RunConfig

    assert "pes" not in bbopt.presets.names() and "param_es" in bbopt.presets.names("episodes")
    policy = torch.nn.Linear(2, 2)
    with pytest.warns(FutureWarning, match="solver name 'pes' is deprecated: use 'param_es'"):
        solver = bbopt.make_solver("pes", policy, torch.optim.SGD(policy.parameters(), lr=0.1), episodes=4)
    assert isinstance(solver, ParameterES)
    with pytest.warns(FutureWarning, match="'PES' is deprecated"):
        assert bbopt.presets.get("PES", "episodes") is bbopt.presets.get("param_es", "episodes")
    with pytest.warns(FutureWarning, match="'pes' is deprecated"):
        assert RunConfig(env="Pendulum-v1", solver="pes").solver == "param_es"  # an old run's config.json
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    with pytest.warns(FutureWarning, match="'pes' is deprecated"):
        assert train.parse_args(["--solver", "pes", "--out", "x"]).solver == "param_es"
