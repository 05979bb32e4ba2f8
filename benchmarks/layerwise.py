"""Layer-wise likelihood ratio vs OVLR vs backprop on digits: accuracy clean, under natural
noise and under attacks (`bbopt.robustness`), seconds per epoch, peak training memory.

Digits (1,797 images 8x8 in [0, 1]; per seed 1,200 train / 597 test, the split of
`benchmarks.zero_one_noise`), 5 seeds, per model the same architecture, epochs (40), batch (64)
and optimizer (Adam 1e-3) for every method; the loss is the cross-entropy, a black box for the
two likelihood-ratio methods:
  backprop   autograd through the network
  ovlr       OVLR (LR-L): logit noise sigma 1, 32 samples, antithetic, one VJP
  layerwise  LR-W (`bbopt.layerwise.LayerwiseLR`): noise sigma 0.1 at every Linear/Conv2d
             pre-activation, 32 noisy copies, antithetic, no backward (sigma 0.1 chosen on seed 0
             of the MLP among 0.03 / 0.1 / 0.3: 0.953 / 0.951 / 0.945)
Models: MLP 64-128-10 (ReLU); CNN conv 8 (3x3) - conv 16 (3x3) - linear 10 (ReLU, padding 1);
spiking MLP 64-128-10 (`bbopt.policies.SpikingMLP`: LIF, 8 steps, decay 0.5, threshold 1), whose
backprop baseline uses a fast-sigmoid surrogate derivative (SuperSpike) and whose attacks follow
that surrogate gradient for every method (the hard spikes' input gradient is zero, which would
pass for robustness).
Robustness on the test split: Gaussian / uniform noise 0.1, Poisson at 30 photons, FGSM,
I-FGSM, MI-FGSM (L-inf 0.1, 15 steps of 0.01).
  hybrid     LR-WL: the layers below the head layer-wise (sigma 0.1), the head by OVLR at its
             output (sigma 1, the logits' noise of the ovlr row), one VJP through the head only.
             Heads: the MLP's output layer (so only the head's noise differs from layerwise: the
             estimator of a single Linear is the same), the CNN's conv 2 + linear; no spiking row.
Transfer attacks: FGSM / I-FGSM / MI-FGSM crafted on the same seed's backprop model (for the
spiking model its surrogate twin) and applied to each model (transfer_* columns): robustness that
only hides the gradient (masking) falls to them.
  param_es   parameter-space ES (`bbopt.baselines.ParameterES`, OpenAI-ES with centered ranks):
             32 perturbed networks per batch (antithetic), parameter sigma 0.03 (chosen on seed 0
             of the MLP among 0.01 / 0.03 / 0.1: 0.819 / 0.826 / 0.745 clean), the same Adam.
Peak memory (MiB, seed 0, one per row: the allocations are the same every run): the tensor memory
training allocates beyond the weights and the data over its first 4 updates, as torch.profiler
counts it (`benchmarks._report.peak_allocated_mib`): gradients, Adam's state and, per method, the
autograd graph (backprop, OVLR's one VJP), every chosen layer's input and noise for the n copies
(layer-wise LR), the perturbed parameters (parameter-space ES).

    python -m benchmarks.layerwise         # about 35 minutes here, one thread
    python -m benchmarks.layerwise --models mlp,cnn --methods hybrid --out /tmp/hybrid.json   # a subset
    python -m benchmarks.layerwise --methods backprop,param_es --out /tmp/param_es.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt import robustness
from bbopt.baselines import ParameterES
from bbopt.layerwise import LayerwiseLR
from bbopt.policies import MLP, SpikingMLP
from benchmarks import _report
from benchmarks.zero_one_noise import load_digits, split_digits

METHODS = ("backprop", "ovlr", "layerwise", "hybrid", "param_es")
HEADS = {"mlp": "layers.2", "cnn": "1"}  # the hybrid's head (spiking: no hybrid)
MODELS = ("mlp", "cnn", "spiking")
CONDITIONS = ("clean", *robustness.NOISES, *robustness.ATTACKS)
TRANSFERS = tuple(f"transfer_{kind}" for kind in robustness.ATTACKS)  # crafted on the seed's backprop model


@dataclass
class Config:
    seeds: int = 5
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    samples: int = 32
    ovlr_sigma: float = 1.0
    layerwise_sigma: float = 0.1
    param_es_sigma: float = 0.03
    methods: tuple[str, ...] = METHODS
    models: tuple[str, ...] = MODELS


def make_model(name: str, seed: int, *, surrogate: bool = False) -> nn.Module:
    if name == "mlp":
        return MLP(64, 10, hidden=(128,), activation=nn.ReLU, seed=seed)
    if name == "spiking":  # backprop needs the surrogate derivative; the LR methods train the hard spikes
        return SpikingMLP(64, 10, hidden=(128,), steps=8, surrogate=surrogate, seed=seed)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # benchmark process only: the CNN's default init, seeded
    # body (conv 1) and head (conv 2 + linear): the hybrid's split; built in layer order, so the same init
    body = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    head = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))
    model = nn.Sequential(body, head)
    torch.random.set_rng_state(generator_state)
    return model


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy for ``outputs[..., 10]`` and broadcastable integer ``targets``."""
    targets = targets.expand(outputs.shape[:-1])
    flat = nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), reduction="none")
    return flat.reshape(outputs.shape[:-1])


