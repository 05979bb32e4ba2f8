"""Run solvers and heuristics over a set of instances; summarize, tabulate, plot.

Shared by ``bbopt binpacking``, ``bbopt demo`` and ``benchmarks/binpacking.py``: one row per
(instance, method) with bins, lower bound, known optimum, success, decodes to success and
seconds; one summary row per method. With a rows file, `run_instances` appends each row as one
JSON line as soon as its run ends (flushed and fsynced), so Ctrl-C or a crash loses only the
runs in progress; `read_rows` reads them back.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import bbopt
from bbopt.checks import check_int
from bbopt.envs.binpacking.heuristics import HEURISTICS
from bbopt.envs.binpacking.instance import Instance
from bbopt.envs.binpacking.search import SearchResult, search
from bbopt.rollout.checkpoint import write_json
from bbopt.rows_file import RowsFile
from bbopt.rows_file import read_rows as read_row_lines
from bbopt.seeding import derive
from bbopt.tracking import Tracker

__all__ = [
    "Interrupted",
    "known_methods",
    "plot_success",
    "print_table",
    "read_rows",
    "run_instances",
    "summarize",
    "write_results",
]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `run_instances`: ``finished`` of ``total`` runs ended, their rows kept in
    ``path`` (None without a rows file)."""

    def __init__(self, finished: int, total: int, path: Path | None):
        kept = f", kept in {path}" if path is not None else ", not kept (no rows file)"
        super().__init__(f"{finished} of {total} runs finished{kept}")
        self.finished, self.total, self.path = finished, total, path


def known_methods() -> tuple[str, ...]:
    """Every registered solver with a fixed-problem preset, the random control, the heuristics."""
    return (*bbopt.presets.names("problem"), "random", *HEURISTICS)


def _heuristic_row(instance: Instance, name: str) -> dict:
    began = time.perf_counter()
    packing = HEURISTICS[name](instance)
    return SearchResult.single(instance, name, packing, time.perf_counter() - began).to_dict()


def run_instances(instances: list[Instance], methods, *, budget: int = 20_000, seed: int = 0,
                  decoder: str = "completion", progress: bool = True, inits: dict | None = None,
                  rows_file: Path | None = None, resume: bool = False,
                  tracker: Tracker | None = None) -> list:  # fmt: skip
    """Every method on every instance. A search method gets seed ``derive(seed, k)`` on instance k and
    stops at the best bound; ``inits`` maps a method label to ``{instance name: priorities}``
    for warm starts (the label is ``"<solver>"`` or ``"<solver>+<anything>"``).

    With ``rows_file`` (`bbopt.rows_file.RowsFile`), each row is appended to it as one JSON
    line as soon as its run ends; an existing non-empty ``rows_file`` is refused before any run
    unless ``resume``, which keeps its rows and runs only the (instance, method) pairs it lacks
    (rows carry ``index``, the instance's place in ``instances``)
    (the seeds are per instance, so the rows are those of an uninterrupted run). Ctrl-C raises
    `Interrupted`, which says how many runs finished (every one of them is in ``rows_file``).
    ``tracker`` (`bbopt.tracking`) gets each new run's ``<method>/bins_above_bound``,
    ``/success``, ``/evaluations`` and ``/seconds`` at the instance's index."""
    check_int(seed, "seed", minimum=0)
    known = known_methods()
    unknown = [m for m in methods if m.split("+")[0] not in known]
    if unknown:
        raise ValueError(f"Invalid solvers: {unknown} (expected names from {list(known)})")
    jobs = [(k, instance, method) for k, instance in enumerate(instances) for method in methods]
    keys = [(k, instance.name, method) for k, instance, method in jobs]
    with contextlib.ExitStack() as stack:
        writer = None
        if rows_file is not None:
            writer = stack.enter_context(RowsFile(rows_file, key=_row_key, resume=resume, check=_is_row))
            foreign = set(writer.finished) - set(keys)
            if foreign:
                raise ValueError(f"Invalid resume: {rows_file} holds runs of other instances or solvers, e.g. "
                                 f"{sorted(foreign)[0]}; resume with the options of the first run")  # fmt: skip
        finished = writer.finished if writer is not None else {}
        rows: list[dict] = []
        bar = stack.enter_context(tqdm(total=len(jobs), desc="bin packing", disable=not progress))
        try:
            for (k, instance, method), key in zip(jobs, keys, strict=True):
                if key in finished:
                    rows.append(finished[key])
                    bar.update()
                    continue
                row = _run(instance, method, budget=budget, seed=derive(seed, k), decoder=decoder, inits=inits)
                row["index"] = k  # the instance's place in the list (generated instances may share a name)
                with _signals_deferred():  # the file and the count agree whenever Ctrl-C lands
                    if writer is not None:
                        writer.append(row)
                    rows.append(row)
                if tracker is not None:
                    tracker.log(_tracked(row, instance), step=k)
                bar.set_postfix_str(f"{instance.name} {method}: {row['bins']} bins (bound {instance.best_bound})")
                bar.update()
        except KeyboardInterrupt:
            raise Interrupted(len(rows), len(jobs), rows_file) from None
    return rows


