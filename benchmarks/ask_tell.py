"""Solver overhead per candidate (objective excluded): bbopt vs pycma, nevergrad and EvoTorch.

For each dimension d and population n, every solver runs ask/tell on the sphere function;
only the time inside ask() and tell() is counted (the objective is computed outside the
timer), after two warm-up iterations, for at least ``--min-seconds`` and ``--min-iterations``.
Reported: median microseconds per candidate (iteration time / n).

Peers: pycma ``CMAEvolutionStrategy`` (full covariance), nevergrad ``NGOpt`` (its
recommended default) and ``TwoPointsDE`` (ask/tell one candidate at a time; a peer that
raises is reported with its error, not dropped), EvoTorch's functional ``cem`` and
``pgpe`` (with a stdev floor of 1e-6, without which their CEM's stdev turns NaN after a few
hundred iterations on the sphere). bbopt: every registered output-space solver on a
`LearnedVector` policy, ``bbopt-<name>`` with the default scaled noise and
``torch.optim.Adam(fused=True)`` (the same for every solver), and ``bbopt-<name>-full`` with its
fixed-problem preset (`bbopt.presets`: full covariance with CSA, SGD; restarts off), which is
what the full covariance costs; torch runs on ``--threads`` (default 1).

    python -m benchmarks.ask_tell
    python -m benchmarks.ask_tell --dimensions 10 --populations 16 --min-seconds 0.05   # smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import bbopt
from bbopt.policies import LearnedVector
from benchmarks import _report


class BboptRunner:
    def __init__(self, name: str, dimension: int, population: int):
        name, _, variant = name.partition("-")
        policy = LearnedVector(dimension, init=torch.full((dimension,), 1.0))
        if variant == "full":
            preset = bbopt.presets.get(name, "problem").replace(sigma=0.5, restarts=None)
            self.solver = preset.build(name, policy, samples=population, seed=0)
        else:
            optimizer = torch.optim.Adam(policy.parameters(), lr=0.05, fused=True)  # fused: half the step cost
            self.solver = bbopt.make_solver(name, policy, optimizer, sigma=0.5, samples=population, seed=0)

    def ask(self):
        return self.solver.ask()

    def tell(self, candidates, losses):
        self.solver.tell(losses)


class PycmaRunner:
    def __init__(self, dimension: int, population: int):
        import cma

        options = {"popsize": population, "verbose": -9, "seed": 1, "maxiter": 10**9}
        self.strategy = cma.CMAEvolutionStrategy(np.ones(dimension), 0.5, options)

    def ask(self):
        self.asked = self.strategy.ask()
        return np.asarray(self.asked)

    def tell(self, candidates, losses):
        self.strategy.tell(self.asked, list(np.asarray(losses, dtype=float)))


class NevergradRunner:
    def __init__(self, name: str, dimension: int, population: int, budget: int):
        import nevergrad as ng

        family = {"ngopt": ng.optimizers.NGOpt, "de": ng.optimizers.TwoPointsDE}[name]
        self.optimizer = family(parametrization=dimension, budget=budget, num_workers=population)
        self.population = population

    def close(self):
        # Some optimizers NGOpt picks run scipy in non-daemon threads that would block exit.
        import threading

        from nevergrad.optimization.recaster import _MessagingThread

        for thread in threading.enumerate():
            if isinstance(thread, _MessagingThread):
                thread.stop()

    def ask(self):
        self.asked = [self.optimizer.ask() for _ in range(self.population)]
        return np.stack([candidate.value for candidate in self.asked])

    def tell(self, candidates, losses):
        for candidate, loss in zip(self.asked, np.asarray(losses, dtype=float), strict=True):
            self.optimizer.tell(candidate, float(loss))


class EvotorchRunner:
    def __init__(self, name: str, dimension: int, population: int):
        from evotorch.algorithms import functional

        center = torch.ones(dimension)
        self.population = population
        if name == "cem":
            self.state = functional.cem(
                center_init=center, parenthood_ratio=0.5, objective_sense="min", stdev_init=0.5, stdev_min=1e-6
            )
            self._ask, self._tell = functional.cem_ask, functional.cem_tell
        else:
            self.state = functional.pgpe(
                center_init=center,
                center_learning_rate=0.05,
                stdev_learning_rate=0.1,
                objective_sense="min",
                stdev_init=0.5,
                stdev_min=1e-6,
            )
            self._ask, self._tell = functional.pgpe_ask, functional.pgpe_tell

    def ask(self):
        return self._ask(self.state, popsize=self.population)

    def tell(self, candidates, losses):
        self.state = self._tell(self.state, candidates, losses)


def make_runner(name: str, dimension: int, population: int, budget: int):
    if name.startswith("bbopt-"):
        return BboptRunner(name.removeprefix("bbopt-"), dimension, population)
    if name == "pycma":
        return PycmaRunner(dimension, population)
    if name.startswith("nevergrad-"):
        return NevergradRunner(name.removeprefix("nevergrad-"), dimension, population, budget)
    if name.startswith("evotorch-"):
        return EvotorchRunner(name.removeprefix("evotorch-"), dimension, population)
    raise ValueError(f"Invalid solver: {name!r}")


def sphere(candidates):
    if isinstance(candidates, torch.Tensor):
        return (candidates * candidates).sum(-1)
    return (np.asarray(candidates) ** 2).sum(-1)


def overhead_per_candidate(name, dimension, population, min_seconds, min_iterations, max_iterations) -> dict:
    row = {"solver": name, "dimension": dimension, "population": population}
    runner = make_runner(name, dimension, population, budget=population * (max_iterations + 2))
    try:
        times = _timed_iterations(runner, min_seconds, min_iterations, max_iterations)
    except Exception as error:  # a peer that fails in some setting is reported, not hidden
        return row | {"iterations": 0, "us_per_candidate": None, "error": f"{type(error).__name__}: {error}"}
    finally:
        getattr(runner, "close", lambda: None)()
    return row | {"iterations": len(times), "us_per_candidate": 1e6 * statistics.median(times) / population}


def _timed_iterations(runner, min_seconds, min_iterations, max_iterations) -> list[float]:
    for _ in range(2):  # warm-up
        candidates = runner.ask()
        runner.tell(candidates, sphere(candidates))
    times, spent = [], 0.0
    while (spent < min_seconds or len(times) < min_iterations) and len(times) < max_iterations:
        began = time.perf_counter()
        candidates = runner.ask()
        asked = time.perf_counter()
        losses = sphere(candidates)  # not timed
        told_from = time.perf_counter()
        runner.tell(candidates, losses)
        ended = time.perf_counter()
        times.append((asked - began) + (ended - told_from))
        spent += ended - began
    return times


SOLVERS = [
    *(f"bbopt-{name}" for name in bbopt.presets.names("problem", output_space=True)),
    *(f"bbopt-{name}-full" for name in bbopt.presets.names("problem", output_space=True)),
    "pycma",
    "nevergrad-ngopt",
    "nevergrad-de",
    "evotorch-cem",
    "evotorch-pgpe",
]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    parser.add_argument("--dimensions", default="10,100,1000")
    parser.add_argument("--populations", default="16,256")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--min-iterations", type=int, default=10)
    parser.add_argument("--max-iterations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair to single-threaded peers)")
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "ask_tell.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for dimension in map(int, args.dimensions.split(",")):
        for population in map(int, args.populations.split(",")):
            for name in args.solvers.split(","):
                rows.append(
                    overhead_per_candidate(
                        name, dimension, population, args.min_seconds, args.min_iterations, args.max_iterations
                    )
                )
                row = rows[-1]
                figure = f"{row['us_per_candidate']:10.2f} us" if "error" not in row else f"failed: {row['error'][:60]}"
                print(f"  d={dimension:<5} n={population:<4} {name:<16} {figure}", flush=True)
    summary = {}
    for dimension in map(int, args.dimensions.split(",")):
        for population in map(int, args.populations.split(",")):
            group = sorted((r for r in rows if (r["dimension"], r["population"]) == (dimension, population)
                            and r["us_per_candidate"] is not None), key=lambda r: r["us_per_candidate"])  # fmt: skip
            summary[f"d={dimension},n={population}"] = [r["solver"] for r in group]
    print("\nSolver overhead per candidate, microseconds (objective excluded)\n")
    _report.table(rows, [("solver", "solver", "s"), ("dimension", "d", "d"), ("population", "n", "d"),
                         ("us_per_candidate", "us/candidate", ".2f")])  # fmt: skip
    print("\nRanking (fastest first):")
    for key, order in summary.items():
        print(f"  {key:<14} {' < '.join(order)}")
    _report.write(args.out, vars(args) | {"out": str(args.out)}, rows, {"ranking": summary})
    return rows


if __name__ == "__main__":
    main()
