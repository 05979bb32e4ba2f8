"""Robust regression: fit sin(x) through 20% gross outliers with a truncated loss.

    python examples/robust_regression.py            # ~10 s

The truncated loss min((f - y)^2, cap) ignores the outliers, but its gradient is exactly zero
wherever a residual exceeds the cap, so backprop stalls; OVLR estimates the gradient of the
smoothed loss from the loss values alone and fits the sine.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt.data import sine_with_outliers
from bbopt.losses import TruncatedLoss
from bbopt.policies import MLP
from bbopt.training import squared_error


@dataclass
class Args:
    seed: int = 0
    epochs: int = 600
    cap: float = 0.01  # residuals beyond 0.1 cost the same: outliers are ignored
    sigma: float = 0.2
    samples: int = 16


def fit(args: Args, use_ovlr: bool) -> float:
    inputs, targets, _ = sine_with_outliers(
        1000, outlier_fraction=0.2, generator=torch.Generator().manual_seed(args.seed)
    )
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=128, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    grid = torch.linspace(-6, 6, 1000)[:, None]
    test = [(grid / 6, torch.sin(grid))]  # the clean signal
    model = MLP(1, 1, hidden=(64, 64), seed=args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    training = {"solver": bbopt.OVLR(model, optimizer, sigma=args.sigma, samples=args.samples, seed=args.seed)}
    if not use_ovlr:
        training = {"optimizer": optimizer}  # backprop on the same truncated loss
    history = bbopt.fit(model, TruncatedLoss(args.cap), loader, epochs=args.epochs, eval_data=test,
                        metrics={"mse": squared_error}, scheduler=scheduler, **training)  # fmt: skip
    return history[-1]["mse"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    args = Args(**vars(parser.parse_args()))
    print(f"OVLR,     truncated loss: test MSE {fit(args, use_ovlr=True):.2e}")
    print(f"backprop, truncated loss: test MSE {fit(args, use_ovlr=False):.2e}")
