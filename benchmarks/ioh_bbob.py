"""BBOB side by side: bbopt OVLR / CEM / ES vs pycma CMA-ES (plain, BIPOP), nevergrad NGOpt and
uniform random search.

Protocol: BBOB f1-f24, instances 1-5, dimensions 5 and 20, budget 1000 * d evaluations per
run, one run per (function, instance); score = final ECDF value, the fraction of (function,
instance, target) triples reached, 51 targets 10^2 .. 10^-8. Every solver evaluates through
the same `Objective` (box projection + quadratic penalty outside [-5, 5]^d; ioh counts), starts
from x0 uniform in [-4, 4]^d; pycma and bbopt start with sigma 2. bbopt uses one setting per
solver for all functions (`bbopt.envs.ioh.DEFAULT_SETTINGS`, tuned on instance 1 at d = 5).

    python benchmarks/ioh_bbob.py                                   # everything, one process
    python benchmarks/ioh_bbob.py --solvers nevergrad-ngopt --out results/A.json   # a part ...
    python benchmarks/ioh_bbob.py --merge runs/ioh_bbob/A.traces.json runs/ioh_bbob/B.traces.json

IOHanalyzer logs and per-run traces go to runs/ioh_bbob/ (large, not committed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bbopt.envs.ioh.ecdf import final_score
from bbopt.envs.ioh.problems import BudgetExhausted, Objective
from bbopt.envs.ioh.suite import bbopt_runner, plot_ecdf, run_suite, summarize

try:
    from benchmarks import _report
except ImportError:  # run as a script
    import _report

GROUPS = {  # the BBOB function groups
    "separable": range(1, 6),
    "moderate-cond": range(6, 10),
    "ill-cond": range(10, 15),
    "multimodal": range(15, 20),
    "weak-structure": range(20, 25),
}


def evaluate(objective: Objective, points) -> np.ndarray:
    """Evaluate as many of ``points`` as the budget allows, then raise `BudgetExhausted`."""
    points = np.asarray(points, dtype=float)
    remaining = objective.remaining
    if len(points) > remaining:
        if remaining > 0:
            objective(points[:remaining])
        raise BudgetExhausted("budget spent")
    return objective(points).numpy()


def start(objective: Objective, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-4, 4, objective.dimension)


def pycma(objective: Objective, seed: int) -> None:
    import cma

    options = {"seed": seed + 1, "verbose": -9, "maxfevals": objective.budget, "tolfun": 0, "tolx": 0,
               "tolfunhist": 0, "tolstagnation": int(1e9), "tolflatfitness": int(1e9)}  # fmt: skip
    strategy = cma.CMAEvolutionStrategy(start(objective, seed), 2.0, options)
    while True:
        candidates = strategy.ask()
        strategy.tell(candidates, list(evaluate(objective, candidates)))


def pycma_bipop(objective: Objective, seed: int) -> None:
    import cma

    options = {"seed": seed + 1, "verbose": -9, "maxfevals": objective.budget}
    cma.fmin2(None, start(objective, seed), 2.0, options, restarts=20, bipop=True,
              parallel_objective=lambda xs: list(evaluate(objective, xs)))  # fmt: skip
    while objective.remaining > 0:  # restarts ended early (all criteria met): spend the rest at random
        evaluate(objective, np.random.default_rng(seed).uniform(-5, 5, (objective.remaining, objective.dimension)))


def nevergrad(objective: Objective, seed: int) -> None:
    import nevergrad as ng

    parametrization = ng.p.Array(init=start(objective, seed)).set_bounds(-5, 5)
    parametrization.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=objective.budget, num_workers=1)
    while True:
        candidate = optimizer.ask()
        optimizer.tell(candidate, float(evaluate(objective, [candidate.value])[0]))


def random_search(objective: Objective, seed: int) -> None:
    rng = np.random.default_rng(seed)
    while True:
        evaluate(objective, rng.uniform(-5, 5, (min(1000, max(objective.remaining, 1)), objective.dimension)))


PEERS = {"pycma": pycma, "pycma-bipop": pycma_bipop, "nevergrad-ngopt": nevergrad, "random": random_search}
SOLVERS = ["ovlr", "cem", "es", *PEERS]


def runner(name: str):
    return bbopt_runner(name) if name in ("ovlr", "cem", "es") else PEERS[name]


def report(rows: list[dict], out: Path, config: dict, budget_per_dimension: int) -> list[dict]:
    summary = summarize(rows)
    for row in summary:  # per function group
        for group, functions in GROUPS.items():
            traces = [r["trace"] for r in rows if r["solver"] == row["solver"] and r["dimension"] == row["dimension"]
                      and r["function"] in functions and r["trace"]]  # fmt: skip
            row[group] = final_score(traces) if traces else None
    print("\nBBOB f1-f24, instances 1-5: final ECDF value (51 targets 1e2..1e-8), by dimension\n")
    columns = [("solver", "solver", "s"), ("dimension", "d", "d"), ("runs", "runs", "d"), ("score", "ECDF", ".3f")]
    columns += [(group, group, ".3f") for group in GROUPS]
    _report.table(summary, columns)
    plot_ecdf(rows, out.with_suffix(".png"), budget_per_dimension)
    light = [{k: v for k, v in r.items() if k != "trace"} for r in rows]
    _report.write(out, config, light, {"by_solver_and_dimension": summary})
    return summary


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    parser.add_argument("--functions", default="1-24")
    parser.add_argument("--instances", default="1-5")
    parser.add_argument("--dimensions", default="5,20")
    parser.add_argument("--budget-per-dim", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "ioh_bbob.json")
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "runs" / "ioh_bbob",
        help="IOHanalyzer logs and per-run traces (large; not committed)",
    )
    parser.add_argument("--merge", nargs="+", type=Path, help="merge the traces files of earlier partial runs")
    args = parser.parse_args(argv)
    from bbopt.envs.ioh.suite import parse_ids

    config = {k: str(v) for k, v in vars(args).items()}
    if args.merge:
        rows = [row for path in args.merge for row in json.loads(path.read_text())]
        return report(rows, args.out, config, args.budget_per_dim)
    runners = {name: runner(name) for name in args.solvers.split(",")}
    began = time.perf_counter()
    ids = {key: parse_ids(getattr(args, key), key) for key in ("functions", "instances", "dimensions")}
    rows = run_suite(runners, suite="bbob", budget_per_dimension=args.budget_per_dim, runs=1,
                     out=args.logs / args.out.stem, progress=True, **ids)  # fmt: skip
    print(f"{len(rows)} runs in {time.perf_counter() - began:.0f} s")
    args.logs.mkdir(parents=True, exist_ok=True)
    (args.logs / f"{args.out.stem}.traces.json").write_text(json.dumps(rows))
    return report(rows, args.out, config, args.budget_per_dim)


if __name__ == "__main__":
    main()