def _tracked(row: dict, instance: Instance) -> dict:
    values = {"bins_above_bound": row["bins"] - instance.best_bound, "success": float(row["success"]),
              "evaluations": row["evaluations"], "seconds": row["seconds"]}  # fmt: skip
    return {f"{row['solver']}/{name}": value for name, value in values.items()}


def _row_key(row: dict) -> tuple:
    return (row.get("index"), row["instance"], row["solver"])


def _is_row(row: dict) -> bool:
    return {"instance", "solver", "bins"} <= row.keys()


def _run(instance: Instance, method: str, *, budget: int, seed: int, decoder: str, inits: dict | None) -> dict:
    """One row: ``method`` (a heuristic, or a search labelled ``"<solver>[+<anything>]"``) on ``instance``."""
    base = method.split("+")[0]
    if base in HEURISTICS:
        row = _heuristic_row(instance, base)
    else:
        init = (inits or {}).get(method, {}).get(instance.name)
        row = search(instance, base, budget=budget, seed=seed, decoder=decoder, init=init).to_dict()
    row["solver"] = method
    return row


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT (and SIGTERM) back for the block, so Ctrl-C lands before or after it, never
    inside; a no-op where signals cannot be masked (Windows)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def read_rows(path: Path) -> list[dict]:
    """The rows `run_instances` appended to a rows file, one JSON object per line."""
    return read_row_lines(path, check=_is_row)


def summarize(rows: list[dict]) -> list[dict]:
    """Per method: success rate, mean bins above the best bound, mean decodes to success (over
    the successes), mean seconds per instance."""
    summary = []
    for method in dict.fromkeys(r["solver"] for r in rows):
        mine = [r for r in rows if r["solver"] == method]
        bound = [r["optimum"] if r["optimum"] is not None else r["lower_bound"] for r in mine]
        hits = [r["evaluations_to_success"] for r in mine if r["success"]]
        summary.append({
            "solver": method,
            "instances": len(mine),
            "success_rate": float(np.mean([r["success"] for r in mine])),
            "mean_excess_bins": float(np.mean([r["bins"] - b for r, b in zip(mine, bound, strict=True)])),
            "mean_evaluations_to_success": float(np.mean(hits)) if hits else None,
            "mean_seconds": float(np.mean([r["seconds"] for r in mine])),
        })  # fmt: skip
    return summary


def print_table(summary: list[dict], title: str) -> None:
    print(f"\n{title}\n")
    print(f"{'method':<16}{'success':>9}{'bins above bound':>18}{'decodes to success':>20}{'s/instance':>12}")
    for row in summary:
        evaluations = row["mean_evaluations_to_success"]
        cell = f"{evaluations:,.0f}" if evaluations is not None else "-"
        print(f"{row['solver']:<16}{row['success_rate']:>9.1%}{row['mean_excess_bins']:>18.2f}{cell:>20}"
              f"{row['mean_seconds']:>12.2f}")  # fmt: skip


def plot_success(panels: dict[str, list[dict]], path: Path) -> None:
    """One bar chart of success rates per panel (e.g. per instance family)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for axis, (title, summary) in zip(axes[0], panels.items(), strict=True):
        names = [row["solver"] for row in summary]
        rates = [100 * row["success_rate"] for row in summary]
        bars = axis.bar(range(len(names)), rates, color="tab:blue")
        axis.bar_label(bars, fmt="%.0f", fontsize=8)
        axis.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        axis.set_ylim(0, 109)
        axis.set_title(title, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("success rate (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(path: Path, config: dict, summary, rows: list[dict]) -> None:
    write_json(path, {"config": config, "summary": summary, "runs": rows})


def run_and_report(instances: list[Instance], methods, *, label: str, out: Path, config: dict, budget: int,
                   seed: int = 0, decoder: str = "completion", progress: bool = True, rows_file: Path | None = None,
                   resume: bool = False, tracker=None) -> list[dict]:  # fmt: skip
    """The one run-and-report flow of ``bbopt binpacking`` and the demo's slice: `run_instances`,
    then the table (titled with ``label``), ``out/results.json`` (with ``config``) and
    ``out/success.png``; returns the rows."""
    rows = run_instances(instances, methods, budget=budget, seed=seed, decoder=decoder, progress=progress,
                         rows_file=rows_file, resume=resume, tracker=tracker)  # fmt: skip
    summary = summarize(rows)
    print_table(summary, f"bin packing: {label}, {budget:,} decodes per search, {decoder} decoder")
    write_results(out / "results.json", config, summary, rows)
    plot_success({label: summary}, out / "success.png")
    written = [rows_file] if rows_file is not None else []
    print(f"\nwrote {', '.join(str(p) for p in [*written, out / 'results.json'])} and {out / 'success.png'}")
    return rows
