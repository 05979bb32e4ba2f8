"""``bbopt ioh``: bbopt solvers (and any registered one) over an IOH suite: IOHanalyzer logs,
a table, an ECDF plot. Contributed to the ``bbopt`` command line through the
``bbopt.commands`` entry points (`bbopt.plugins`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bbopt import presets
from bbopt.arguments import names, positive_int
from bbopt.cli import RESUME_HELP, Command, suite_config
from bbopt.tracking import add_tensorboard_argument, tensorboard_or_none

__all__ = ["COMMAND"]

# The options that define the runs (a resume must repeat them).
SUITE_OPTIONS = ("suite", "functions", "instances", "dimensions", "budget_per_dim", "solvers", "runs", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="bbob", choices=["bbob", "pbo", "graph"])
    parser.add_argument("--functions", default="1-24", help="ids, e.g. 1-24 or 1,5,8")
    parser.add_argument("--instances", default="1-5")
    parser.add_argument("--dimensions", default="5,20")
    parser.add_argument("--budget-per-dim", type=positive_int, default=1000)
    parser.add_argument("--solvers", type=names, default=",".join(presets.names("problem")),
                        help=f"comma-separated, from {','.join(presets.names('problem'))}")  # fmt: skip
    parser.add_argument("--runs", type=positive_int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for ioh/ (IOHanalyzer), summary.json, ecdf.png")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help=RESUME_HELP.format(rows="rows.jsonl"))
    add_tensorboard_argument(parser)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> list[dict]:
    from bbopt.envs.ioh.suite import bbopt_runner, parse_ids, plot_ecdf, run_suite, summarize, write_summary

    runners = {name: bbopt_runner(name) for name in args.solvers}
    ids = {key: parse_ids(getattr(args, key), key) for key in ("functions", "instances", "dimensions")}
    suite_config(args, SUITE_OPTIONS, "rows.jsonl")
    with tensorboard_or_none(args.tensorboard) as tracker:
        rows = run_suite(runners, suite=args.suite, budget_per_dimension=args.budget_per_dim, runs=args.runs,
                         out=args.out, seed=args.seed, progress=not args.no_progress,
                         rows_file=args.out / "rows.jsonl", resume=args.resume, tracker=tracker, **ids)  # fmt: skip
    summary = summarize(rows)
    print(f"\n{args.suite}: final ECDF value (fraction of (run, target) pairs, 51 targets 1e2..1e-8)\n")
    print(f"{'solver':<10}{'d':>4}{'runs':>6}{'ECDF':>8}{'solved 1e-8':>13}{'seconds':>9}")
    for row in summary:
        print(f"{row['solver']:<10}{row['dimension']:>4}{row['runs']:>6}{row['score']:>8.3f}"
              f"{row['solved_1e-8']:>13.2f}{row['seconds']:>9.1f}")  # fmt: skip
    write_summary(rows, summary, args.out / "summary.json", {k: str(v) for k, v in vars(args).items()})
    if args.suite != "bbob":
        print("(ECDF targets are precisions; for PBO/GRAPH see best_precision per run in summary.json)")
    plot_ecdf(rows, args.out / "ecdf.png", args.budget_per_dim)
    print(f"\nwrote {args.out / 'ioh'} (IOHanalyzer), {args.out / 'summary.json'}, {args.out / 'ecdf.png'}")
    return rows


def kept(args: argparse.Namespace, said: str) -> str:
    return said or (f"every finished run is kept in {args.out / 'rows.jsonl'}; continue with the same command "
                    "and --resume")  # fmt: skip


COMMAND = Command("ioh", "bbopt solvers over an IOH suite: IOHanalyzer logs, table, ECDF plot", add_arguments, run,
                  directory=lambda args: args.out, kept=kept)  # fmt: skip
