"""The ``bbopt`` command line: ``bbopt demo``, ``ioh``, ``binpacking``, ``train``, ``evaluate``, ``aloha``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bbopt import presets


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


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
    ioh.add_argument("--solvers", default=",".join(presets.names("problem")),
                     help=f"comma-separated, from {','.join(presets.names('problem'))}")  # fmt: skip
    ioh.add_argument("--runs", type=positive_int, default=1)
    ioh.add_argument("--seed", type=int, default=0)
    ioh.add_argument("--out", type=Path, required=True, help="directory for ioh/ (IOHanalyzer), summary.json, ecdf.png")
    ioh.add_argument("--no-progress", action="store_true")
    packing = commands.add_parser(
        "binpacking", help="per-instance priority search (OVLR, CEM, ES) and FFD/BFD on generated or BPPLIB instances"
    )
    one_line_errors(packing, "binpacking")
    source = packing.add_mutually_exclusive_group()
    source.add_argument("--family", default="triplet", choices=["triplet", "uniform"], help="generator family")
    source.add_argument("--instances", nargs="+", type=Path, metavar="PATH",
                        help="BPPLIB instance files or directories of them (instead of generated ones)")  # fmt: skip
    packing.add_argument("--optima", type=Path, metavar="FILE",
                         help="known optima: 'name optimum' per line (name = the file's stem)")  # fmt: skip
    packing.add_argument("--items", type=positive_int, default=60)
    packing.add_argument("--count", type=positive_int, default=30, help="generated instances (seeds from --seed on)")
    packing.add_argument("--budget", type=positive_int, default=20_000, help="decodes per instance and solver")
    packing.add_argument("--solvers", default=",".join([*presets.names("problem"), "ffd", "bfd"]),
                         help=f"comma-separated: {', '.join(presets.names('problem'))}, random (search); "
                              "ffd, bfd (heuristics)")  # fmt: skip
    packing.add_argument("--decoder", default="completion", choices=["completion", "best_fit", "first_fit"])
    packing.add_argument("--seed", type=int, default=0)
    packing.add_argument("--out", type=Path, required=True,
                         help="directory for runs.jsonl (runs as they end), results.json, success.png")  # fmt: skip
    packing.add_argument("--no-progress", action="store_true")
    train = commands.add_parser("train", help="train a policy through a Gymnasium simulator (episode mode)")
    train.add_argument("--env", default="HalfCheetah-v5", help="a Gymnasium id")
    train.add_argument("--solver", default="ovlr", choices=presets.names("episodes"),
                       help="pes: parameter-space ES (the baseline)")  # fmt: skip
    train.add_argument("--population", type=positive_int, default=64, help="episodes per update (even)")
    train.add_argument("--env-steps", type=step_count, help="total env steps, e.g. 2e6 (default 2e6; with --resume: "
                       "a new total, else the run's own)")  # fmt: skip
    train.add_argument("--sigma", type=float, help="noise scale (default per solver)")
    train.add_argument("--lr", type=float, help="Adam's step (default per solver)")
    train.add_argument("--credit", choices=["episode", "to_go"],
                       help="to_go: each step credited with the cost still to come (OVLR, ES)")  # fmt: skip
    train.add_argument("--lr-schedule", default="constant", choices=["constant", "linear"],
                       help="linear: Adam's step decays to 0 at --env-steps")  # fmt: skip
    train.add_argument("--hidden", default="64,64", help="hidden widths ('' for a linear policy)")
    train.add_argument("--evaluator", default="auto", choices=["auto", "serial", "process", "ray"],
                       help="auto: worker processes on 2+ CPUs, else serial")  # fmt: skip
    train.add_argument("--workers", type=positive_int, help="worker processes / Ray actors (default: CPU count)")
    train.add_argument("--address", help="Ray cluster address (default: start a local one)")
    train.add_argument("--eval-every", type=int, default=10, help="updates between noiseless evaluations")
    train.add_argument("--eval-episodes", type=int, default=5)
    train.add_argument("--checkpoint-every", type=int, default=10, help="updates between checkpoints")
    train.add_argument("--seed", type=int, default=0)
    run_dir = train.add_mutually_exclusive_group(required=True)
    run_dir.add_argument("--out", type=Path, help="a new run directory")
    run_dir.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its checkpoint")
    train.add_argument("--no-progress", action="store_true")
    from bbopt.envs.aloha.cli import add_parser as add_aloha_parser

    add_aloha_parser(commands)
    evaluate = commands.add_parser("evaluate", help="replay a trained policy (bbopt train's run directory)")
    evaluate.add_argument("run", type=Path, help="the run directory")
    evaluate.add_argument("--episodes", type=positive_int, default=10)
    evaluate.add_argument("--video", type=Path, help="record the first episode (needs GL: MUJOCO_GL=egl)")
    return parser


def step_count(text: str) -> int:
    """argparse type: a number of env steps, e.g. 2e6."""
    from bbopt.rollout.runs import steps

    try:
        return steps(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_train(args: argparse.Namespace) -> dict:
    from bbopt.rollout.runs import RunConfig, train_run

    if args.resume:
        summary = train_run(None, args.resume, resume=True, env_steps=args.env_steps, progress=not args.no_progress)
        out = args.resume
    else:
        hidden = [int(w) for w in args.hidden.split(",") if w.strip()]
        config = RunConfig(env=args.env, solver=args.solver, population=args.population,
                           env_steps=args.env_steps or 2_000_000,
                           sigma=args.sigma, lr=args.lr, lr_schedule=args.lr_schedule, credit=args.credit,
                           hidden=hidden, evaluator=args.evaluator,
                           workers=args.workers, address=args.address, eval_every=args.eval_every,
                           eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
                           seed=args.seed)  # fmt: skip
        summary = train_run(config, args.out, progress=not args.no_progress)
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
    """Bad input (a malformed instance file, an unknown solver, an --out that holds runs) ends
    with one line and status 2; Ctrl-C with one line and status 130, every finished run kept
    in ``--out/runs.jsonl``."""
    from bbopt.envs.binpacking.runs import Interrupted

    try:
        return _run_binpacking(args)
    except Interrupted as stop:
        print(f"bbopt binpacking: interrupted: {stop}", file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, OSError) as error:
        raise input_error("binpacking", error) from None


def _run_binpacking(args: argparse.Namespace) -> list[dict]:
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
    methods = [m for m in args.solvers.split(",") if m]
    rows = run_instances(instances, methods, budget=args.budget, seed=args.seed, decoder=args.decoder,
                         progress=not args.no_progress, rows_file=args.out / "runs.jsonl")  # fmt: skip
    summary = summarize(rows)
    print_table(summary, f"bin packing: {label}, {args.budget:,} decodes per search, {args.decoder} decoder")
    config = {k: (list(map(str, v)) if isinstance(v, list) else str(v) if isinstance(v, Path) else v)
              for k, v in vars(args).items()}  # fmt: skip
    write_results(args.out / "results.json", config, summary, rows)
    plot_success({label: summary}, args.out / "success.png")
    print(f"\nwrote {args.out / 'runs.jsonl'}, {args.out / 'results.json'} and {args.out / 'success.png'}")
    return rows


def run_ioh(args: argparse.Namespace) -> list[dict]:
    from bbopt.envs.ioh.suite import bbopt_runner, parse_ids, plot_ecdf, run_suite, summarize, write_summary

    runners = {name: bbopt_runner(name) for name in args.solvers.split(",")}
    ids = {key: parse_ids(getattr(args, key), key) for key in ("functions", "instances", "dimensions")}
    rows = run_suite(runners, suite=args.suite, budget_per_dimension=args.budget_per_dim, runs=args.runs,
                     out=args.out, seed=args.seed, progress=not args.no_progress, **ids)  # fmt: skip
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from bbopt.demo import run_demo

        if args.dimension < 2:
            raise SystemExit("bbopt demo: --dimension must be >= 2 (Rosenbrock couples neighbours)")
        run_demo(args.out, dimension=args.dimension, budget=args.budget, seed=args.seed, progress=not args.no_progress)
        return 0
    runners = {"ioh": run_ioh, "binpacking": run_binpacking, "train": run_train, "evaluate": run_evaluate,
               "aloha": run_aloha}  # fmt: skip
    command = f"aloha {args.aloha_command}" if args.command == "aloha" else args.command
    try:
        runners[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:  # bad input: a message, not a traceback
        raise SystemExit(f"bbopt {command}: {error}") from error
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
