"""Query allocation across a batch (FLOPS): equal vs optimal vs Gaussian vs Bernoulli, same budget.

(a) Variance. A fixed batch of 128 digits, MLP 64-64-10 (ReLU) first trained by backprop for
``--pretrain`` full-batch Adam steps (so that examples differ: some confidently right, some
not), differentiable loss (cross-entropy on the logits) so the true gradient is known. OVLR
(antithetic pairs, leave-pair-out baseline), sigma 1, 16 samples per example on average, one
step = ``B * 16`` candidates for every method, pilots included. For each allocator, ``--draws``
estimates (SGD lr 0, read ``p.grad``) give the variance ``E ||g - mean g||^2`` and the cosine to
the true gradient. The theorem's prediction: per-example traces ``t_j`` of the single-sample
estimator measured separately (each example alone, ``--trace-draws`` draws of 16 samples:
``t_j = 16 * Var``), in parameter space and in output space (the last layer's bias gradient is
the output signal); predicted saving ``1 - (sum sqrt t)^2 / (B sum t)`` (oracle traces, no pilot).

(b) Training. The 0-1 loss on digits (1,200 train / 597 test per seed), MLP 64-128-10, Adam
1e-3, batch 64, OVLR sigma 1, ``--samples`` candidates per example on average, ``--epochs``
epochs, 5 seeds; clean test accuracy after the last epoch. Equal total candidates per method.

(c) Inputs of unequal difficulty. The bin-packing set network (`train_set_network`, OVLR
sigma 1, Adam 3e-3, completion decoder) trained on mixed batches, 8 triplet-60 and 8
uniform-60 instances per step (the uniform ones differ widely in how much their packings
vary), ``--pack-samples`` decodes per instance on average, ``--pack-steps`` steps, 5 seeds
(training streams apart from the evaluation seeds). Held out: instances 0..49 of each family;
the score is the trained policy's expected loss above the best bound (the mean over 32 noisy
decodes per instance, what the solver minimizes) and the zero-shot bins above it (one decode
of the noiseless priorities). Equal total decodes per method.

    python -m benchmarks.allocation        # ~25 minutes on 2 cores; writes allocation.json and .png
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt.allocation import Bernoulli, Gaussian, Optimal, predicted_reduction
from bbopt.envs.binpacking import decode, make_instance
from bbopt.envs.binpacking.learned import FEATURES, priorities, train_set_network
from bbopt.losses import ZeroOneLoss
from bbopt.policies import MLP, SetNetwork
from bbopt.seeding import derive
from bbopt.training import accuracy
from benchmarks import _report
from benchmarks.binpacking import TRAIN_SEED
from benchmarks.variance import fixed_batch, true_gradient
from benchmarks.zero_one_noise import load_digits, split_digits

VARIANCE_SEED = 0  # part (a): per-example trace solvers draw from stream (0, j), the compared methods from 1
ALLOCATORS = {  # name -> a fresh allocator (None: the plain equal split)
    "equal": lambda: None,
    "optimal": Optimal,  # shrink 0.5
    "optimal_shrink0": lambda: Optimal(shrink=0.0),  # the pilot's traces as they are
    "gaussian": Gaussian,
    "bernoulli": lambda: Bernoulli(p=0.5),
    "optimal_reuse": lambda: Optimal(reuse=True),
}


@dataclass
class Config:
    batch_size: int = 128
    pretrain: int = 60
    samples: int = 16
    draws: int = 300
    trace_draws: int = 100
    seeds: int = 5
    epochs: int = 40
    train_samples: int = 32
    pack_steps: int = 300
    pack_samples: int = 32
    pack_held_out: int = 50
    methods: tuple[str, ...] = tuple(ALLOCATORS)


def flat_gradient(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def solver_for(model, samples, allocation, seed, lr=0.0):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr) if lr == 0 else torch.optim.Adam(model.parameters(), lr=lr)
    return bbopt.OVLR(model, optimizer, sigma=1.0, samples=samples, seed=seed, allocation=allocation)


def one_step(solver, inputs, labels, loss) -> None:
    """One estimator step (through the pilot, if any) with per-row losses ``loss(logits, labels)``."""
    while True:
        candidates = solver.ask(inputs)
        with torch.no_grad():
            if solver.allocation is None:
                told = loss(candidates.reshape(-1, 10), labels.repeat_interleave(solver.samples)).reshape(
                    len(inputs), -1
                )
            else:
                told = loss(candidates, labels[solver.groups])
        solver.tell(told)
        if not solver.pending:
            return


def cross_entropy(logits, labels):
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def pretrained(config: Config, inputs, labels) -> nn.Module:
    model = MLP(64, 10, hidden=(64, 64), activation=nn.ReLU, seed=0)
    images, targets = load_digits()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(config.pretrain):  # on the whole data set: the batch becomes mixed in difficulty
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()
    return model


def per_example_traces(model, inputs, labels, config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """``(parameter-space t_j, output-space t_j)``: the trace of the single-sample estimator's
    covariance for each example alone."""
    parameter, output = [], []
    for j in range(len(inputs)):
        solver = solver_for(model, config.samples, None, seed=derive(VARIANCE_SEED, 0, j))
        rows, biases = [], []
        for _ in range(config.trace_draws):
            one_step(solver, inputs[j : j + 1], labels[j : j + 1], cross_entropy)
            rows.append(flat_gradient(model))
            biases.append(_last_bias(model))
        for store, values in ((parameter, torch.stack(rows)), (output, torch.stack(biases))):
            store.append(float(values.double().var(dim=0).sum()) * config.samples)
    return torch.tensor(parameter, dtype=torch.float64), torch.tensor(output, dtype=torch.float64)


def _last_bias(model: nn.Module) -> torch.Tensor:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.bias.grad.clone()


def variance_part(config: Config) -> dict:
    inputs, labels = fixed_batch(config.batch_size)
    model = pretrained(config, inputs, labels)
    truth = true_gradient(model, inputs, labels)
    with torch.no_grad():
        batch_accuracy = float((model(inputs).argmax(1) == labels).double().mean())
    began = time.perf_counter()
    parameter_traces, output_traces = per_example_traces(model, inputs, labels, config)
    predicted = {"parameter": predicted_reduction(parameter_traces), "output": predicted_reduction(output_traces)}
    seconds = time.perf_counter() - began
    print(f"(a) batch accuracy {batch_accuracy:.3f}; predicted saving {predicted['parameter']:.3f} (parameter "
          f"traces), {predicted['output']:.3f} (output traces); traces in {seconds:.0f} s")  # fmt: skip
    rows = []
    for name in config.methods:
        solver = solver_for(model, config.samples, ALLOCATORS[name](), seed=derive(VARIANCE_SEED, 1))
        estimates = []
        began = time.perf_counter()
        for _ in range(config.draws):
            one_step(solver, inputs, labels, cross_entropy)
            estimates.append(flat_gradient(model))
        seconds = (time.perf_counter() - began) / config.draws
        estimates = torch.stack(estimates).double()
        variance = float(((estimates - estimates.mean(0)) ** 2).sum(1).mean())
        cosine = float(nn.functional.cosine_similarity(estimates, truth[None].double(), dim=1).mean())
        rows.append({"allocator": name, "variance": variance, "cosine": cosine, "seconds_per_step": seconds,
                     "candidates_per_step": solver.evaluations / config.draws})  # fmt: skip
    equal = rows[0]["variance"]
    for row in rows:
        row["saving"] = 1.0 - row["variance"] / equal
        row["share_of_predicted"] = row["saving"] / predicted["parameter"] if predicted["parameter"] > 0 else math.nan
        print(f"  {row['allocator']:<10} variance {row['variance']:.4g}  saving {row['saving']:+.3f}  "
              f"({row['share_of_predicted']:.2f} of predicted)  cosine {row['cosine']:.3f}", flush=True)  # fmt: skip
    return {
        "rows": rows,
        "predicted_saving": predicted,
        "batch_accuracy": batch_accuracy,
        "traces": {"parameter": parameter_traces.tolist(), "output": output_traces.tolist()},
    }


def train_once(name: str, seed: int, config: Config, images, labels) -> dict:
    train, test = split_digits(len(images), seed)
    loader = DataLoader(TensorDataset(images[train], labels[train]), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    model = MLP(64, 10, hidden=(128,), activation=nn.ReLU, seed=seed)
    solver = solver_for(model, config.train_samples, ALLOCATORS[name](), seed=seed, lr=1e-3)
    began = time.perf_counter()
    history = bbopt.fit(model, ZeroOneLoss(), loader, epochs=config.epochs, solver=solver, progress=False,
                        eval_data=[(images[test], labels[test])], metrics={"accuracy": accuracy})  # fmt: skip
    return {"accuracy": history[-1]["accuracy"], "evaluations": solver.evaluations,
            "seconds": time.perf_counter() - began}  # fmt: skip


def training_part(config: Config) -> list[dict]:
    images, labels = load_digits()
    rows = []
    for name in config.methods:
        runs = [train_once(name, seed, config, images, labels) for seed in range(config.seeds)]
        rows.append({"allocator": name, **_report.spread("accuracy", [r["accuracy"] for r in runs]),
                     "accuracies": [r["accuracy"] for r in runs], "evaluations": runs[0]["evaluations"],
                     "seconds": sum(r["seconds"] for r in runs) / len(runs)})  # fmt: skip
        print(f"  {name:<10} accuracy {rows[-1]['accuracy_mean']:.4f} +- {rows[-1]['accuracy_std']:.4f}  "
              f"({rows[-1]['evaluations']} candidates per run)", flush=True)  # fmt: skip
    return rows


PACK_FAMILIES = ("triplet", "uniform")
PACK_ITEMS = 60


def packing_scores(network, held_out) -> dict:
    """Expected loss above the best bound (32 noisy decodes per instance, sigma 1, a fixed
    generator) and zero-shot excess bins, per family and overall."""
    generator = torch.Generator().manual_seed(0)
    scores = {}
    for family, instances in held_out.items():
        expected, zero_shot = [], []
        for instance in instances:
            with torch.no_grad():
                mu = priorities(network, instance)
            noisy = mu + torch.randn(32, instance.items, generator=generator)
            expected.append(float(decode(instance, noisy).loss.mean()) - instance.best_bound)
            zero_shot.append(int(decode(instance, mu[None]).bins[0]) - instance.best_bound)
        scores[family] = {"expected_loss": float(np.mean(expected)), "zero_shot_excess": float(np.mean(zero_shot))}
    scores["expected_loss"] = float(np.mean([scores[f]["expected_loss"] for f in held_out]))
    scores["zero_shot_excess"] = float(np.mean([scores[f]["zero_shot_excess"] for f in held_out]))
    return scores


def packing_part(config: Config) -> list[dict]:
    held_out = {f: [make_instance(f, PACK_ITEMS, seed) for seed in range(config.pack_held_out)] for f in PACK_FAMILIES}
    # how unequal the inputs are: the spread of 32 noisy decodes' losses per held-out instance, untrained network
    untrained, generator = SetNetwork(FEATURES, seed=0), torch.Generator().manual_seed(1)
    spreads = {f: [float(decode(i, priorities(untrained, i) + torch.randn(32, i.items, generator=generator)).loss.std())
                   for i in instances] for f, instances in held_out.items()}  # fmt: skip
    traces = torch.tensor([s**2 for values in spreads.values() for s in values], dtype=torch.float64)
    print("(c) loss spread per instance (untrained): " + ", ".join(
        f"{f} {np.mean(v):.2f} [{min(v):.2f}, {max(v):.2f}]" for f, v in spreads.items())
        + f"; predicted saving from these spreads {predicted_reduction(traces):.3f}", flush=True)  # fmt: skip
    rows = []
    for name in config.methods:
        runs = []
        for seed in range(config.seeds):
            began = time.perf_counter()
            network, _ = train_set_network(PACK_FAMILIES, PACK_ITEMS, steps=config.pack_steps,
                                                 samples=config.pack_samples, allocation=ALLOCATORS[name](),
                                                 seed=derive(TRAIN_SEED, seed))  # fmt: skip
            runs.append(packing_scores(network, held_out) | {"seconds": time.perf_counter() - began})
        row = {"allocator": name, "task": "binpacking-mixed",
               **_report.spread("expected_loss", [r["expected_loss"] for r in runs]),
               **_report.spread("zero_shot_excess", [r["zero_shot_excess"] for r in runs]),
               "per_family": {f: {k: float(np.mean([r[f][k] for r in runs])) for k in runs[0][f]}
                              for f in PACK_FAMILIES},
               "expected_losses": [r["expected_loss"] for r in runs],
               "seconds": float(np.mean([r["seconds"] for r in runs]))}  # fmt: skip
        rows.append(row)
        print(f"  {name:<16} expected loss {row['expected_loss_mean']:.4f} +- {row['expected_loss_std']:.4f}  "
              f"zero-shot excess bins {row['zero_shot_excess_mean']:.3f}  ({row['seconds']:.0f} s per run)",
              flush=True)  # fmt: skip
    return rows


def plot(variance: dict, training: list[dict], packing: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    names = [row["allocator"] for row in variance["rows"]]
    left.bar(names, [row["saving"] for row in variance["rows"]], color="tab:blue", label="measured")
    left.axhline(variance["predicted_saving"]["parameter"], color="k", linestyle="--", label="predicted (oracle)")
    left.set_ylabel("variance saved vs equal")
    left.set_title("(a) batch gradient variance, same budget")
    left.legend()
    middle.bar(names, [row["accuracy_mean"] for row in training], yerr=[row["accuracy_std"] for row in training],
               color="tab:green")  # fmt: skip
    low = min(row["accuracy_mean"] - row["accuracy_std"] for row in training)
    middle.set_ylim(max(0.0, low - 0.02), 1.0)
    middle.set_ylabel("test accuracy")
    middle.set_title("(b) digits, 0-1 loss, same candidates")
    right.bar([row["allocator"] for row in packing], [row["expected_loss_mean"] for row in packing],
              yerr=[row["expected_loss_std"] for row in packing], color="tab:orange")  # fmt: skip
    low = min(row["expected_loss_mean"] - row["expected_loss_std"] for row in packing)
    right.set_ylim(max(0.0, low - 0.05), None)
    right.set_ylabel("held-out expected loss above bound\n(lower is better)")
    right.set_title("(c) set network, mixed triplet/uniform batches")
    for axis in (left, middle, right):
        axis.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=Config.draws)
    parser.add_argument("--trace-draws", type=int, default=Config.trace_draws)
    parser.add_argument("--seeds", type=int, default=Config.seeds)
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--pack-steps", type=int, default=Config.pack_steps)
    parser.add_argument("--pack-held-out", type=int, default=Config.pack_held_out)
    parser.add_argument("--parts", default="variance,training,packing")
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "allocation.json")
    args = parser.parse_args(argv)
    config = Config(draws=args.draws, trace_draws=args.trace_draws, seeds=args.seeds, epochs=args.epochs,
                    pack_steps=args.pack_steps, pack_held_out=args.pack_held_out)  # fmt: skip
    parts = set(args.parts.split(","))
    if not parts <= {"variance", "training", "packing"}:
        parser.error(f"--parts {args.parts!r}: expected a comma-separated subset of variance,training,packing")
    torch.set_num_threads(1)
    variance = variance_part(config) if "variance" in parts else None
    training = training_part(config) if "training" in parts else None
    packing = packing_part(config) if "packing" in parts else None
    if variance is not None and training is not None and packing is not None:
        plot(variance, training, packing, args.out.with_suffix(".png"))
    summary = {"variance": variance, "training": training, "packing": packing}
    rows = (variance or {}).get("rows", []) + (training or []) + (packing or [])
    _report.write(args.out, asdict(config), rows, summary)
    return summary


if __name__ == "__main__":
    main()
