"""Train a classifier on the 0-1 loss itself, under 60% label noise (scikit-learn's digits).

    python examples/zero_one_digits.py --noise 0.6            # ~5 s

The 0-1 loss (misclassification count) has a zero gradient almost everywhere; OVLR trains on
it directly. Being bounded, it is also robust to symmetric label noise, where cross-entropy
memorizes the wrong labels.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt.data import symmetric_label_noise
from bbopt.losses import ZeroOneLoss
from bbopt.policies import MLP
from bbopt.training import accuracy


@dataclass
class Args:
    noise: float = 0.6
    seed: int = 0
    epochs: int = 100
    samples: int = 128


def main(args: Args) -> None:
    images, labels = load_digits(return_X_y=True)
    images, labels = torch.tensor(images, dtype=torch.float32) / 16, torch.tensor(labels)
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(images), generator=generator)
    train, test = order[:1200], order[1200:]
    noisy, _ = symmetric_label_noise(labels[train], args.noise, 10, generator=generator)
    loader = DataLoader(TensorDataset(images[train], noisy), batch_size=64, shuffle=True, generator=generator)
    evaluation = {"eval_data": [(images[test], labels[test])], "metrics": {"accuracy": accuracy}}

    for name in ("OVLR on the 0-1 loss", "backprop on cross-entropy"):
        model = MLP(64, 10, hidden=(128,), activation=nn.ReLU, seed=args.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        if name.startswith("OVLR"):
            solver = bbopt.OVLR(model, optimizer, sigma=1.0, samples=args.samples, seed=args.seed)
            history = bbopt.fit(model, ZeroOneLoss(), loader, epochs=args.epochs, solver=solver, **evaluation)
        else:
            loss = nn.CrossEntropyLoss(reduction="none")
            history = bbopt.fit(model, loss, loader, epochs=args.epochs, optimizer=optimizer, **evaluation)
        print(f"{name:<28} clean test accuracy {history[-1]['accuracy']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    main(Args(**vars(parser.parse_args())))
