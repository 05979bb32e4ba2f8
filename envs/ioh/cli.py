"""``bbopt ioh``: bbopt solvers (and any registered one) over an IOH suite: IOHanalyzer logs,
a table, an ECDF plot. Contributed to the ``bbopt`` command line through the
``bbopt.commands`` entry points (`bbopt.plugins`)."""

from __future__ import annotations

import argparse

from bbopt import presets
from bbopt.arguments import names, positive_int
from bbopt.cli import Command, add_suite_arguments, suite_config
from bbopt.tracking import tensorboard_or_none

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
    add_suite_arguments(parser, out_help="directory for ioh/ (IOHanalyzer), summary.json, ecdf.png",
                        rows_name="rows.jsonl")  # fmt: skip


def run(args: argparse.Namespace) -> list[dict]:
    from bbopt.envs.ioh.suite import bbopt_runner, parse_ids, run_and_report

    runners = {name: bbopt_runner(name) for name in args.solvers}
    ids = {key: parse_ids(getattr(args, key), key) for key in ("functions", "instances", "dimensions")}
    suite_config(args, SUITE_OPTIONS, "rows.jsonl")
    config = {k: str(v) for k, v in vars(args).items()}
    with tensorboard_or_none(args.tensorboard) as tracker:
        return run_and_report(runners, out=args.out, config=config, suite=args.suite,
                              budget_per_dimension=args.budget_per_dim, progress=not args.no_progress,
                              runs=args.runs, seed=args.seed, rows_file=args.out / "rows.jsonl",
                              resume=args.resume, tracker=tracker, **ids)  # fmt: skip


def kept(args: argparse.Namespace, said: str) -> str:
    return said or (f"every finished run is kept in {args.out / 'rows.jsonl'}; continue with the same command "
                    "and --resume")  # fmt: skip


COMMAND = Command("ioh", "bbopt solvers over an IOH suite: IOHanalyzer logs, table, ECDF plot", add_arguments, run,
                  directory=lambda args: args.out, kept=kept)  # fmt: skip
