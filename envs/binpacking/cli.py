"""``bbopt binpacking``: per-instance priority search (the registered solvers) and FFD/BFD on
generated or BPPLIB instances. Contributed to the ``bbopt`` command line through the
``bbopt.commands`` entry points (`bbopt.plugins`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bbopt import presets
from bbopt.arguments import names, positive_int
from bbopt.cli import Command, add_suite_arguments, plain, suite_config
from bbopt.tracking import tensorboard_or_none

__all__ = ["COMMAND"]

# The options that define the runs (a resume must repeat them).
SUITE_OPTIONS = ("family", "instances", "optima", "items", "count", "budget", "solvers", "decoder", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--family", default="triplet", choices=["triplet", "uniform"], help="generator family")
    source.add_argument("--instances", nargs="+", type=Path, metavar="PATH",
                        help="BPPLIB instance files or directories of them (instead of generated ones)")  # fmt: skip
    parser.add_argument("--optima", type=Path, metavar="FILE",
                        help="known optima: 'name optimum' per line (name = the file's stem)")  # fmt: skip
    parser.add_argument("--items", type=positive_int, default=60)
    parser.add_argument("--count", type=positive_int, default=30, help="generated instances (seeds from --seed on)")
    parser.add_argument("--budget", type=positive_int, default=20_000, help="decodes per instance and solver")
    parser.add_argument("--solvers", type=names, default=",".join([*presets.names("problem"), "ffd", "bfd"]),
                        help=f"comma-separated: {', '.join(presets.names('problem'))}, random (search); "
                             "ffd, bfd (heuristics)")  # fmt: skip
    parser.add_argument("--decoder", default="completion", choices=["completion", "best_fit", "first_fit"])
    add_suite_arguments(parser, out_help="directory for runs.jsonl (runs as they end), results.json, success.png",
                        rows_name="runs.jsonl")  # fmt: skip


def run(args: argparse.Namespace) -> list[dict]:
    from bbopt.envs.binpacking import make_instance, read_instances, read_optima
    from bbopt.envs.binpacking.runs import run_and_report

    if args.optima and not args.instances:
        raise ValueError("--optima goes with --instances")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"Invalid --out: {args.out} is not a directory")
    if args.instances:
        instances = read_instances(args.instances, optima=read_optima(args.optima) if args.optima else None)
        label = f"{len(instances)} instance files"
    else:
        instances = [make_instance(args.family, args.items, args.seed + k) for k in range(args.count)]
        label = f"{args.count} {args.family}-{args.items} instances (seeds {args.seed}..{args.seed + args.count - 1})"
    suite_config(args, SUITE_OPTIONS, "runs.jsonl")
    config = {name: plain(value) for name, value in vars(args).items()}
    with tensorboard_or_none(args.tensorboard) as tracker:
        return run_and_report(instances, args.solvers, label=label, out=args.out, config=config, budget=args.budget,
                              seed=args.seed, decoder=args.decoder, progress=not args.no_progress,
                              rows_file=args.out / "runs.jsonl", resume=args.resume, tracker=tracker)  # fmt: skip


def kept(args: argparse.Namespace, said: str) -> str:
    what = said or f"finished runs are kept in {args.out / 'runs.jsonl'}"
    return what + "; continue with the same command and --resume"


COMMAND = Command("binpacking", "per-instance priority search (OVLR, CEM, ES) and FFD/BFD on generated or BPPLIB "
                  "instances", add_arguments, run, directory=lambda args: args.out, kept=kept)  # fmt: skip
