"""minimize(), the policies, the `bbopt demo` command and the installed package layout."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from torch import nn

import bbopt
from bbopt.envs import rastrigin, rosenbrock, sphere
from bbopt.policies import MLP, FixedInput, LearnedVector


def test_minimize_returns_the_best_candidate_and_one_stats_dict_per_step():
    policy = LearnedVector(5, init=torch.full((5,), 2.0))
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=0.1), sigma=0.3, samples=8, seed=0)
    result = bbopt.minimize(sphere, solver, steps=50, progress=False)
    assert len(result.history) == 50 and result.evaluations == 400
    assert result.loss == pytest.approx(float(sphere(result.x)), rel=1e-6)
    assert result.loss == min(h["loss_min"] for h in result.history)
    assert result.loss < 20.0 / 4  # from sphere(x0) = 20: the run made progress


def test_minimize_stops_when_the_callback_says_so_and_accepts_numpy_losses():
    policy = LearnedVector(3)
    solver = bbopt.ES(policy, torch.optim.SGD(policy.parameters(), lr=0.1), samples=4, seed=0)
    result = bbopt.minimize(lambda x: sphere(x).numpy(), solver, steps=100, callback=lambda step, s: step == 4,
                            progress=False)  # fmt: skip
    assert len(result.history) == 5


def test_test_functions_have_their_minimum_at_the_documented_point():
    assert float(sphere(torch.zeros(4))) == 0.0
    assert float(rosenbrock(torch.ones(4))) == 0.0
    assert float(rastrigin(torch.zeros(4))) == pytest.approx(0.0, abs=1e-6)
    assert float(rastrigin(torch.full((4,), 0.5))) > 0
    assert sphere(torch.ones(2, 3, 4)).shape == (2, 3)


def test_mlp_initialization_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = MLP(3, 2, seed=5), MLP(3, 2, seed=5), MLP(3, 2, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    bound = 1 / 3**0.5
    assert float(a.layers[0].weight.detach().abs().max()) <= bound


def test_mlp_output_scale_and_activation():
    policy = MLP(3, 2, hidden=(), output_activation=nn.Tanh, output_scale=[2.0, 0.5])
    with torch.no_grad():
        out = policy(torch.randn(100, 3, generator=torch.Generator().manual_seed(0)) * 50)
    assert out.shape == (100, 2)
    assert float(out[:, 0].abs().max()) <= 2.0 and float(out[:, 1].abs().max()) <= 0.5
    assert float(out[:, 0].abs().max()) > 1.0


def test_fixed_input_turns_a_network_into_a_policy_without_input():
    network = MLP(4, 6, hidden=(8,))
    latent = torch.ones(4)
    policy = FixedInput(network, latent)
    torch.testing.assert_close(policy(), network(latent[None])[0])
    solver = bbopt.CEM(policy, torch.optim.Adam(policy.parameters(), lr=0.01), samples=8, seed=0)
    assert solver.ask().shape == (8, 6)


def test_demo_command_writes_results_and_a_plot(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "bbopt.cli", "demo", "--out", str(tmp_path), "--dimension", "4", "--budget", "320",
         "--no-progress"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert "rosenbrock" in completed.stdout and "OVLR" in completed.stdout
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert {(r["function"], r["solver"]) for r in results} == {
        (f, s) for f in ("sphere", "rosenbrock", "rastrigin") for s in ("ovlr", "cem", "es")
    }
    assert all(r["evaluations"] == 320 for r in results)
    assert (tmp_path / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "BBOB slice" in completed.stdout and (tmp_path / "bbob" / "ecdf.png").exists()
    assert (tmp_path / "bbob" / "ioh" / "ovlr" / "IOHprofiler_f15_RastriginRotated.json").exists()
    assert "bin packing: 5 triplet-60 instances" in completed.stdout
    packing = json.loads((tmp_path / "binpacking" / "results.json").read_text())
    assert {r["solver"] for r in packing["summary"]} == {"ovlr", "cem", "es", "ffd", "bfd"}
    assert (tmp_path / "binpacking" / "success.png").exists()


def test_demo_requires_an_output_directory():
    completed = subprocess.run([sys.executable, "-m", "bbopt.cli", "demo"], capture_output=True, text=True)
    assert completed.returncode == 2 and "--out" in completed.stderr


def test_envs_and_policies_install_under_bbopt_only(tmp_path):
    """From a directory outside the checkout, the installed package maps envs/ and policies/
    to bbopt.envs and bbopt.policies and adds no top-level `envs` or `policies` module."""
    import importlib.metadata

    assert importlib.metadata.distribution("bbopt").read_text("top_level.txt").split() == ["bbopt"]
    probe = (
        "import importlib.util as u, bbopt.envs, bbopt.policies;"
        "print(u.find_spec('envs'), u.find_spec('policies'), bbopt.envs.__file__, bbopt.policies.__file__)"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path,
                               env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    top_envs, top_policies, envs_file, policies_file = completed.stdout.split()
    assert (top_envs, top_policies) == ("None", "None")
    root = Path(bbopt.__file__).resolve().parent.parent
    assert Path(envs_file).resolve() == root / "envs" / "__init__.py"
    assert Path(policies_file).resolve() == root / "policies" / "__init__.py"


def test_the_packaged_list_is_every_package_and_the_version_is_written_once():
    """pyproject's explicit package list (envs/ and policies/ map under bbopt) holds every folder
    with an __init__.py (a missing one installs a wheel without it: bbopt.noise once was); the
    version comes from bbopt.__version__ alone."""
    root = Path(bbopt.__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    mapped = {"bbopt": "bbopt", "envs": "bbopt.envs", "policies": "bbopt.policies"}
    folders = set()
    for top, package in mapped.items():
        for init in (root / top).rglob("__init__.py"):
            folders.add(".".join([package, *init.parent.relative_to(root / top).parts]))
    assert sorted(config["tool"]["setuptools"]["packages"]) == sorted(folders)
    assert "version" not in config["project"] and config["project"]["dynamic"] == ["version"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bbopt.__version__"}
    assert importlib.metadata.version("bbopt") == bbopt.__version__


@pytest.mark.parametrize(
    "script, arguments, expected",
    [
        ("quickstart.py", ["--steps", "20"], "policy output"),
        ("robust_regression.py", ["--epochs", "2"], "backprop, truncated loss: test MSE"),
        ("zero_one_digits.py", ["--epochs", "1", "--samples", "8"], "backprop on cross-entropy"),
    ],
)
def test_examples_run(script, arguments, expected, tmp_path):
    path = Path(__file__).resolve().parent.parent / "examples" / script
    completed = subprocess.run([sys.executable, str(path), *arguments], capture_output=True, text=True, check=True,
                               cwd=tmp_path)  # fmt: skip
    assert expected in completed.stdout


def test_ddp_example_runs_on_two_ranks_and_refuses_a_plain_launch(tmp_path):
    path = Path(__file__).resolve().parent.parent / "examples" / "ddp_zero_one.py"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    completed = subprocess.run([*launch, str(path), "--epochs", "1", "--samples", "8"], capture_output=True,
                               text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]  # torchrun's and the ranks' own errors
    assert "2 rank(s): test accuracy" in completed.stdout
    plain = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 2 and "launch with torchrun" in plain.stderr
