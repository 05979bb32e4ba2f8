"""BBOB side by side: bbopt's solvers (their fixed-problem presets, and variants without full
covariance or without restarts) vs pycma CMA-ES (plain, BIPOP, sep-CMA), nevergrad NGOpt and
uniform random search.

Protocol: BBOB f1-f24, instances 1-5, dimensions 5 and 20, budget 1000 * d evaluations per
run, one run per (function, instance); score = final ECDF value, the fraction of (function,
instance, target) triples reached, 51 targets 10^2 .. 10^-8; per BBOB function group too. Every
solver evaluates through the same `Objective` (box projection + quadratic penalty 1e4 outside
[-5, 5]^d; ioh counts and logs every evaluation), starts from x0 uniform in [-4, 4]^d with
sigma 2. bbopt: one setting per solver for all functions (`bbopt.presets`, "problem"; tuned on
instances 1-5 only). Also reported: evaluations to precision 1e-8 on f1, f2 and f10 (sphere,
separable ellipsoid, rotated ellipsoid), median over the instances that reach it.

bbopt variants are named ``<solver>[+variant]``: ``+diagonal`` (`bbopt.noise.Diagonal` with CSA
instead of the full covariance), ``+no-restarts`` (one run; the budget is spent in it), ``+qmc``
(quasi-Monte Carlo noise, `bbopt.noise.qmc`; not in the default list).

    python -m benchmarks.ioh_bbob                                   # everything, one process
    python -m benchmarks.ioh_bbob --solvers nevergrad-ngopt --dimensions 5 --out runs/ngopt.json  # a part
    python -m benchmarks.ioh_bbob --merge runs/ioh_bbob/A.traces.json runs/ioh_bbob/B.rows.jsonl

Every finished run is appended to runs/ioh_bbob/<out>.rows.jsonl at once, so a failure part-way
keeps what was done (merge it); a rows file that already holds runs is refused, not overwritten.

IOHanalyzer logs and per-run traces go to runs/ioh_bbob/ (large, not committed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import bbopt
from bbopt.envs.ioh.ecdf import ecdf, final_score
from bbopt.envs.ioh.problems import BudgetExhausted, Objective
from bbopt.envs.ioh.runner import BOX_SIGMA
from bbopt.envs.ioh.suite import bbopt_runner, line_style, merge_rows, parse_ids, plot_ecdf, run_suite, summarize
from bbopt.seeding import derive
from benchmarks import _report

GROUPS = {  # the BBOB function groups
    "separable": range(1, 6),
    "moderate-cond": range(6, 10),
    "ill-cond": range(10, 15),
    "multimodal": range(15, 20),
    "weak-structure": range(20, 25),
}
TARGET_FUNCTIONS = (1, 2, 10)  # evaluations to 1e-8 on sphere, separable and rotated ellipsoid


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


def _cma(objective: Objective, seed: int, extra: dict) -> None:
    import cma

    options = {"seed": derive(seed, 0), "verbose": -9, "maxfevals": objective.budget, "tolfun": 0, "tolx": 0,
               "tolfunhist": 0, "tolstagnation": int(1e9), "tolflatfitness": int(1e9)} | extra  # fmt: skip
    strategy = cma.CMAEvolutionStrategy(start(objective, seed), BOX_SIGMA, options)
    while True:
        candidates = strategy.ask()
        strategy.tell(candidates, list(evaluate(objective, candidates)))


def pycma(objective: Objective, seed: int) -> None:
    _cma(objective, seed, {})


def pycma_sep(objective: Objective, seed: int) -> None:
    """sep-CMA-ES (Ros & Hansen 2008): a diagonal covariance for the whole run."""
    _cma(objective, seed, {"CMA_diagonal": True})


def pycma_bipop(objective: Objective, seed: int) -> None:
    import cma

    options = {"seed": derive(seed, 0), "verbose": -9, "maxfevals": objective.budget}
    cma.fmin2(None, start(objective, seed), BOX_SIGMA, options, restarts=20, bipop=True,
              parallel_objective=lambda xs: list(evaluate(objective, xs)))  # fmt: skip
    while objective.remaining > 0:  # restarts ended early (all criteria met): spend the rest at random
        rest = np.random.default_rng(derive(seed, 1)).uniform(-5, 5, (objective.remaining, objective.dimension))
        evaluate(objective, rest)


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


PEERS = {"pycma": pycma, "pycma-bipop": pycma_bipop, "pycma-sep": pycma_sep, "nevergrad-ngopt": nevergrad,
         "random": random_search}  # fmt: skip
VARIANTS = ("diagonal", "no-restarts", "qmc")
DEFAULT_VARIANTS = ("diagonal", "no-restarts")  # the ones run by default (+qmc on request)


def bbopt_solvers() -> list[str]:
    names = bbopt.presets.names("problem", output_space=True)
    return [*names, *(f"{name}+{variant}" for name in names for variant in DEFAULT_VARIANTS)]


def variant_preset(name: str):
    """The preset of ``<solver>[+variant]``."""
    solver, _, variant = name.partition("+")
    preset = bbopt.presets.get(solver, "problem")
    if variant == "diagonal":
        full = preset.noise.keywords if hasattr(preset.noise, "keywords") else {}
        preset = preset.replace(noise=bbopt.presets.diagonal(**full))
    elif variant == "no-restarts":
        preset = preset.replace(restarts=None)
    elif variant == "qmc":
        preset = preset.replace(options={"qmc": True})
    elif variant:
        raise ValueError(f"Invalid variant: {variant!r} (expected one of {VARIANTS})")
    return solver, preset


def runner(name: str):
    if name in PEERS:
        return PEERS[name]
    solver, preset = variant_preset(name)
    return bbopt_runner(solver, preset.replace(sigma=BOX_SIGMA))


def evaluations_to_target(rows: list[dict], target: float = 1e-8) -> list[dict]:
    """Per (solver, dimension, function in TARGET_FUNCTIONS): median evaluations to ``target``
    over the runs that reach it, and how many do."""
    table = []
    for solver in dict.fromkeys(r["solver"] for r in rows):
        for dimension in sorted({r["dimension"] for r in rows if r["solver"] == solver}):
            entry = {"solver": solver, "dimension": dimension}
            for function in TARGET_FUNCTIONS:
                hits = [next((e for e, p in r["trace"] if p <= target), None) for r in rows
                        if (r["solver"], r["dimension"], r["function"]) == (solver, dimension, function)]  # fmt: skip
                reached = [h for h in hits if h is not None]
                entry[f"f{function}"] = float(np.median(reached)) if reached else None
                entry[f"f{function}_reached"] = f"{len(reached)}/{len(hits)}"
            table.append(entry)
    return table


def plot_groups(rows: list[dict], path: Path, budget_per_dimension: int) -> None:
    """ECDF against evaluations / d per function group (columns) and dimension (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dimensions = sorted({r["dimension"] for r in rows})
    figure, axes = plt.subplots(len(dimensions), len(GROUPS), figsize=(3.4 * len(GROUPS), 3.0 * len(dimensions)),
                                squeeze=False, sharey=True)  # fmt: skip
    budgets = np.logspace(0, np.log10(budget_per_dimension), 50)
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    for i, dimension in enumerate(dimensions):
        for j, (group, functions) in enumerate(GROUPS.items()):
            axis = axes[i][j]
            for solver in solvers:
                traces = [r["trace"] for r in rows if r["solver"] == solver and r["dimension"] == dimension
                          and r["function"] in functions and r["trace"]]  # fmt: skip
                if traces:
                    axis.plot(budgets, ecdf(traces, budgets * dimension), label=solver, **line_style(solver, solvers))
            axis.set_xscale("log")
            axis.set_ylim(0, 1)
            axis.set_title(f"{group}, d = {dimension}", fontsize=9)
            axis.grid(alpha=0.3)
            if i == len(dimensions) - 1:
                axis.set_xlabel("evaluations / d")
    axes[0][0].set_ylabel("fraction of (run, target) pairs")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


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
    targets = evaluations_to_target(rows)
    print("\nEvaluations to precision 1e-8: median over the instances that reach it (reached / runs)\n")
    target_columns = [("solver", "solver", "s"), ("dimension", "d", "d")]
    for function in TARGET_FUNCTIONS:
        target_columns += [(f"f{function}", f"f{function}", ".0f"), (f"f{function}_reached", "", "s")]
    _report.table(targets, target_columns)
    plot_ecdf(rows, out.with_suffix(".png"), budget_per_dimension)
    plot_groups(rows, out.with_name(out.stem + "_groups.png"), budget_per_dimension)
    light = [{k: v for k, v in r.items() if k != "trace"} for r in rows]
    _report.write(out, config, light, {"by_solver_and_dimension": summary, "evaluations_to_1e-8": targets})
    return summary


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", default=",".join([*bbopt_solvers(), *PEERS]),
                        help=f"comma-separated, from {','.join([*bbopt_solvers(), *PEERS])}")  # fmt: skip
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
    config = {k: str(v) for k, v in vars(args).items()}
    if args.merge:
        rows = merge_rows(args.merge)
        return report(rows, args.out, config, args.budget_per_dim)
    runners = {name: runner(name) for name in args.solvers.split(",")}
    began = time.perf_counter()
    ids = {key: parse_ids(getattr(args, key), key) for key in ("functions", "instances", "dimensions")}
    rows = run_suite(runners, suite="bbob", budget_per_dimension=args.budget_per_dim, runs=1,
                     out=args.logs / args.out.stem, progress=True,
                     rows_file=args.logs / f"{args.out.stem}.rows.jsonl", **ids)  # fmt: skip
    print(f"{len(rows)} runs in {time.perf_counter() - began:.0f} s")
    args.logs.mkdir(parents=True, exist_ok=True)
    (args.logs / f"{args.out.stem}.traces.json").write_text(json.dumps(rows))
    return report(rows, args.out, config, args.budget_per_dim)


if __name__ == "__main__":
    main()
