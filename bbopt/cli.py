"""The ``bbopt`` command line: ``bbopt demo``, ``ioh``, ``binpacking``, ``train``, ``evaluate``, ``aloha``.

Every command reports bad input, an unusable path or a corrupt file as one line on stderr with
exit code 2 (argparse's convention), stops on Ctrl-C with one line saying what was kept (exit
code 130), and holds its output directory's lock (`bbopt.rollout.lock.RunLock`) while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from bbopt import presets
from bbopt.tracking import add_tensorboard_argument, tensorboard_or_none

# `bbopt train` options that define a run; a resumed run keeps its own (--env-steps may change).
RUN_OPTIONS = ("env", "solver", "population", "sigma", "lr", "credit", "lr_schedule", "hidden", "evaluator",
               "workers", "address", "eval_every", "eval_episodes", "checkpoint_every", "seed", "threads")  # fmt: skip


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def count(text: str) -> int:
    """argparse type: an int >= 0 (0 switches the thing off)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text}")
    return value


def seconds_or_none(text: str) -> float | None:
    """argparse type: a number of seconds > 0 (at most 1e6), or "none" (no limit)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1e6:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 1e6] or 'none', got {text!r}")
    return value


STEP_TIMEOUT_HELP = ("seconds a pool worker may take to answer one step before it is killed, replaced and its "
                     "episodes replayed (default 60; 'none': wait forever)")  # fmt: skip


RESUME_HELP = ("continue an interrupted run in --out: its finished runs ({rows}) are kept and only the rest run; "
               "give the first run's options again")  # fmt: skip

# The options that define the runs of `bbopt ioh` / `bbopt binpacking` (a resume must repeat them).
SUITE_OPTIONS = {
    "ioh": ("suite", "functions", "instances", "dimensions", "budget_per_dim", "solvers", "runs", "seed"),
    "binpacking": ("family", "instances", "optima", "items", "count", "budget", "solvers", "decoder", "seed"),
}


def suite_config(args: argparse.Namespace) -> None:
    """``--out/config.json``: the options that define the runs. A new run writes it; ``--resume``
    compares it with the options given and refuses a difference (the finished rows would not
    belong to the runs asked for)."""
    import json

    from bbopt.rollout.checkpoint import atomic_write

    config = {name: _plain(getattr(args, name)) for name in SUITE_OPTIONS[args.command]}
    path, rows = args.out / "config.json", args.out / ("rows.jsonl" if args.command == "ioh" else "runs.jsonl")
    holds_rows = rows.is_file() and rows.stat().st_size > 0
    if not args.resume and holds_rows:  # refused before the first run's config is replaced
        raise ValueError(f"Invalid --out: {rows} already holds finished runs; continue them with --resume (and the "
                         "first run's options), or choose another --out")  # fmt: skip
    if args.resume and path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a run's config ({error})") from None
        changed = [name for name in config if saved.get(name) != config[name]]
        if changed:
            flags = ", ".join(f"--{name.replace('_', '-')} (was {saved.get(name)!r})" for name in changed)
            raise ValueError(f"--resume continues the runs in {args.out} as they were defined; these differ: {flags}")
        return
    if args.resume and holds_rows:
        raise ValueError(f"--resume: {path} is missing, so the finished runs cannot be matched to these options")
    atomic_write(path, lambda handle: handle.write(json.dumps(config, indent=2).encode()))


def _plain(value):
    """An argument value as JSON takes it (paths as strings)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def names(text: str) -> list[str]:
    """argparse type: a comma-separated, non-empty list of names."""
    listed = [name.strip() for name in text.split(",") if name.strip()]
    if not listed:
        raise argparse.ArgumentTypeError(f"expected at least one name, got {text!r}")
    return listed


def input_error(command: str, message) -> SystemExit:
    """Report bad input as one line on stderr, ``bbopt <command>: <message>``, and the SystemExit
    (status 2, argparse's status for a usage error) to raise."""
    print(f"bbopt {command}: " + " ".join(str(message).splitlines()), file=sys.stderr)
    return SystemExit(2)


