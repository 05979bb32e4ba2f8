"""Quick start: minimize a black-box function with OVLR, then swap in CEM or ES.

    python examples/quickstart.py --solver ovlr --steps 400

The objective never needs a gradient: here it is rounded to a grid (piecewise constant, so
backprop would see zero gradients everywhere).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

import bbopt
from bbopt.policies import LearnedVector


@dataclass
class Args:
    solver: str = "ovlr"
    dimension: int = 8
    steps: int = 400
    samples: int = 32
    seed: int = 0


def objective(candidates: torch.Tensor) -> torch.Tensor:
    """Squared distance to (1, 2, ..., d) after rounding to a 0.05 grid: no useful gradient."""
    target = torch.arange(1, candidates.shape[-1] + 1, dtype=candidates.dtype)
    return ((torch.round(candidates / 0.05) * 0.05 - target) ** 2).sum(-1)


def main(args: Args) -> None:
    policy = LearnedVector(args.dimension)  # starts at 0
    if args.solver == "cem":
        optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)  # mu <- elite mean
        sigma = 1.0  # CEM adapts it from the elite spread
    else:
        optimizer = torch.optim.Adam(policy.parameters(), lr=0.1)
        # Learned: shrinks as the search closes in, but not below the grid, where the loss is flat.
        sigma = bbopt.sigma.Learned(1.0, lr=0.1, floor=0.05)
    solver = bbopt.make_solver(args.solver, policy, optimizer, sigma=sigma, samples=args.samples, seed=args.seed)

    for step in range(args.steps):
        candidates = solver.ask()  # [samples, dimension]
        stats = solver.tell(objective(candidates))  # one VJP, one optimizer step
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  mean loss {stats['loss_mean']:.4f}  sigma {stats['sigma']:.4f}")
    print("policy output:", [round(v, 2) for v in policy().tolist()])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    main(Args(**vars(parser.parse_args())))
