"""Variance ablations of the OVLR estimator (the OVLR paper's Table 2 / Figure 2, on CPU).

Fixed model (MLP 64-64-10, ReLU) and fixed batch (128 digits images), differentiable loss
(cross-entropy on the logits), so the true gradient is known: the autograd gradient of the
batch's mean cross-entropy at the model's output. For each setting, K draws of the
estimator (each: one ask/tell with SGD lr 0, reading ``p.grad``) give

* variance: ``E ||g - mean(g)||^2`` over the K draws (trace of the covariance),
* cosine: the mean cosine similarity between a draw and the true gradient.

Sweeps: (a) sigma in {0.01, 0.1, 0.5, 1, 2, 5} for the plain estimator (no antithetic pairs,
no baseline: the paper's "vanilla"), with antithetic pairs, and with our leave-one-out
baseline (no pairs), n = 100; (b) n in {1, 20, 50, 100, 200, 500} at sigma = 1 (antithetic
for even n); (c) noise families Gaussian / Laplace / Student-t (df 5) at sigma = 1, n = 100.

(d) quasi-Monte Carlo: OVLR's default estimator (antithetic pairs, leave-pair-out baseline) and
the plain one, each with independent noise (MC) and with scrambled Sobol noise (``qmc=True``)
at n in {8, 32, 128}, sigma = 1, the same draws count.

(e) quasi-Monte Carlo in layer-wise mode (`bbopt.layerwise.LayerwiseLR(qmc=True)`): the same
model, batch and loss, noise sigma 0.1 at both layers' pre-activations (the layer-wise benchmark's),
antithetic pairs, MC vs QMC at n in {8, 32}; variance per layer (its weight and bias) and in all.
Not in the plot.

    python -m benchmarks.variance          # ~1 minute; writes variance.json and variance.png
    python -m benchmarks.variance --sweeps qmc --draws 200 --out benchmarks/results/variance_qmc.json
    python -m benchmarks.variance --sweeps layerwise_qmc --draws 300 --out benchmarks/results/variance_lw_qmc.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn

import bbopt
from bbopt.layerwise import LayerwiseLR
from bbopt.policies import MLP
from benchmarks import _report

SIGMAS = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0)
REPETITIONS = (1, 20, 50, 100, 200, 500)
MODES = {  # name -> OVLR options
    "plain": {"antithetic": False, "baseline": False},
    "antithetic": {"antithetic": True},
    "baseline": {"antithetic": False, "baseline": True},
}


def fixed_batch(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    return torch.tensor(images[:size], dtype=torch.float32) / 16.0, torch.tensor(labels[:size])


def true_gradient(model: nn.Module, inputs, labels) -> torch.Tensor:
    loss = nn.functional.cross_entropy(model(inputs), labels)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def draws(model, inputs, labels, *, sigma, samples, draws_count, seed, **options) -> torch.Tensor:
    """K estimator draws ``[K, P]`` for one setting."""
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.0), sigma=sigma, samples=samples,
                        seed=seed, **options)  # fmt: skip
    targets = labels.repeat_interleave(samples)
    rows = []
    for _ in range(draws_count):
        candidates = solver.ask(inputs)
        with torch.no_grad():
            losses = nn.functional.cross_entropy(candidates.reshape(-1, 10), targets, reduction="none")
        solver.tell(losses.reshape(len(inputs), samples))
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


def layerwise_draws(model, inputs, labels, *, samples, draws_count, seed, qmc) -> dict[str, torch.Tensor]:
    """K layer-wise LR draws per layer (weight and bias flattened), ``{layer: [K, P_layer]}``."""
    solver = LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.0), sigma=0.1, samples=samples, seed=seed,
                         qmc=qmc)  # fmt: skip
    targets = labels.repeat_interleave(samples)
    rows = {name: [] for name in solver.layers}
    for _ in range(draws_count):
        outputs = solver.ask(inputs)
        losses = nn.functional.cross_entropy(outputs.reshape(-1, 10), targets, reduction="none")
        solver.tell(losses.reshape(len(inputs), samples))
        for name, layer in solver.layers.items():
            rows[name].append(torch.cat([layer.weight.grad.reshape(-1), layer.bias.grad.reshape(-1)]))
    return {name: torch.stack(found) for name, found in rows.items()}


def summarize(estimates: torch.Tensor, truth: torch.Tensor) -> dict:
    variance = float(((estimates - estimates.mean(0)) ** 2).sum(1).mean())
    cosine = float(nn.functional.cosine_similarity(estimates, truth[None], dim=1).mean())
    return {"variance": variance, "cosine": cosine, "true_gradient_norm": float(truth.norm())}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 4, figsize=(17, 6.5))
    for estimator in ("default", "plain"):
        for mode in ("mc", "qmc"):
            mine = [r for r in rows if r["sweep"] == "qmc" and r["mode"] == mode and r["estimator"] == estimator]
            label = f"{estimator}, {mode}"
            axes[0][3].plot([r["samples"] for r in mine], [r["variance"] for r in mine], marker="o", label=label)
            axes[1][3].plot([r["samples"] for r in mine], [r["cosine"] for r in mine], marker="o", label=label)
    axes[0][3].set_title("(d) MC vs QMC noise (sigma = 1)")
    axes[0][3].legend()
    for axis in (axes[0][3], axes[1][3]):
        axis.grid(alpha=0.3)
        if any(r["sweep"] == "qmc" for r in rows):
            axis.set_xscale("log", base=2)
    if any(r["sweep"] == "qmc" for r in rows):
        axes[0][3].set_yscale("log")
    axes[1][3].set_xlabel("n")
    for mode in MODES:
        mine = [r for r in rows if r["sweep"] == "sigma" and r["mode"] == mode]
        axes[0][0].plot([r["sigma"] for r in mine], [r["variance"] for r in mine], marker="o", label=mode)
        axes[1][0].plot([r["sigma"] for r in mine], [r["cosine"] for r in mine], marker="o", label=mode)
    mine = [r for r in rows if r["sweep"] == "samples"]
    axes[0][1].plot([r["samples"] for r in mine], [r["variance"] for r in mine], marker="o")
    axes[1][1].plot([r["samples"] for r in mine], [r["cosine"] for r in mine], marker="o")
    mine = [r for r in rows if r["sweep"] == "noise"]
    axes[0][2].bar([r["noise"] for r in mine], [r["variance"] for r in mine])
    axes[1][2].bar([r["noise"] for r in mine], [r["cosine"] for r in mine])
    present = {r["sweep"] for r in rows}  # a sweep left out (--sweeps) leaves its panels empty: no log scale
    for column, sweep in ((0, "sigma"), (1, "samples")):
        axes[0][column].grid(alpha=0.3)
        axes[1][column].grid(alpha=0.3)
        if sweep in present:
            axes[0][column].set_xscale("log")
            axes[1][column].set_xscale("log")
            axes[0][column].set_yscale("log")
    axes[0][0].set_title("(a) vs sigma (n = 100)")
    axes[0][1].set_title("(b) vs samples n (sigma = 1)")
    axes[0][2].set_title("(c) noise family (sigma = 1, n = 100)")
    axes[0][0].set_ylabel("variance of the estimate")
    axes[1][0].set_ylabel("cosine to the autograd gradient")
    axes[1][0].set_xlabel("sigma")
    axes[1][1].set_xlabel("n")
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=100, help="estimator draws per setting")
    parser.add_argument("--sigmas", default=",".join(map(str, SIGMAS)))
    parser.add_argument("--repetitions", default=",".join(map(str, REPETITIONS)))
    parser.add_argument("--qmc-samples", default="8,32,128", help="n of the QMC vs MC sweep")
    parser.add_argument("--sweeps", default="sigma,samples,noise,qmc,layerwise_qmc",
                        help="which of sigma, samples, noise, qmc, layerwise_qmc")  # fmt: skip
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "variance.json")
    args = parser.parse_args(argv)
    sweeps = set(args.sweeps.split(","))
    torch.set_num_threads(1)
    inputs, labels = fixed_batch()
    model = MLP(64, 10, hidden=(64,), activation=nn.ReLU, seed=0)
    truth = true_gradient(model, inputs, labels)
    common = {"draws_count": args.draws, "seed": 0}
    rows = []
    for sigma in map(float, args.sigmas.split(",")) if "sigma" in sweeps else ():
        for mode, options in MODES.items():
            estimates = draws(model, inputs, labels, sigma=sigma, samples=100, **options, **common)
            rows.append({"sweep": "sigma", "mode": mode, "sigma": sigma, "samples": 100} | summarize(estimates, truth))
    for samples in map(int, args.repetitions.split(",")) if "samples" in sweeps else ():
        mode = "antithetic" if samples % 2 == 0 else "plain"
        estimates = draws(model, inputs, labels, sigma=1.0, samples=samples, **MODES[mode], **common)
        rows.append({"sweep": "samples", "mode": mode, "sigma": 1.0, "samples": samples} | summarize(estimates, truth))
    for noise in ("gaussian", "laplace", "student_t") if "noise" in sweeps else ():
        estimates = draws(model, inputs, labels, sigma=1.0, samples=100, noise=noise, antithetic=True, **common)
        rows.append({"sweep": "noise", "mode": "antithetic", "noise": noise, "sigma": 1.0, "samples": 100}
                    | summarize(estimates, truth))  # fmt: skip
    estimators = {"default": {}, "plain": MODES["plain"]}  # OVLR's defaults; the paper's vanilla estimator
    for samples in map(int, args.qmc_samples.split(",")) if "qmc" in sweeps else ():
        for estimator, options in estimators.items():
            for qmc in (False, True):
                estimates = draws(model, inputs, labels, sigma=1.0, samples=samples, qmc=qmc, **options, **common)
                rows.append({"sweep": "qmc", "mode": "qmc" if qmc else "mc", "estimator": estimator, "sigma": 1.0,
                             "samples": samples} | summarize(estimates, truth))  # fmt: skip
    for samples in (8, 32) if "layerwise_qmc" in sweeps else ():
        for qmc in (False, True):
            per_layer = layerwise_draws(model, inputs, labels, samples=samples, qmc=qmc, **common)
            every = torch.cat(list(per_layer.values()), dim=1)
            rows.append({"sweep": "layerwise_qmc", "mode": "qmc" if qmc else "mc", "estimator": "layerwise",
                         "sigma": 0.1, "samples": samples, **summarize(every, truth),
                         "layer_variance": {name: float(((d - d.mean(0)) ** 2).sum(1).mean())
                                            for name, d in per_layer.items()}})  # fmt: skip
    layerwise = {(r["samples"], r["mode"]): r for r in rows if r["sweep"] == "layerwise_qmc"}
    layerwise_factor = {}  # MC variance / QMC variance, per layer and in all
    for (n, mode), r in layerwise.items():
        if mode == "qmc":
            mc = layerwise[(n, "mc")]
            for name, value in r["layer_variance"].items():
                layerwise_factor[f"n={n} layer {name}"] = mc["layer_variance"][name] / value
            layerwise_factor[f"n={n} all"] = mc["variance"] / r["variance"]
    qmc_rows = {(r["estimator"], r["samples"], r["mode"]): r["variance"] for r in rows if r["sweep"] == "qmc"}
    qmc_factor = {f"{e} n={n}": qmc_rows[(e, n, "mc")] / qmc_rows[(e, n, "qmc")] for e, n, m in qmc_rows if m == "qmc"}
    print(f"\nOVLR estimator variance and cosine to the autograd gradient, {args.draws} draws per setting\n")
    columns = [("sweep", "sweep", "s"), ("mode", "mode", "s"), ("estimator", "estimator", "s"), ("noise", "noise", "s"),
               ("sigma", "sigma", "g"), ("samples", "n", "d"), ("variance", "variance", ".3e"),
               ("cosine", "cosine", ".3f")]  # fmt: skip
    _report.table(rows, columns)
    spread = {}
    for mode in MODES:
        values = [r["variance"] for r in rows if r["sweep"] == "sigma" and r["mode"] == mode]
        spread[mode] = max(values) / min(values) if values and min(values) > 0 else math.nan
    plot(rows, args.out.with_suffix(".png"))
    summary = {
        "variance_max_over_min_across_sigma": spread,
        "mc_over_qmc_variance_by_n": qmc_factor,
        "mc_over_qmc_layerwise_variance": layerwise_factor,
    }
    _report.write(args.out, vars(args) | {"out": str(args.out)}, rows, summary)
    return rows


if __name__ == "__main__":
    main()