def one_line_errors(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """``parser``, its argument errors reported by `input_error` (one line, status 2) instead of
    argparse's usage block."""

    def error(message: str):
        raise input_error(command, f"{message} (see bbopt {command} --help)")

    parser.error = error
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbopt", description="Black-box optimization on a neural policy's output.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="OVLR, CEM and ES side by side on sphere, Rosenbrock and Rastrigin")
    demo.add_argument("--out", type=Path, required=True, help="directory for results.json and convergence.png")
    demo.add_argument("--dimension", type=positive_int, default=10)
    demo.add_argument("--budget", type=positive_int, default=16_000, help="evaluations per run")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="switch the progress bars off")
    ioh = commands.add_parser("ioh", help="bbopt solvers over an IOH suite: IOHanalyzer logs, table, ECDF plot")
    ioh.add_argument("--suite", default="bbob", choices=["bbob", "pbo", "graph"])
    ioh.add_argument("--functions", default="1-24", help="ids, e.g. 1-24 or 1,5,8")
    ioh.add_argument("--instances", default="1-5")
    ioh.add_argument("--dimensions", default="5,20")
    ioh.add_argument("--budget-per-dim", type=positive_int, default=1000)
    ioh.add_argument("--solvers", type=names, default=",".join(presets.names("problem")),
                     help=f"comma-separated, from {','.join(presets.names('problem'))}")  # fmt: skip
    ioh.add_argument("--runs", type=positive_int, default=1)
    ioh.add_argument("--seed", type=int, default=0)
    ioh.add_argument("--out", type=Path, required=True, help="directory for ioh/ (IOHanalyzer), summary.json, ecdf.png")
    ioh.add_argument("--resume", action="store_true", help=RESUME_HELP.format(rows="rows.jsonl"))
    add_tensorboard_argument(ioh)
    ioh.add_argument("--no-progress", action="store_true")
    packing = commands.add_parser(
        "binpacking", help="per-instance priority search (OVLR, CEM, ES) and FFD/BFD on generated or BPPLIB instances"
    )
    source = packing.add_mutually_exclusive_group()
    source.add_argument("--family", default="triplet", choices=["triplet", "uniform"], help="generator family")
    source.add_argument("--instances", nargs="+", type=Path, metavar="PATH",
                        help="BPPLIB instance files or directories of them (instead of generated ones)")  # fmt: skip
    packing.add_argument("--optima", type=Path, metavar="FILE",
                         help="known optima: 'name optimum' per line (name = the file's stem)")  # fmt: skip
    packing.add_argument("--items", type=positive_int, default=60)
    packing.add_argument("--count", type=positive_int, default=30, help="generated instances (seeds from --seed on)")
    packing.add_argument("--budget", type=positive_int, default=20_000, help="decodes per instance and solver")
    packing.add_argument("--solvers", type=names, default=",".join([*presets.names("problem"), "ffd", "bfd"]),
                         help=f"comma-separated: {', '.join(presets.names('problem'))}, random (search); "
                              "ffd, bfd (heuristics)")  # fmt: skip
    packing.add_argument("--decoder", default="completion", choices=["completion", "best_fit", "first_fit"])
    packing.add_argument("--seed", type=int, default=0)
    packing.add_argument("--out", type=Path, required=True,
                         help="directory for runs.jsonl (runs as they end), results.json, success.png")  # fmt: skip
    packing.add_argument("--resume", action="store_true", help=RESUME_HELP.format(rows="runs.jsonl"))
    add_tensorboard_argument(packing)
    packing.add_argument("--no-progress", action="store_true")
    train = commands.add_parser("train", help="train a policy through a Gymnasium simulator (episode mode)")
    # Run options default to None here and to RunConfig's defaults there, so that a resume can
    # tell an option given from one left out.
    train.add_argument("--env", help="a Gymnasium id (default HalfCheetah-v5)")
    train.add_argument("--solver", choices=presets.names("episodes"),
                       help="default ovlr; pes: parameter-space ES (the baseline)")  # fmt: skip
    train.add_argument("--population", type=positive_int, help="episodes per update (even; default 64)")
    train.add_argument("--env-steps", type=step_count, help="total env steps, e.g. 2e6 (default 2e6; with --resume: "
                       "a new total, else the run's own)")  # fmt: skip
    train.add_argument("--sigma", type=float, help="noise scale (default per solver)")
    train.add_argument("--lr", type=float, help="Adam's step (default per solver)")
    train.add_argument("--credit", choices=["episode", "to_go"],
                       help="to_go: each step credited with the cost still to come (OVLR, ES)")  # fmt: skip
    train.add_argument("--lr-schedule", choices=["constant", "linear"],
                       help="default constant; linear: Adam's step decays to 0 at --env-steps")  # fmt: skip
    train.add_argument("--hidden", help="hidden widths (default 64,64; '' for a linear policy)")
    train.add_argument("--evaluator", choices=["auto", "serial", "process", "ray"],
                       help="default auto: worker processes on 2+ CPUs, else serial")  # fmt: skip
    train.add_argument("--workers", type=positive_int, help="worker processes / Ray actors (default: CPU count)")
    train.add_argument("--address", help="Ray cluster address (default: start a local one)")
    train.add_argument("--eval-every", type=count, help="updates between noiseless evaluations (default 10; 0: none)")
    train.add_argument("--eval-episodes", type=count, help="episodes per evaluation (default 5; 0: none)")
    train.add_argument("--checkpoint-every", type=count,
                       help="updates between checkpoints (default 10; 0: only at the end)")  # fmt: skip
    train.add_argument("--seed", type=count, help="default 0")
    train.add_argument("--threads", type=positive_int,
                       help="torch threads for every session of the run (default: the current count; a resume "
                            "uses the run's own, so that it continues bit for bit)")  # fmt: skip
    train.add_argument("--step-timeout", type=seconds_or_none, default=60.0, metavar="SECONDS",
                       help=STEP_TIMEOUT_HELP + "; a session setting, a resume may change it")  # fmt: skip
    run_dir = train.add_mutually_exclusive_group(required=True)
    run_dir.add_argument("--out", type=Path, help="a new run directory")
    run_dir.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its checkpoint")
    add_tensorboard_argument(train)
    train.add_argument("--no-progress", action="store_true")
    from bbopt.envs.aloha.cli import add_parser as add_aloha_parser

    add_aloha_parser(commands)
    evaluate = commands.add_parser("evaluate", help="replay a trained policy (bbopt train's run directory)")
    evaluate.add_argument("run", type=Path, help="the run directory")
    evaluate.add_argument("--episodes", type=positive_int, default=10)
    evaluate.add_argument("--video", type=Path, help="record the first episode (needs GL: MUJOCO_GL=egl)")
    _one_line_errors_everywhere(parser)
    return parser


