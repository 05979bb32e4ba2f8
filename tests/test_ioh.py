"""IOH problems: registration and check_env, batch evaluation, decoding, budgets, logs, Experiment."""

import json
import subprocess
import sys
import warnings

import gymnasium
import ioh
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import bbopt
from bbopt.envs.ioh import (
    TARGETS,
    BudgetExhausted,
    IOHAlgorithm,
    Objective,
    attach_analyzer,
    ecdf,
    final_score,
    get_problem,
    preset_for,
    solve,
)
from bbopt.envs.ioh.suite import parse_ids

IOH_IDS = sorted(id for id, spec in gymnasium.registry.items() if "envs.ioh" in str(spec.entry_point))


def test_registered_ids():
    assert {"bbopt/BBOB-v0", "bbopt/PBO-v0", "bbopt/Graph-v0"} <= set(IOH_IDS)


@pytest.mark.parametrize("env_id", IOH_IDS)
def test_every_registered_env_passes_check_env_and_is_deterministic(env_id):
    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gymnasium's advice to normalize the BBOB box to [-1, 1]
        check_env(env.unwrapped)
    rewards = []
    for _ in range(2):
        env.reset(seed=3)
        action = env.action_space.sample()
        rewards.append(env.step(action)[1])
        env.action_space.seed(0)
    env.action_space.seed(0)
    env.reset(seed=3)
    first = env.step(env.action_space.sample())
    env.action_space.seed(0)
    env.reset(seed=3)
    second = env.step(env.action_space.sample())
    assert first[1] == second[1] and first[4] == second[4]
    assert first[2] is True and first[4]["evaluations"] == 1


def test_bbob_env_reward_is_minus_precision_and_counts_evaluations():
    env = gymnasium.make("bbopt/BBOB-v0", function=1, instance=1, dimension=3)
    env.reset(seed=0)
    problem = env.unwrapped.problem
    _, reward, terminated, _, info = env.step(np.asarray(problem.optimum.x, dtype=np.float32))
    assert terminated and reward == pytest.approx(0.0, abs=1e-5) and info["evaluations"] == 1
    env.reset()  # continues the run
    env.step(np.zeros(3, dtype=np.float32))
    assert problem.state.evaluations == 2


def test_batch_evaluation_equals_row_by_row():
    for suite, function, dimension in (("bbob", 7, 5), ("pbo", 18, 16)):
        candidates = torch.randn(32, dimension, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
        batch = Objective(get_problem(suite, function, 1, dimension))(candidates)
        single = Objective(get_problem(suite, function, 1, dimension))
        rows = torch.cat([single(row[None]) for row in candidates])
        torch.testing.assert_close(batch, rows)


def test_box_decoding_projects_and_penalizes_and_bits_come_from_signs():
    objective = Objective(get_problem("bbob", 1, 1, 2), penalty=100.0)
    inside = objective(torch.tensor([[1.0, 1.0]]))
    outside = objective(torch.tensor([[7.0, 1.0]]))  # evaluated at (5, 1), penalty 100 * 2^2
    at_bound = objective(torch.tensor([[5.0, 1.0]]))
    assert float(outside) == pytest.approx(float(at_bound) + 400.0)
    assert float(inside) >= 0
    assert objective.decode(torch.tensor([[7.0, -9.0]])).tolist() == [[5.0, -5.0]]
    onemax = Objective(get_problem("pbo", "OneMax", 1, 4))
    assert onemax.decode(torch.tensor([[0.3, -0.1, 2.0, -5.0]])).tolist() == [[1, 0, 1, 0]]
    assert onemax(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0]])).tolist() == [0.0, 1.0]


def test_budget_is_spent_exactly_by_a_solver():
    objective = Objective(get_problem("bbob", 1, 1, 5), budget=123)
    solve(objective, "ovlr", seed=0)
    assert objective.evaluations == 123 == objective.problem.state.evaluations
    with pytest.raises(BudgetExhausted, match=r"1 evaluations asked with 0 of the budget 123 left"):
        objective(torch.zeros(1, 5))


@pytest.mark.parametrize("name", bbopt.presets.names("problem"))
def test_solvers_reach_the_final_target_on_the_sphere(name):
    """Stated bound: every solver's fixed-problem preset reaches precision 1e-8 (the ECDF's last
    target) on BBOB f1, d = 5, within the protocol's 1000 * d = 5,000 evaluations (seed 0)."""
    objective = Objective(get_problem("bbob", 1, 1, 5), budget=5000)
    assert solve(objective, name, seed=0) <= 1e-8