def make_training(model_name: str, method: str, seed: int, config: Config) -> tuple[nn.Module, dict]:
    """A fresh model and the `bbopt.fit` options that train it by ``method``."""
    model = make_model(model_name, seed, surrogate=method == "backprop")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    options = {"progress": False}
    if method == "backprop":
        options["optimizer"] = optimizer
    elif method == "ovlr":
        options["solver"] = bbopt.OVLR(model, optimizer, sigma=config.ovlr_sigma, samples=config.samples, seed=seed)
    elif method == "hybrid":  # lower layers layer-wise, the head by OVLR at its output (the logits' sigma)
        options["solver"] = LayerwiseLR(model, optimizer, sigma=config.layerwise_sigma, samples=config.samples,
                                        head=HEADS[model_name], head_sigma=config.ovlr_sigma, seed=seed)  # fmt: skip
    elif method == "param_es":  # the parameter-space baseline: 32 perturbed networks per batch
        options["solver"] = ParameterES(model, optimizer, sigma=config.param_es_sigma, samples=config.samples,
                                        seed=seed)  # fmt: skip
    else:
        options["solver"] = LayerwiseLR(model, optimizer, sigma=config.layerwise_sigma, samples=config.samples,
                                        seed=seed)  # fmt: skip
    return model, options


