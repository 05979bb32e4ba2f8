"""Unbiased randomized VJPs (`bbopt.vjp.randomize`): backward time, added variance, accuracy.

(a) Backward seconds per step of the MLP 784-1024-1024-10 at batch 256 (cross-entropy,
    backprop), every Linear layer randomized, keep in {1 (exact), 0.5, 0.25}, both rules; the
    settings interleaved round by round; medians. Only the backward is timed.
(b) Added variance: E ||g - g_exact||^2 / ||g_exact||^2 over draws of the randomized backward
    on one batch.
Settings: every Linear layer randomized, or (", hidden layers") all but the output layer.
(c) Accuracy on scikit-learn's digits (1,797 images 8x8, 1,297 train / 500 test): an MLP
    64-128-128-10 trained by backprop with Adam (lr 1e-3, batch 64, 30 epochs) for each keep
    and rule, 3 seeds; and OVLR (n = 16, sigma 1, Adam lr 1e-3, cross-entropy as the black
    box, 30 epochs) with the exact and the keep-0.5 magnitude VJP, 3 seeds.

    python -m benchmarks.randomized_vjp         # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import bbopt
from bbopt.vjp import randomize
from benchmarks import _report

# (keep, rule, hidden): hidden=True randomizes the hidden layers only, not the output layer
SETTINGS = [(1.0, "magnitude", False), (0.5, "magnitude", False), (0.5, "uniform", False), (0.25, "magnitude", False),
            (0.25, "uniform", False), (0.5, "magnitude", True), (0.5, "uniform", True)]  # fmt: skip


def label(keep: float, rule: str, hidden: bool = False) -> str:
    return "exact" if keep == 1.0 else f"keep {keep:g} {rule}" + (", hidden layers" if hidden else "")


def randomized(model: nn.Module, keep: float, rule: str, hidden: bool, seed: int) -> nn.Module:
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return randomize(model, keep=keep, rule=rule, seed=seed, layers=linear[:-1] if hidden else None)


def big_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # benchmark process only
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def backward_seconds(rounds: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(256, 784, generator=generator), torch.randint(0, 10, (256,), generator=generator)
    models = {label(k, r, h): randomized(big_mlp(), k, r, h, seed=0) for k, r, h in SETTINGS}
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(rounds + 2):
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs), targets)
            began = time.perf_counter()
            loss.backward()
            if round_index >= 2:
                times[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in times.items()}


def added_variance(draws: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(2)
    inputs, targets = torch.randn(256, 784, generator=generator), torch.randint(0, 10, (256,), generator=generator)

    def gradient(model):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    exact = gradient(big_mlp())
    out = {}
    for keep, rule, hidden in SETTINGS[1:]:
        model = randomized(big_mlp(), keep, rule, hidden, seed=0)
        errors = [float((gradient(model) - exact).square().sum() / exact.square().sum()) for _ in range(draws)]
        out[label(keep, rule, hidden)] = statistics.mean(errors)
    return out


def digits():
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(images, dtype=torch.float32) / 16.0, torch.tensor(labels)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return (x[:1297], y[:1297]), (x[1297:], y[1297:])


def train_digits(keep: float, rule: str, hidden: bool, seed: int, method: str, epochs: int) -> float:
    (train_x, train_y), (test_x, test_y) = digits()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    randomized(model, keep, rule, hidden, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    solver = bbopt.OVLR(model, optimizer, sigma=1.0, samples=16, seed=seed) if method == "ovlr" else None
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(train_x), generator=generator).split(64):
            inputs, targets = train_x[batch], train_y[batch]
            if solver is not None:
                candidates = solver.ask(inputs)
                with torch.no_grad():
                    solver.tell(bbopt.losses.cross_entropy(candidates, targets[:, None]))
            else:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(inputs), targets).backward()
                optimizer.step()
    with torch.no_grad():
        return float((model(test_x).argmax(1) == test_y).float().mean())


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "randomized_vjp.json")
    args = parser.parse_args(argv)
    seconds = backward_seconds(args.rounds)
    variance = added_variance(args.draws)
    rows = []
    for keep, rule, hidden in SETTINGS:
        name = label(keep, rule, hidden)
        accuracy = [train_digits(keep, rule, hidden, seed, "bp", args.epochs) for seed in range(args.seeds)]
        rows.append({"setting": name, "keep": keep, "rule": rule, "hidden_only": hidden,
                     "backward_seconds": seconds[name],
                     "backward_vs_exact": seconds[name] / seconds["exact"],
                     "relative_added_variance": variance.get(name, 0.0),
                     "bp_digits_accuracy": statistics.mean(accuracy), "bp_digits_accuracies": accuracy})  # fmt: skip
    for keep, rule, hidden in ((1.0, "magnitude", False), (0.5, "magnitude", False), (0.5, "magnitude", True)):
        accuracy = [train_digits(keep, rule, hidden, seed, "ovlr", args.epochs) for seed in range(args.seeds)]
        row = next(r for r in rows if r["setting"] == label(keep, rule, hidden))
        row["ovlr_digits_accuracy"], row["ovlr_digits_accuracies"] = statistics.mean(accuracy), accuracy
    columns = [("setting", "setting", "s"), ("backward_seconds", "backward s", ".4f"),
               ("backward_vs_exact", "vs exact", ".2f"), ("relative_added_variance", "added var", ".3f"),
               ("bp_digits_accuracy", "BP digits acc", ".3f"),
               ("ovlr_digits_accuracy", "OVLR digits acc", ".3f")]  # fmt: skip
    print(f"\nRandomized VJP: MLP 784-1024-1024-10 backward at batch 256 (torch threads {torch.get_num_threads()}); "
          f"digits accuracy, {args.seeds} seeds\n")  # fmt: skip
    _report.table(rows, columns)
    _report.write(args.out, vars(args) | {"out": str(args.out)}, rows)
    return rows


if __name__ == "__main__":
    main()