def _one_line_errors_everywhere(parser: argparse.ArgumentParser, command: str = "") -> None:
    """`one_line_errors` on every (sub)command's parser."""
    if command:
        one_line_errors(parser, command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _one_line_errors_everywhere(sub, f"{command} {name}".strip())


def step_count(text: str) -> int:
    """argparse type: a number of env steps, e.g. 2e6."""
    from bbopt.rollout.runs import steps

    try:
        return steps(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_train(args: argparse.Namespace) -> dict:
    from bbopt.rollout.runs import RunConfig, train_run

    given = {name: getattr(args, name) for name in RUN_OPTIONS if getattr(args, name) is not None}
    if args.resume:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"--resume continues the run as it was configured; {flags} cannot change "
                             f"(see {args.resume / 'config.json'}; only --env-steps can)")  # fmt: skip
        summary = train_run(None, args.resume, resume=True, env_steps=args.env_steps, progress=not args.no_progress,
                            step_timeout=args.step_timeout, tensorboard=args.tensorboard)  # fmt: skip
        out = args.resume
    else:
        if "hidden" in given:
            try:
                given["hidden"] = [int(w) for w in given["hidden"].split(",") if w.strip()]
            except ValueError:
                raise ValueError(f"Invalid hidden: {args.hidden!r} (expected widths like 64,64)") from None
        if args.env_steps is not None:
            given["env_steps"] = args.env_steps
        summary = train_run(RunConfig(**given), args.out, progress=not args.no_progress,
                            step_timeout=args.step_timeout, tensorboard=args.tensorboard)  # fmt: skip
        out = args.out
    rate, final = summary["env_steps_per_second"], summary["final_eval_return"]
    print(f"\n{summary['env']} {summary['solver']}: {summary['env_steps']:,} env steps, {summary['updates']} updates, "
          f"{rate:,.0f} steps/s; noiseless return {final:.1f}")  # fmt: skip
    print(f"wrote {out}/ (config.json, checkpoint.pt, curve.csv, curve.png, policy.pt, summary.json)")
    return summary


def run_evaluate(args: argparse.Namespace) -> dict:
    from bbopt.rollout.runs import evaluate_run

    result = evaluate_run(args.run, episodes=args.episodes, video=args.video)
    print(f"{args.run}: return {result['return_mean']:.1f} +- {result['return_std']:.1f} over {args.episodes} episodes")
    if result["video"]:
        print(f"video: {result['video']}")
    return result


def run_binpacking(args: argparse.Namespace) -> list[dict]:
    from bbopt.envs.binpacking import make_instance, read_instances, read_optima
    from bbopt.envs.binpacking.runs import plot_success, print_table, run_instances, summarize, write_results

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
    methods = args.solvers
    suite_config(args)
    with tensorboard_or_none(args.tensorboard) as tracker:
        rows = run_instances(instances, methods, budget=args.budget, seed=args.seed, decoder=args.decoder,
                             progress=not args.no_progress, rows_file=args.out / "runs.jsonl",
                             resume=args.resume, tracker=tracker)  # fmt: skip
    summary = summarize(rows)
    print_table(summary, f"bin packing: {label}, {args.budget:,} decodes per search, {args.decoder} decoder")
    config = {name: _plain(value) for name, value in vars(args).items()}
    write_results(args.out / "results.json", config, summary, rows)
    plot_success({label: summary}, args.out / "success.png")
    print(f"\nwrote {args.out / 'runs.jsonl'}, {args.out / 'results.json'} and {args.out / 'success.png'}")
    return rows


def run_ioh(args: argparse.Namespace) -> list[dict]:
    from bbopt.envs.ioh.suite import bbopt_runner, parse_ids, plot_ecdf, run_suite, summarize, write_summary

    runners = {name: bbopt_runner(name) for name in args.solvers}
    ids = {key: parse_ids(getattr(args, key), key) for key in ("functions", "instances", "dimensions")}
    suite_config(args)
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


def run_aloha(args: argparse.Namespace) -> dict:
    from bbopt.envs.aloha.cli import run

    return run(args)


def run_demo(args: argparse.Namespace) -> None:
    from bbopt.demo import run_demo

    if args.dimension < 2:
        raise ValueError("--dimension must be >= 2 (Rosenbrock couples neighbours)")
    run_demo(args.out, dimension=args.dimension, budget=args.budget, seed=args.seed, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {"demo": run_demo, "ioh": run_ioh, "binpacking": run_binpacking, "train": run_train,
               "evaluate": run_evaluate, "aloha": run_aloha}  # fmt: skip
    command = f"aloha {args.aloha_command}" if args.command == "aloha" else args.command
    try:
        with _directory_lock(args):
            runners[args.command](args)
    except KeyboardInterrupt as stop:  # what was kept: the command's own word (bin packing), else ours
        print(f"bbopt {command}: interrupted: {_kept(args, str(stop))}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:  # bad input, an unusable path, a corrupt file: one line
        input_error(command, " ".join(str(error).split()))
        return 2
    return 0


def _directory_lock(args: argparse.Namespace):
    """The lock of the directory the command writes (none for commands that write a file)."""
    from bbopt.rollout.lock import RunLock

    if args.command == "train":
        directory = args.resume or args.out
        if args.resume and not directory.is_dir():
            return contextlib.nullcontext()  # nothing to resume: train_run says so
        return RunLock(directory)
    if args.command in ("demo", "ioh", "binpacking"):
        return RunLock(args.out)
    return contextlib.nullcontext()


def _kept(args: argparse.Namespace, said: str = "") -> str:
    """What an interrupted command leaves behind, for its one-line message (``said``: the
    command's own word on it, as bin packing's `Interrupted` gives)."""
    if args.command == "binpacking":
        kept = said or f"finished runs are kept in {args.out / 'runs.jsonl'}"
        return kept + "; continue with the same command and --resume"
    if said:
        return said
    if args.command == "train":
        run = args.resume or args.out
        return f"the run keeps its last checkpoint; continue with `bbopt train --resume {run}`"
    if args.command == "ioh":
        return f"every finished run is kept in {args.out / 'rows.jsonl'}; continue with the same command and --resume"
    return "stopped; nothing partial was written"


if __name__ == "__main__":
    raise SystemExit(main())