def train_loader(images, labels, indices, seed: int, config: Config) -> DataLoader:
    return DataLoader(TensorDataset(images[indices], labels[indices]), batch_size=config.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip


def peak_memory_mib(model_name: str, method: str, config: Config, images, labels, batches: int = 4) -> float:
    """Peak tensor memory of training (MiB) over the first ``batches`` updates of a fresh model: what
    training allocates beyond the weights and the data (gradients, optimizer state, activations or
    noisy copies, an autograd graph), as torch.profiler counts it. Deterministic, so one seed."""
    train, _ = split_digits(len(images), 0)
    loader = train_loader(images, labels, train[: batches * config.batch_size], 0, config)
    model, options = make_training(model_name, method, 0, config)
    return _report.peak_allocated_mib(lambda: bbopt.fit(model, cross_entropy, loader, epochs=1, **options))


def train_once(model_name: str, method: str, seed: int, config: Config, images, labels) -> tuple[dict, nn.Module]:
    """One trained model's scores (clean, natural noise, white-box attacks) and the model."""
    train, test = split_digits(len(images), seed)
    loader = train_loader(images, labels, train, seed, config)
    model, options = make_training(model_name, method, seed, config)
    began = time.perf_counter()
    bbopt.fit(model, cross_entropy, loader, epochs=config.epochs, **options)
    seconds = (time.perf_counter() - began) / config.epochs
    twin = None
    if model_name == "spiking":  # attacks follow the surrogate gradient of the same weights (hard spikes give 0)
        twin = make_model(model_name, seed, surrogate=True)
        twin.load_state_dict(model.state_dict())
    scores = robustness.evaluate(model, images[test], labels[test], seed=seed, attack_model=twin)
    row = {"model": model_name, "method": method, "seed": seed, "seconds_per_epoch": seconds, **scores}
    return row, model


def transfer_scores(model: nn.Module, source: nn.Module, images, labels, seed: int) -> dict[str, float]:
    """Accuracy of ``model`` under the attacks crafted on ``source`` (the same seed's backprop model):
    a model that only hides its gradients (masking) falls to these; one that is robust does not."""
    _, test = split_digits(len(images), seed)
    scores = robustness.evaluate(model, images[test], labels[test], seed=seed, attack_model=source)
    return {f"transfer_{kind}": scores[kind] for kind in robustness.ATTACKS}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({row["model"] for row in rows}, key=MODELS.index)
    figure, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4), squeeze=False)
    width = 0.8 / len(METHODS)
    for axis, model in zip(axes[0], models, strict=True):
        for k, method in enumerate(m for m in METHODS if any(r["method"] == m for r in rows)):
            row = next((r for r in rows if r["model"] == model and r["method"] == method), None)
            if row is None:  # no hybrid for the spiking model
                continue
            means = [row[f"{c}_mean"] for c in CONDITIONS]
            errors = [row[f"{c}_std"] for c in CONDITIONS]
            axis.bar(np.arange(len(CONDITIONS)) + k * width, means, width, yerr=errors, label=method)
        axis.set_xticks(np.arange(len(CONDITIONS)) + width, CONDITIONS, rotation=30)
        axis.set_ylim(0, 1)
        axis.set_ylabel("test accuracy")
        axis.set_title(f"digits, {model}")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=Config.seeds)
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS), help="hybrid runs where the model has a head")
    parser.add_argument("--param-es-sigma", type=float, default=Config.param_es_sigma)
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "layerwise.json")
    args = parser.parse_args(argv)
    config = Config(seeds=args.seeds, epochs=args.epochs, models=tuple(args.models.split(",")),
                    methods=tuple(args.methods.split(",")), param_es_sigma=args.param_es_sigma)  # fmt: skip
    if unknown := sorted(set(config.methods) - set(METHODS)) + sorted(set(config.models) - set(MODELS)):
        parser.error(f"unknown methods or models {unknown} (methods {METHODS}, models {MODELS})")
    torch.set_num_threads(1)
    images, labels = load_digits()
    rows, runs = [], []
    for model_name in config.models:
        sources = {}  # seed -> the backprop model, whose attacks transfer to the others
        for method in config.methods:
            if method == "hybrid" and model_name not in HEADS:
                continue
            done = []
            for seed in range(config.seeds):
                row, model = train_once(model_name, method, seed, config, images, labels)
                if method == "backprop":
                    sources[seed] = make_model(model_name, seed, surrogate=True)
                    sources[seed].load_state_dict(model.state_dict())
                if seed in sources:
                    row |= transfer_scores(model, sources[seed], images, labels, seed)
                done.append(row)
            runs += done
            row = {"model": model_name, "method": method,
                   "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in done])),
                   "peak_memory_mib": peak_memory_mib(model_name, method, config, images, labels)}  # fmt: skip
            for condition in CONDITIONS + TRANSFERS:
                if all(condition in r for r in done):
                    row |= _report.spread(condition, [r[condition] for r in done])
            rows.append(row)
            shown = "  ".join(f"{c} {row[c + '_mean']:.3f}" for c in CONDITIONS + TRANSFERS if c + "_mean" in row)
            print(f"{model_name:<4} {method:<10} {shown}  {row['seconds_per_epoch']:.2f} s/epoch  "
                  f"{row['peak_memory_mib']:.2f} MiB", flush=True)  # fmt: skip
    plot(rows, args.out.with_suffix(".png"))
    _report.write(args.out, asdict(config), rows, {"runs": runs})
    return rows


if __name__ == "__main__":
    main()
