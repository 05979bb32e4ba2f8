"""``bbopt demo``: the registered solvers side by side on classic test functions, a BBOB slice
and a bin-packing slice.

Each solver runs its fixed-problem preset (`bbopt.presets`, restarts included) from the same
seeded start (uniform in [-4, 4]^d) with the same evaluation budget and initial step size
(`SIGMA`, the same for every solver and function). Prints a table and writes
``convergence.png`` and ``results.json``. Contributed to the ``bbopt`` command line through the
``bbopt.commands`` entry points (`bbopt.plugins`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import bbopt
from bbopt.arguments import count, positive_int
from bbopt.cli import Command
from bbopt.envs import FUNCTIONS
from bbopt.policies import LearnedVector
from bbopt.rollout.checkpoint import write_json

SIGMA = 1.0  # initial step size on every function


def solvers() -> list[str]:
    """The solvers the demo runs: every registered one with a fixed-problem preset."""
    return bbopt.presets.names("problem")


def run_one(function_name: str, solver_name: str, *, dimension: int, budget: int, seed: int, progress: bool) -> dict:
    function = FUNCTIONS[function_name]
    start = torch.rand(dimension, generator=torch.Generator().manual_seed(seed)) * 8 - 4
    preset = bbopt.presets.get(solver_name, "problem").replace(sigma=SIGMA, log_loss=False)
    policies: list[LearnedVector] = []  # the current run's policy, for the diagnostic below

    def make_policy(x0: torch.Tensor) -> LearnedVector:
        policies.append(LearnedVector(dimension, init=x0))
        return policies[-1]

    strategy = preset.strategy(solver_name, lambda run_seed: start.clone(), dimension=dimension, seed=seed,
                               make_policy=make_policy)  # fmt: skip
    curve: list[tuple[int, float, float]] = []

    def after_step(step: int, stats: dict[str, float]) -> None:
        # Diagnostic only (not counted as an evaluation): the loss at the current policy's mean output.
        curve.append((int(stats["evaluations"]), stats["best_loss"], float(function(policies[-1].value.detach()))))

    began = time.perf_counter()
    result = bbopt.minimize(function, strategy, budget=budget, callback=after_step, progress=progress)
    seconds = time.perf_counter() - began
    return {
        "function": function_name,
        "solver": solver_name,
        "best_loss": result.loss,
        "final_mean_loss": curve[-1][2] if curve else float("nan"),
        "evaluations": result.evaluations,
        "runs": len(result.runs),
        "seconds": seconds,
        "curve": curve,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["function"] for r in results))
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        for index, result in enumerate(r for r in results if r["function"] == name):
            evaluations, best, at_mean = zip(*result["curve"], strict=True)
            color = f"C{index}"
            axis.plot(evaluations, [max(v, 1e-300) for v in best], color=color, label=result["solver"].upper())
            axis.plot(evaluations, [max(v, 1e-300) for v in at_mean], color=color, linestyle="--", linewidth=0.9)
        axis.set_yscale("log")
        axis.set_title(name)
        axis.set_xlabel("evaluations")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("best candidate (solid), loss at mu (dashed)")
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_demo(
    out: Path, *, dimension: int = 10, budget: int = 16_000, seed: int = 0, progress: bool = True
) -> list[dict]:
    """Run every (function, solver) pair; write ``results.json`` and ``convergence.png`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results = [
        run_one(function, solver, dimension=dimension, budget=budget, seed=seed, progress=progress)
        for function in FUNCTIONS
        for solver in solvers()
    ]
    print(f"\nbbopt demo: {dimension}-D, {budget} evaluations per run, seed {seed}\n")
    header = (f"{'function':<12}{'solver':<8}{'best loss':>12}{'loss at mu':>12}{'evaluations':>13}{'runs':>6}"
              f"{'seconds':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['function']:<12}{r['solver'].upper():<8}{r['best_loss']:>12.3e}{r['final_mean_loss']:>12.3e}"
            f"{r['evaluations']:>13d}{r['runs']:>6d}{r['seconds']:>9.2f}"
        )
    config = {"dimension": dimension, "budget": budget, "seed": seed, "sigma": SIGMA}
    write_json(out / "results.json", {"config": config, "results": results})
    plot(results, out / "convergence.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'convergence.png'}")
    run_bbob_slice(out / "bbob", seed=seed, progress=progress)
    run_binpacking_slice(out / "binpacking", seed=seed, progress=progress)
    return results


BBOB_SLICE = {"functions": [1, 8, 15, 21], "instances": [1], "dimensions": [5], "budget_per_dimension": 1000}


def run_bbob_slice(out: Path, *, seed: int, progress: bool) -> list[dict]:
    """A small BBOB slice (sphere, Rosenbrock, rotated Rastrigin, Gallagher 101 peaks; d = 5)
    with IOHanalyzer logs, as ``bbopt ioh`` runs it."""
    from bbopt.envs.ioh.suite import bbopt_runner, run_and_report, summarize

    runners = {name: bbopt_runner(name) for name in solvers()}
    rows = run_and_report(runners, out=out, config={**BBOB_SLICE, "seed": seed}, suite="bbob", runs=1, seed=seed,
                          progress=progress, **BBOB_SLICE)  # fmt: skip
    print("\nBBOB slice f1, f8, f15, f21 (instance 1, d = 5, 5,000 evaluations): best precision f - f_opt\n")
    print(f"{'solver':<8}" + "".join(f"{'f' + str(f):>11}" for f in BBOB_SLICE["functions"]) + f"{'ECDF':>8}")
    for summary in summarize(rows):
        mine = {r["function"]: r["best_precision"] for r in rows if r["solver"] == summary["solver"]}
        cells = "".join(f"{mine[f]:>11.2e}" for f in BBOB_SLICE["functions"])
        print(f"{summary['solver'].upper():<8}{cells}{summary['score']:>8.3f}")
    return rows


BINPACKING_SLICE = {"family": "triplet", "items": 60, "count": 5, "budget": 20_000}


def run_binpacking_slice(out: Path, *, seed: int, progress: bool) -> list[dict]:
    """Five triplet-60 instances (every bin of the optimum exactly full): per-instance
    priority search with each solver vs first/best fit decreasing, as ``bbopt binpacking`` runs it."""
    from bbopt.envs.binpacking import make_instance
    from bbopt.envs.binpacking.runs import run_and_report

    family, items, count, budget = (BINPACKING_SLICE[k] for k in ("family", "items", "count", "budget"))
    instances = [make_instance(family, items, seed + k) for k in range(count)]
    return run_and_report(instances, [*solvers(), "ffd", "bfd"], label=f"{count} {family}-{items} instances",
                          out=out, config={**BINPACKING_SLICE, "seed": seed}, budget=budget, seed=seed,
                          progress=progress)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and convergence.png")
    parser.add_argument("--dimension", type=positive_int, default=10)
    parser.add_argument("--budget", type=positive_int, default=16_000, help="evaluations per run")
    parser.add_argument("--seed", type=count, default=0)
    parser.add_argument("--no-progress", action="store_true", help="switch the progress bars off")


def run(args: argparse.Namespace) -> None:
    if args.dimension < 2:
        raise ValueError("--dimension must be >= 2 (Rosenbrock couples neighbours)")
    run_demo(args.out, dimension=args.dimension, budget=args.budget, seed=args.seed, progress=not args.no_progress)


COMMAND = Command("demo", "OVLR, CEM and ES side by side on sphere, Rosenbrock and Rastrigin", add_arguments, run,
                  directory=lambda args: args.out)  # fmt: skip
