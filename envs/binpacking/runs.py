"""Run solvers and heuristics over a set of instances; summarize, tabulate, plot.

Shared by ``bbopt binpacking``, ``bbopt demo`` and ``benchmarks/binpacking.py``: one row per
(instance, method) with bins, lower bound, known optimum, success, decodes to success and
seconds; one summary row per method.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import bbopt
from bbopt.envs.binpacking.heuristics import HEURISTICS
from bbopt.envs.binpacking.instance import Instance
from bbopt.envs.binpacking.search import SearchResult, search

__all__ = ["known_methods", "plot_success", "print_table", "run_instances", "summarize", "write_results"]


def known_methods() -> tuple[str, ...]:
    """Every registered solver with a fixed-problem preset, the random control, the heuristics."""
    return (*bbopt.presets.names("problem"), "random", *HEURISTICS)


def _heuristic_row(instance: Instance, name: str) -> dict:
    began = time.perf_counter()
    packing = HEURISTICS[name](instance)
    return SearchResult.single(instance, name, packing, time.perf_counter() - began).to_dict()


def run_instances(instances: list[Instance], methods, *, budget: int = 20_000, seed: int = 0,
                  decoder: str = "completion", progress: bool = True, inits: dict | None = None) -> list:  # fmt: skip
    """Every method on every instance. A search method gets seed ``seed + k`` on instance k and
    stops at the best bound; ``inits`` maps a method label to ``{instance name: priorities}``
    for warm starts (the label is ``"<solver>"`` or ``"<solver>+<anything>"``)."""
    known = known_methods()
    unknown = [m for m in methods if m.split("+")[0] not in known]
    if unknown:
        raise ValueError(f"Invalid solvers: {unknown} (expected names from {list(known)})")
    rows = []
    bar = tqdm(total=len(instances) * len(methods), desc="bin packing", disable=not progress)
    for k, instance in enumerate(instances):
        for method in methods:
            base = method.split("+")[0]
            if base in HEURISTICS:
                row = _heuristic_row(instance, base)
            else:
                init = (inits or {}).get(method, {}).get(instance.name)
                row = search(instance, base, budget=budget, seed=seed + k, decoder=decoder, init=init).to_dict()
            row["solver"] = method
            rows.append(row)
            bar.set_postfix_str(f"{instance.name} {method}: {row['bins']} bins (bound {instance.best_bound})")
            bar.update()
    bar.close()
    return rows


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "summary": summary, "runs": rows}, indent=1))