BAD = {
    "suite": (lambda: get_problem("cec", 1, 1, 5), r"Invalid suite: 'cec'"),
    "function id": (lambda: get_problem("bbob", 25, 1, 5), r"Invalid function: 25 \(expected a bbob id in"),
    "function name": (lambda: get_problem("pbo", "TwoMax", 1, 5), r"Invalid function: 'TwoMax' is not a pbo problem"),
    "instance": (lambda: get_problem("bbob", 1, 0, 5), r"Invalid instance: 0"),
    "dimension": (lambda: get_problem("bbob", 1, 1, 0), r"Invalid dimension: 0"),
    "budget": (lambda: Objective(get_problem("bbob", 1, 1, 2), budget=0), r"Invalid budget: 0"),
    "shape": (lambda: Objective(get_problem("bbob", 1, 1, 2))(torch.zeros(3, 4)),
              r"Invalid candidates: shape \[3, 4\] \(expected \[n, 2\]\)"),
    "nan": (lambda: Objective(get_problem("bbob", 1, 1, 2))(torch.tensor([[0.0, 0.0], [float("nan"), 0.0]])),
            r"Invalid candidates: non-finite values in rows \[1\]"),
    "algorithm": (lambda: IOHAlgorithm("pso"),
                  r"Invalid solver name: 'pso' \(expected one of \['cem', 'es', 'ovlr'\]\)"),
    "log dir": (lambda: attach_analyzer(get_problem("bbob", 1, 1, 2), None, algorithm_name="x"), r"Invalid out"),
    "ids twice": (lambda: parse_ids("1,1", "functions"), r"Invalid functions: '1,1' names 1 twice"),
    "ranges overlap": (lambda: parse_ids("1-5,3-7", "instances"), r"Invalid instances: '1-5,3-7' names 3, 4, 5 twice"),
    "ids malformed": (lambda: parse_ids("1-x", "functions"), r"Invalid functions: '1-x' \(expected ids like"),
    "ids too many": (lambda: parse_ids("1-1000000000", "instances"), r"names more than 100,000 ids"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case):
    action, pattern = BAD[case]
    with pytest.raises(ValueError, match=pattern):
        action()


def test_budget_below_one_batch_is_still_spent_exactly():
    objective = Objective(get_problem("bbob", 3, 1, 5), budget=5)  # the solver asks 8 at a time
    solve(objective, "es", seed=0)
    assert objective.evaluations == 5


def test_analyzer_logs_parse_back(tmp_path):
    problem = get_problem("bbob", 2, 3, 4)
    logger = attach_analyzer(problem, tmp_path, algorithm_name="ovlr", attributes={"lr": 0.5, "samples": 8})
    objective = Objective(problem, budget=40)
    for _ in range(5):
        objective(torch.randn(8, 4, generator=torch.Generator().manual_seed(_), dtype=torch.float64))
    logger.close()
    info = json.loads((tmp_path / "ovlr" / "IOHprofiler_f2_Ellipsoid.json").read_text())
    run = info["scenarios"][0]["runs"][0]
    assert info["algorithm"]["name"] == "ovlr" and info["scenarios"][0]["dimension"] == 4
    assert run["instance"] == 3 and run["evals"] == 40 and run["lr"] == 0.5 and run["samples"] == 8
    assert run["best"]["y"] == pytest.approx(objective.best)  # ioh logs the precision f - f_opt
    data = (tmp_path / "ovlr" / info["scenarios"][0]["path"]).read_text().splitlines()
    assert data[0].split() == ["evaluations", "raw_y"]
    values = np.array([[float(v) for v in line.split()] for line in data[1:]])
    # One line per improvement, then the last evaluation (written on close).
    improvements, last = values[:-1], values[-1]
    assert np.all(np.diff(improvements[:, 1]) < 0) and last[0] == 40
    assert improvements[-1, 1] == pytest.approx(run["best"]["y"]) == pytest.approx(values[:, 1].min())


def test_bbopt_solver_as_ioh_experiment_algorithm(tmp_path):
    experiment = ioh.Experiment(
        IOHAlgorithm("ovlr", budget_per_dimension=20), fids=[1, 8], iids=[1], dims=[3], reps=2,
        problem_class=ioh.ProblemClass.BBOB, output_directory=str(tmp_path), folder_name="run",
        algorithm_name="bbopt-ovlr", run_attributes=["lr", "sigma0"], zip_output=False,
    )  # fmt: skip
    experiment()
    files = sorted(p.name for p in (tmp_path / "run").glob("*.json"))
    assert files == ["IOHprofiler_f1_Sphere.json", "IOHprofiler_f8_Rosenbrock.json"]
    runs = json.loads((tmp_path / "run" / files[0]).read_text())["scenarios"][0]["runs"]
    assert [r["evals"] for r in runs] == [60, 60]
    assert runs[0]["lr"] == preset_for("ovlr", Objective(get_problem("bbob", 1, 1, 3))).lr


def test_ecdf_counts_targets_reached_within_the_budget():
    trace = [(10, 50.0), (20, 1e-3), (40, 1e-9)]
    assert final_score([trace]) == 1.0
    values = ecdf([trace], np.array([5, 10, 20, 40]))
    assert values[0] == 0.0 and values[-1] == 1.0
    assert values[1] == pytest.approx(np.mean(TARGETS >= 50.0))
    assert values[2] == pytest.approx(np.mean(TARGETS >= 1e-3))


def test_ioh_command_writes_logs_summary_and_plot(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "bbopt.cli", "ioh", "--functions", "1,2", "--instances", "1", "--dimensions", "2",
         "--budget-per-dim", "20", "--solvers", "ovlr,cem", "--out", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert "ECDF" in completed.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {(r["solver"], r["dimension"]) for r in summary["summary"]} == {("ovlr", 2), ("cem", 2)}
    assert all(r["evaluations"] == 40 for r in summary["runs"])
    assert (tmp_path / "ioh" / "cem" / "IOHprofiler_f2_Ellipsoid.json").exists()
    assert (tmp_path / "ecdf.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, "-m", "bbopt.cli", "ioh", "--functions", "1-x", "--out", str(tmp_path)],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "Invalid functions: '1-x'" in bad.stderr


def test_log_loss_is_only_used_where_losses_are_nonnegative():
    """LABS has no known optimum in ioh, so its loss is -f < 0: OVLR must still run on it."""
    objective = Objective(get_problem("pbo", "LABS", 1, 16), budget=200)
    assert objective.optimum is None
    solve(objective, "ovlr", seed=0)
    assert objective.evaluations == 200


def test_suite_rows_file_keeps_every_run_and_merging_refuses_twins(tmp_path):
    from bbopt.envs.ioh.suite import bbopt_runner, merge_rows, read_rows, run_suite

    rows_file = tmp_path / "a.rows.jsonl"
    grid = {"functions": [1, 2], "instances": [1], "dimensions": [2], "budget_per_dimension": 20, "runs": 1}
    rows = run_suite({"es": bbopt_runner("es")}, suite="bbob", out=tmp_path / "logs", progress=False,
                     rows_file=rows_file, **grid)  # fmt: skip
    assert read_rows(rows_file) == json.loads(json.dumps(rows))
    copy = tmp_path / "b.rows.jsonl"
    copy.write_text(rows_file.read_text().splitlines()[1] + "\n")
    with pytest.raises(ValueError, match=r"in both .*a\.rows\.jsonl and .*b\.rows\.jsonl"):
        merge_rows([rows_file, copy])
    assert len(merge_rows([rows_file])) == 2
    with pytest.raises(ValueError, match=r"already holds finished runs"):  # a second process, or a rerun
        run_suite({"es": bbopt_runner("es")}, suite="bbob", out=tmp_path / "logs", progress=False,
                  rows_file=rows_file, **grid)  # fmt: skip
    assert read_rows(rows_file) == json.loads(json.dumps(rows))  # nothing lost
    hostile = tmp_path / "hostile.traces.json"
    for text, pattern in (("{", r"not JSON"), ('{"a": 1}', r"expected a JSON list"), ("[1]", r"row 1: not a run row")):
        hostile.write_text(text)
        with pytest.raises(ValueError, match=pattern):
            read_rows(hostile)
    cut = tmp_path / "cut.rows.jsonl"
    cut.write_text(rows_file.read_text()[:-20])  # killed while writing the last row
    with pytest.raises(ValueError, match=r"cut.rows.jsonl:2: not a JSON row"):
        read_rows(cut)
