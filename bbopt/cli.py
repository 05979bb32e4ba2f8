"""The ``bbopt`` command line: ``bbopt demo`` (later: ``ioh``, ``binpacking``, ``train``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bbopt", description="Black-box optimization on a neural policy's output.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="OVLR, CEM and ES side by side on sphere, Rosenbrock and Rastrigin")
    demo.add_argument("--out", type=Path, required=True, help="directory for results.json and convergence.png")
    demo.add_argument("--dimension", type=_positive_int, default=10)
    demo.add_argument("--budget", type=_positive_int, default=16_000, help="evaluations per run")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="switch the progress bars off")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from bbopt.demo import run_demo

        if args.dimension < 2:
            raise SystemExit("bbopt demo: --dimension must be >= 2 (Rosenbrock couples neighbours)")
        run_demo(args.out, dimension=args.dimension, budget=args.budget, seed=args.seed, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
