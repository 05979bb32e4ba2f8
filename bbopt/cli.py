"""The ``bbopt`` command line: the core's ``train`` and ``evaluate``, and the subcommands the
problem packages contribute as `Command` objects through the ``bbopt.commands`` entry points
(`bbopt.plugins`): ``demo``, ``ioh``, ``binpacking``, ``aloha``.

Every command reports bad input, an unusable path or a corrupt file as one line on stderr with
exit code 2 (argparse's convention), stops on Ctrl-C with one line saying what was kept (exit
code 130), and holds its output directory's lock (`bbopt.rollout.lock.RunLock`) while it runs.
The helpers here (argument types, `suite_config`, `input_error`) are for every command's module.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from bbopt import plugins
from bbopt.arguments import add_deprecated_spelling, count, positive_int, seconds_or_none
from bbopt.tracking import add_tensorboard_argument

STEP_TIMEOUT_HELP = ("seconds a pool worker may take to answer one step before it is killed, replaced and its "
                     "episodes replayed (default 60; 'none': wait forever)")  # fmt: skip


RESUME_HELP = ("continue an interrupted run in --out: its finished runs ({rows}) are kept and only the rest run; "
               "give the first run's options again")  # fmt: skip


@dataclass(frozen=True)
class Command:
    """One ``bbopt`` subcommand. ``add_arguments(parser)`` fills its parser; ``run(args)`` runs
    it; ``directory(args)``: the directory locked while it runs (None: none); ``kept(args,
    said)``: the one line an interrupted run prints about what it kept (``said``: the run's own
    word, from its KeyboardInterrupt); ``label(args)``: its name in messages (``aloha train``)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], object]
    directory: Callable[[argparse.Namespace], Path | None] = lambda args: None
    kept: Callable[[argparse.Namespace, str], str] = lambda args, said: said or "stopped; nothing partial was written"
    label: Callable[[argparse.Namespace], str] | None = None


def add_suite_arguments(parser: argparse.ArgumentParser, *, out_help: str, rows_name: str) -> None:
    """The options every suite command shares (``bbopt ioh``, ``bbopt binpacking``): --seed,
    --out, --resume (its finished runs kept in ``--out / rows_name``), --tensorboard, --no-progress."""
    parser.add_argument("--seed", type=count, default=0, help="default 0; each run's seed is derived from it")
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--resume", action="store_true", help=RESUME_HELP.format(rows=rows_name))
    add_tensorboard_argument(parser)
    parser.add_argument("--no-progress", action="store_true")


def suite_config(args: argparse.Namespace, options: tuple[str, ...], rows_name: str) -> None:
    """``--out/config.json``: the ``options`` that define a suite's runs (kept in ``--out /
    rows_name``). A new run writes it; ``--resume`` compares it with the options given and
    refuses a difference (the finished rows would not belong to the runs asked for)."""
    import json

    from bbopt.rollout.checkpoint import atomic_write

    config = {name: plain(getattr(args, name)) for name in options}
    path, rows = args.out / "config.json", args.out / rows_name
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


def plain(value):
    """An argument value as JSON takes it (paths as strings)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
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


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per `RunConfig` field (its help, type and choices from the field), defaulting
    to None here and to RunConfig's defaults there, so that a resume can tell an option given
    from one left out; then the session's options."""
    from bbopt.rollout.runs import RENAMED, RunConfig

    for option in fields(RunConfig):
        meta = option.metadata
        parser.add_argument("--" + option.name.replace("_", "-"), type=meta["type"], help=meta["help"],
                            choices=meta["choices"]() if meta["choices"] else None)  # fmt: skip
    for old, new in RENAMED.items():
        add_deprecated_spelling(parser, "--" + old.replace("_", "-"), "--" + new.replace("_", "-"))
    parser.add_argument("--step-timeout", type=seconds_or_none, default=60.0, metavar="SECONDS",
                        help=STEP_TIMEOUT_HELP + "; a session setting, a resume may change it")  # fmt: skip
    run_dir = parser.add_mutually_exclusive_group(required=True)
    run_dir.add_argument("--out", type=Path, help="a new run directory")
    run_dir.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its checkpoint")
    add_tensorboard_argument(parser)
    parser.add_argument("--no-progress", action="store_true")


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="the run directory")
    parser.add_argument("--episodes", type=positive_int, default=10)
    parser.add_argument("--video", type=Path, help="record the first episode (needs GL: MUJOCO_GL=egl)")


def build_parser(commands: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbopt", description="Black-box optimization on a neural policy's output.")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for command in (commands or all_commands()).values():
        command.add_arguments(subcommands.add_parser(command.name, help=command.help))
    _one_line_errors_everywhere(parser)
    return parser


def all_commands() -> dict[str, Command]:
    """The core's commands, then those of the problem packages (`bbopt.plugins.commands`)."""
    core = {command.name: command for command in (TRAIN, EVALUATE)}
    contributed = plugins.commands()
    clash = sorted(core.keys() & contributed.keys())
    if clash:
        raise RuntimeError(f"bbopt.commands entry points {clash} clash with the core's commands")
    return core | contributed


def _one_line_errors_everywhere(parser: argparse.ArgumentParser, command: str = "") -> None:
    """`one_line_errors` on every (sub)command's parser."""
    if command:
        one_line_errors(parser, command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _one_line_errors_everywhere(sub, f"{command} {name}".strip())


def run_train(args: argparse.Namespace) -> dict:
    from bbopt.rollout.runs import RunConfig, train_run

    # the options that define a run; a resumed run keeps its own (only --env-steps may change)
    given = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}
    if args.resume:
        given.pop("env_steps", None)
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"--resume continues the run as it was configured; {flags} cannot change "
                             f"(see {args.resume / 'config.json'}; only --env-steps can)")  # fmt: skip
        summary = train_run(None, args.resume, resume=True, env_steps=args.env_steps, progress=not args.no_progress,
                            step_timeout=args.step_timeout, tensorboard=args.tensorboard)  # fmt: skip
        out = args.resume
    else:
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


def _train_directory(args: argparse.Namespace) -> Path | None:
    if args.resume and not args.resume.is_dir():
        return None  # nothing to resume: train_run says so
    return args.resume or args.out


def _train_kept(args: argparse.Namespace, said: str) -> str:
    return said or f"the run keeps its last checkpoint; continue with `bbopt train --resume {args.resume or args.out}`"


TRAIN = Command("train", "train a policy through a Gymnasium simulator (episode mode)", _train_arguments, run_train,
                directory=_train_directory, kept=_train_kept)  # fmt: skip
EVALUATE = Command("evaluate", "replay a trained policy (bbopt train's run directory)", _evaluate_arguments,
                   run_evaluate)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    commands = all_commands()
    args = build_parser(commands).parse_args(argv)
    command = commands[args.command]
    label = command.label(args) if command.label is not None else command.name
    try:
        with _directory_lock(command.directory(args)):
            command.run(args)
    except KeyboardInterrupt as stop:  # what was kept: the command's own word (bin packing), else its default
        print(f"bbopt {label}: interrupted: {command.kept(args, str(stop))}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:  # bad input, an unusable path, a corrupt file: one line
        input_error(label, " ".join(str(error).split()))
        return 2
    return 0


def _directory_lock(directory: Path | None):
    """The lock of the directory a command writes (none for commands that write a file)."""
    from bbopt.rollout.lock import RunLock

    return contextlib.nullcontext() if directory is None else RunLock(directory)


if __name__ == "__main__":
    raise SystemExit(main())
