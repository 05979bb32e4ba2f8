"""PBO at n = 100: OneMax, LeadingOnes, LABS, Ising (ring), N-Queens; 10^4 evaluations per run.

Every registered solver with a fixed-problem preset (a learned logit vector with
`bbopt.noise.Bernoulli` noise, as `bbopt.envs.ioh.preset_for` sets it up for bits) vs a
(1+1)-EA written here (standard bit mutation with rate 1/n, at least one bit flipped, ties
accepted) and nevergrad's ``DiscreteOnePlusOne``. Reported per problem and solver: the
fraction of runs that reach the optimum where ioh knows it, the median evaluations to reach it
(over the runs that do), and the mean best value (ioh's raw objective, maximized).

    python -m benchmarks.ioh_pbo            # 5 runs each
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import numpy as np

import bbopt
from bbopt.envs.ioh.problems import BudgetExhausted, Objective, get_problem
from bbopt.envs.ioh.suite import bbopt_runner
from benchmarks import _report

PROBLEMS = {"OneMax": 1, "LeadingOnes": 2, "LABS": 18, "IsingRing": 19, "NQueens": 23}


def signs(bits: np.ndarray) -> np.ndarray:
    """Bits -> the unbounded encoding `Objective` decodes (positive means 1)."""
    return np.where(np.asarray(bits) > 0, 1.0, -1.0)


def one_plus_one_ea(objective: Objective, seed: int) -> None:
    """(1+1)-EA: flip each bit with probability 1/n (at least one), keep the child if not worse."""
    rng = np.random.default_rng(seed)
    n = objective.dimension
    parent = rng.integers(0, 2, n)
    parent_loss = float(objective(signs(parent)[None])[0])
    while objective.remaining > 0:
        flips = rng.random(n) < 1.0 / n
        if not flips.any():
            flips[rng.integers(n)] = True
        child = np.where(flips, 1 - parent, parent)
        child_loss = float(objective(signs(child)[None])[0])
        if child_loss <= parent_loss:
            parent, parent_loss = child, child_loss


def nevergrad_discrete(objective: Objective, seed: int) -> None:
    import nevergrad as ng

    parametrization = ng.p.Choice([0, 1], repetitions=objective.dimension)
    parametrization.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.DiscreteOnePlusOne(parametrization=parametrization, budget=objective.budget)
    while objective.remaining > 0:
        candidate = optimizer.ask()
        optimizer.tell(candidate, float(objective(signs(np.asarray(candidate.value))[None])[0]))


SOLVERS = {
    **{name: bbopt_runner(name) for name in bbopt.presets.names("problem", output_space=True)},
    "(1+1)-EA": one_plus_one_ea,
    "nevergrad-discrete(1+1)": nevergrad_discrete,
}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dimension", type=int, default=100)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "ioh_pbo.json")
    args = parser.parse_args(argv)
    rows = []
    for problem_name, function in PROBLEMS.items():
        for solver_name, solver in SOLVERS.items():
            began, best_values, optimal, hits = time.perf_counter(), [], [], []
            for run in range(args.runs):
                problem = get_problem("pbo", function, 1, args.dimension)
                objective = Objective(problem, budget=args.budget)
                with contextlib.suppress(BudgetExhausted):
                    solver(objective, 1000 + run)
                best_values.append(float(problem.state.current_best.y))
                optimal.append(objective.optimum is not None and objective.best <= 0.0)
                if optimal[-1]:
                    hits.append(next(e for e, p in objective.trace if p <= 0.0))
            known = objective.optimum is not None
            rows.append({
                "problem": problem_name, "solver": solver_name, "optimum": objective.optimum,
                "success_rate": float(np.mean(optimal)) if known else None,
                "evaluations_to_optimum": float(np.median(hits)) if hits else None,
                "best_mean": statistics.mean(best_values), "best_max": max(best_values),
                "seconds": time.perf_counter() - began,
            })  # fmt: skip
            print(f"  {problem_name:<12} {solver_name:<24} best {rows[-1]['best_mean']:.2f}", flush=True)
    print(f"\nPBO, n = {args.dimension}, {args.budget} evaluations, {args.runs} runs: success rate (optimum "
          "reached), median evaluations to it, mean best value\n")  # fmt: skip
    _report.table(rows, [("problem", "problem", "s"), ("solver", "solver", "s"), ("optimum", "optimum", "g"),
                         ("success_rate", "success", ".2f"), ("evaluations_to_optimum", "evals to opt", ".0f"),
                         ("best_mean", "mean best", ".2f")])  # fmt: skip
    _report.write(args.out, vars(args) | {"out": str(args.out)}, rows)
    return rows


if __name__ == "__main__":
    main()
