"""Run solvers over a suite of ioh problems: IOHanalyzer logs, a summary and an ECDF plot.

Used by ``bbopt ioh`` and ``benchmarks/ioh_bbob.py``. A *runner* is ``runner(objective, seed)``
that spends ``objective.budget`` (bbopt solvers via `optimize`; peers in the benchmark).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import bbopt
from bbopt.checks import check_int
from bbopt.envs.ioh.ecdf import ecdf, final_score
from bbopt.envs.ioh.logging import attach_analyzer
from bbopt.envs.ioh.problems import BudgetExhausted, Objective, get_problem
from bbopt.envs.ioh.runner import BOX_SIGMA, solve
from bbopt.rollout.checkpoint import write_json
from bbopt.rows_file import RowsFile
from bbopt.rows_file import read_rows as read_row_lines
from bbopt.seeding import derive
from bbopt.tracking import Tracker

__all__ = ["bbopt_runner", "line_style", "merge_rows", "parse_ids", "plot_ecdf", "read_rows", "run_suite", "summarize"]

Runner = Callable[[Objective, int], None]
MAX_IDS = 100_000  # ids one --functions / --instances / --dimensions may name


def parse_ids(text: str, argument: str) -> list[int]:
    """``"1-3,7"`` -> ``[1, 2, 3, 7]``."""
    spans = []
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            spans.append(range(int(low), int(high or low) + 1))
    except ValueError as error:
        raise ValueError(f"Invalid {argument}: {text!r} (expected ids like 1-24 or 5,20)") from error
    if sum(len(span) for span in spans) > MAX_IDS:  # before the list is built: '1-1000000000' would fill the memory
        raise ValueError(f"Invalid {argument}: {text!r} names more than {MAX_IDS:,} ids")
    ids = [i for span in spans for i in span]
    if not ids:
        raise ValueError(f"Invalid {argument}: {text!r} is empty")
    twice = sorted(i for i, count in collections.Counter(ids).items() if count > 1)
    if twice:  # each would run (and count in the ECDF) twice
        raise ValueError(f"Invalid {argument}: {text!r} names {', '.join(map(str, twice))} twice")
    return ids


def bbopt_runner(name: str, preset=None) -> Runner:
    """A runner for bbopt solver ``name`` with its fixed-problem preset (or ``preset``)."""
    shown = preset if preset is not None else bbopt.presets.get(name, "problem")  # refuses unknown names

    def run(objective: Objective, seed: int) -> None:
        solve(objective, name, seed, preset=preset)

    run.attributes = {"lr": shown.lr, "sigma0": BOX_SIGMA}  # numeric run attributes for IOHanalyzer
    return run


def run_suite(
    runners: dict[str, Runner],
    *,
    suite: str,
    functions: Sequence[int],
    instances: Sequence[int],
    dimensions: Sequence[int],
    budget_per_dimension: int,
    runs: int,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    rows_file: Path | None = None,
    resume: bool = False,
    tracker: Tracker | None = None,
) -> list[dict]:
    """Every runner on every (dimension, function, instance, run); logs to ``out/ioh/<runner>``.

    Returns one row per run: solver, dimension, function, instance, run, evaluations, best
    precision, final ECDF score, seconds and the trace. With ``rows_file``
    (`bbopt.rows_file.RowsFile`), each row is also appended to it as one JSON line as soon as
    its run ends, so a failure part-way loses none of the finished runs (`read_rows` reads it
    back); a non-empty ``rows_file`` is refused, not overwritten, unless ``resume``: then its
    rows are kept and only the runs it lacks are run (each run's seed depends on the run alone,
    so the rows are those of an uninterrupted suite; ioh writes the resumed runs' logs to a new
    folder ``<runner>-1`` beside the first). ``tracker`` (`bbopt.tracking`) gets each new
    run's ``<solver>/d<d>/score``, ``/log10_precision``, ``/evaluations`` and ``/seconds``
    at the run's index among that solver's runs of that dimension.
    """
    for name, value in (("budget_per_dimension", budget_per_dimension), ("runs", runs)):
        check_int(value, name, minimum=1)
    check_int(seed, "seed", minimum=0)  # runs draw derive(seed, run, instance): refused before anything starts
    out = Path(out)
    jobs = [
        (s, d, f, i, r) for s in runners for d in dimensions for f in functions for i in instances for r in range(runs)
    ]
    rows: list[dict] = []
    loggers = {}
    with contextlib.ExitStack() as stack:
        writer = None
        if rows_file is not None:  # refused before any run: another process's or an earlier run's rows are kept
            writer = stack.enter_context(RowsFile(rows_file, key=_row_key, resume=resume, check=_is_row))
            foreign = set(writer.finished) - set(jobs)
            if foreign:
                raise ValueError(f"Invalid resume: {rows_file} holds runs of other solvers, functions, instances, "
                                 f"dimensions or run counts, e.g. {sorted(foreign)[0]}; resume with the first "
                                 "run's options")  # fmt: skip
        finished = writer.finished if writer is not None else {}
        bar = tqdm(jobs, disable=not progress, desc=f"{suite} runs")
        for job in bar:
            if job in finished:
                rows.append(finished[job])
                continue
            solver, dimension, function, instance, run = job
            runner = runners[solver]
            problem = get_problem(suite, function, instance, dimension)
            if solver not in loggers:
                loggers[solver] = attach_analyzer(problem, out / "ioh", algorithm_name=solver,
                                                  attributes=getattr(runner, "attributes", None))  # fmt: skip
                stack.callback(loggers[solver].close)
            else:
                problem.attach_logger(loggers[solver])
            objective = Objective(problem, budget=budget_per_dimension * problem.meta_data.n_variables)
            began = time.perf_counter()
            # A peer that asks past the budget stops there; nothing beyond it was evaluated.
            with contextlib.suppress(BudgetExhausted):
                runner(objective, derive(seed, run, instance))
            problem.detach_logger()
            rows.append({
                "solver": solver, "dimension": dimension, "function": function, "instance": instance, "run": run,
                "evaluations": objective.evaluations, "best_precision": objective.best,
                "score": final_score([objective.trace]) if objective.trace else 0.0,
                "seconds": time.perf_counter() - began, "trace": objective.trace,
            })  # fmt: skip
            if writer is not None:
                writer.append(rows[-1])
            if tracker is not None:
                tracker.log(_tracked(rows[-1]), step=_index_among_peers(jobs, job))
            bar.set_postfix(solver=solver, d=dimension, f=function)
    return rows


def _tracked(row: dict) -> dict:
    values = {"score": row["score"], "log10_precision": math.log10(max(row["best_precision"], 1e-300)),
              "evaluations": row["evaluations"], "seconds": row["seconds"]}  # fmt: skip
    return {f"{row['solver']}/d{row['dimension']}/{name}": value for name, value in values.items()}


def _index_among_peers(jobs: list[tuple], job: tuple) -> int:
    """The place of ``job`` among the jobs of its solver and dimension (a tracker's step)."""
    return [j for j in jobs if j[:2] == job[:2]].index(job)


def _row_key(row: dict) -> tuple:
    return tuple(row[key] for key in ROW_KEYS)


def _is_row(row: dict) -> bool:
    return all(key in row for key in (*ROW_KEYS, "trace", "best_precision"))


def read_rows(path: Path) -> list[dict]:
    """Rows saved by `run_suite`: a JSON list (``*.traces.json``) or JSON lines (``rows_file``)."""
    text = Path(path).read_text()
    if Path(path).suffix != ".jsonl":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of run rows, got {type(rows).__name__}")
        return [_checked_row(row, f"{path}: row {number}") for number, row in enumerate(rows, 1)]
    return read_row_lines(path, check=_is_row)


ROW_KEYS = ("solver", "dimension", "function", "instance", "run")


def _checked_row(row, where: str) -> dict:
    if not isinstance(row, dict) or not all(key in row for key in (*ROW_KEYS, "trace", "best_precision")):
        raise ValueError(f"{where}: not a run row (expected an object with {', '.join(ROW_KEYS)}, trace, ...)")
    return row


def merge_rows(paths: list[Path]) -> list[dict]:
    """The rows of several `read_rows` files; refuses a run that two files both hold."""
    rows, origin = [], {}
    for path in paths:
        for row in read_rows(path):
            key = tuple(row[k] for k in ROW_KEYS)
            if key in origin:
                raise ValueError(f"run {key} is in both {origin[key]} and {path}; drop it from one of them")
            origin[key] = path
            rows.append(row)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Final ECDF score per (solver, dimension) over all its runs."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["solver"], row["dimension"]), []).append(row)
    return [
        {"solver": solver, "dimension": dimension, "runs": len(group),
         "score": final_score([r["trace"] for r in group if r["trace"]]),
         "solved_1e-8": float(np.mean([r["best_precision"] <= 1e-8 for r in group])),
         "seconds": sum(r["seconds"] for r in group)}
        for (solver, dimension), group in groups.items()
    ]  # fmt: skip


VARIANT_LINES = {"": "-", "diagonal": "--", "no-restarts": ":"}


def line_style(solver: str, solvers: list[str]) -> dict:
    """One colour per base solver (``ovlr`` for ``ovlr+diagonal``), one line style per variant
    (solid, dashed for ``+diagonal``, dotted for ``+no-restarts``); peers dash-dotted."""
    base, _, variant = solver.partition("+")
    bases = list(dict.fromkeys(name.partition("+")[0] for name in solvers))
    peer = base not in bbopt.SOLVERS
    return {"color": f"C{bases.index(base) % 10}", "linestyle": "-." if peer else VARIANT_LINES.get(variant, "-."),
            "linewidth": 1.0 if peer or variant else 1.6}  # fmt: skip


def plot_ecdf(rows: list[dict], path: Path, budget_per_dimension: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dimensions = sorted({r["dimension"] for r in rows})
    figure, axes = plt.subplots(1, len(dimensions), figsize=(5 * len(dimensions), 3.8), squeeze=False)
    budgets = np.logspace(0, np.log10(budget_per_dimension), 60)  # evaluations / d
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    for axis, dimension in zip(axes[0], dimensions, strict=True):
        for solver in solvers:
            traces = [r["trace"] for r in rows if r["solver"] == solver and r["dimension"] == dimension and r["trace"]]
            if traces:
                axis.plot(budgets, ecdf(traces, budgets * dimension), label=solver, **line_style(solver, solvers))
        axis.set_xscale("log")
        axis.set_ylim(0, 1)
        axis.set_xlabel("evaluations / dimension")
        axis.set_title(f"d = {dimension}")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of (run, target) pairs")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_summary(rows: list[dict], summary: list[dict], path: Path, config: dict) -> None:
    light = [{k: v for k, v in r.items() if k != "trace"} for r in rows]
    write_json(path, {"config": config, "summary": summary, "runs": light})


def run_and_report(runners: dict[str, Runner], *, out: Path, config: dict, suite: str, budget_per_dimension: int,
                   progress: bool = True, **options) -> list[dict]:  # fmt: skip
    """The one run-and-report flow of ``bbopt ioh`` and the demo's BBOB slice: `run_suite` (with
    ``options``: functions, instances, dimensions, runs, seed, rows_file, resume, tracker), then
    the ECDF table, ``out/summary.json`` (with ``config``) and ``out/ecdf.png``; returns the rows."""
    rows = run_suite(runners, suite=suite, budget_per_dimension=budget_per_dimension, out=out, progress=progress,
                     **options)  # fmt: skip
    summary = summarize(rows)
    print(f"\n{suite}: final ECDF value (fraction of (run, target) pairs, 51 targets 1e2..1e-8)\n")
    print(f"{'solver':<10}{'d':>4}{'runs':>6}{'ECDF':>8}{'solved 1e-8':>13}{'seconds':>9}")
    for row in summary:
        print(f"{row['solver']:<10}{row['dimension']:>4}{row['runs']:>6}{row['score']:>8.3f}"
              f"{row['solved_1e-8']:>13.2f}{row['seconds']:>9.1f}")  # fmt: skip
    write_summary(rows, summary, out / "summary.json", config)
    if suite != "bbob":
        print("(ECDF targets are precisions; for PBO/GRAPH see best_precision per run in summary.json)")
    plot_ecdf(rows, out / "ecdf.png", budget_per_dimension)
    print(f"\nwrote {out / 'ioh'} (IOHanalyzer), {out / 'summary.json'}, {out / 'ecdf.png'}")
    return rows
