"""Generative models through OVLR on digits: GAN generators trained by OVLR vs backprop, a GAN
against a non-differentiable discriminator, and a VAE with a black-box reconstruction loss.

Data: scikit-learn's bundled digits (1,797 images 8x8, pixels / 16 in [0, 1], not upsampled),
one fixed split (seed 0): 1,437 training images, 360 held out. MNIST is not used: no package
installable here ships it, and nothing can be downloaded.

Metric: FID on the 64 penultimate ReLU features of a digits classifier (MLP 64-128-64-10, Adam
1e-3, 60 epochs on the training split, seed 0), trained once and saved in
benchmarks/results/digits_features.pt (its held-out accuracy is in the JSON); 1,000 samples
(fixed latents) against the 360 held-out images. These FIDs compare runs here only: they are
not comparable in value to MNIST FIDs on Inception features (the paper's 40.27 / 53.33). The
floor of the metric, the FID of the training images against the held-out ones, is reported.
Class coverage: classes predicted for at least a quarter of their fair share of the samples
(`bbopt.generative.class_coverage`); recognisability: the classifier's mean top probability on
the samples (on real held-out digits for reference).

  gan       generator MLP 16-128-128-64 (ReLU, sigmoid out), discriminator MLP 64-128-128-1
            (LeakyReLU 0.2) by backprop, Adam(0.5, 0.999) 2e-4; batch 64; 20,000 steps; 5 seeds.
            Generator: backprop (Adam 1e-3) or OVLR (Adam 2e-3, sigma 0.05, 32 samples per
            latent, antithetic: the discriminator is queried 32x as often, never differentiated).
            Settings chosen on seed 100 only (10,000-step FIDs: backprop lr 5e-4 / 1e-3 / 2e-3:
            18.9 / 8.1 / 9.4; OVLR sigma 0.02 / 0.05 / 0.1 at 8 samples 16.5 / 13.5 / 11.9,
            0.05 at 32 samples lr 1e-3 / 2e-3: 10.0 / 8.0; ES 0.05 x 8: 50.2).
  refitted  the same generator by OVLR against `RefittedClassifier(ExtraTreesClassifier(100
            trees, min_samples_leaf 5))` refitted every 10 steps on the last 1,024 real and
            generated images: no gradient exists; 5,000 steps, 3 seeds.
  vae       encoder MLP 64-128-16 (mean, log-variance of 8 latents), decoder MLP 8-128-64
            (sigmoid out), Gaussian likelihood (scale 0.1); 200 epochs, batch 64, 5 seeds;
            backprop (Adam 2e-3) vs OVLR on the reconstruction (Adam 4e-3, sigma 0.05, 64
            samples) with the KL by autograd in the same step. Settings chosen on seed 100
            (200-epoch held-out ELBOs: backprop lr 1e-3 / 2e-3 / 4e-3: 29.2 / 32.8 / 31.8;
            OVLR 32 samples lr 2e-3 / 4e-3: 30.2 / 30.5, 64 samples lr 4e-3: 31.2).

    python -m benchmarks.generative        # about 25 minutes here, one thread
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt.generative import (
    VAE,
    BackpropDiscriminator,
    GaussianReconstruction,
    RefittedClassifier,
    class_coverage,
    fit_vae,
    frechet_distance,
    train_gan,
)
from bbopt.policies import MLP
from bbopt.seeding import derive
from benchmarks import _report
from benchmarks.zero_one_noise import load_digits

PARTS = ("gan", "refitted", "vae")
GAN_METHODS = ("backprop", "ovlr")
VAE_METHODS = ("backprop", "ovlr")
FEATURES = _report.RESULTS / "digits_features.pt"
# The latents every generator (and VAE prior sample) is judged on: fixed, the same for every method and
# seed, like the evaluation episodes of bbopt.seeding (not derived from a run's seed).
EVAL_LATENTS_SEED = 12345


@dataclass
class Config:
    seeds: int = 5
    batch: int = 64
    latent: int = 16
    gan_steps: int = 20_000
    evaluate_every: int = 2_000
    discriminator_lr: float = 2e-4
    backprop_lr: float = 1e-3
    ovlr_lr: float = 2e-3
    sigma: float = 0.05
    samples: int = 32
    refitted_seeds: int = 3
    refitted_steps: int = 5_000
    refit_every: int = 10
    vae_epochs: int = 200
    vae_latent: int = 8
    vae_backprop_lr: float = 2e-3
    vae_ovlr_lr: float = 4e-3
    vae_samples: int = 64
    scale: float = 0.1
    eval_samples: int = 1_000


def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed split: (train images, train labels, held-out images, held-out labels)."""
    images, labels = load_digits()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, held_out = order[:1437], order[1437:]
    return images[train], labels[train], images[held_out], labels[held_out]


def feature_network(path: Path, train, train_labels, held_out, held_labels) -> tuple[nn.Module, float]:
    """The saved digits classifier at ``path`` (trained once and saved there if the file is
    missing) and its held-out accuracy."""
    classifier = MLP(64, 10, hidden=(128, 64), activation=nn.ReLU, seed=0)
    if path.exists():
        classifier.load_state_dict(torch.load(path, weights_only=True))
    else:
        loader = DataLoader(TensorDataset(train, train_labels), batch_size=64, shuffle=True,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
        bbopt.fit(classifier, nn.CrossEntropyLoss(reduction="none"), loader, epochs=60, optimizer=optimizer,
                  progress=False)  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(classifier.state_dict(), path)
    classifier.eval()
    with torch.no_grad():
        accuracy = float((classifier(held_out).argmax(dim=1) == held_labels).float().mean())
    return classifier, accuracy


class Judge:
    """FID, class coverage and recognisability of samples, against the held-out digits."""

    def __init__(self, classifier: nn.Module, held_out: torch.Tensor):
        self.classifier, self.features = classifier, classifier.layers[:-1]  # up to the last ReLU
        with torch.no_grad():
            self.reference = self.features(held_out)
            self.reference_confidence = float(classifier(held_out).softmax(dim=1).max(dim=1).values.mean())

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor) -> dict[str, float]:
        probabilities = self.classifier(samples).softmax(dim=1)
        return {
            "fid": frechet_distance(self.features(samples), self.reference),
            "classes": float(class_coverage(probabilities.argmax(dim=1), 10)),
            "confidence": float(probabilities.max(dim=1).values.mean()),
        }


def make_generator(config: Config, seed: int) -> nn.Module:
    return MLP(config.latent, 64, hidden=(128, 128), activation=nn.ReLU, output_activation=nn.Sigmoid, seed=seed)


def generator_samples(generator: nn.Module, config: Config) -> torch.Tensor:
    fixed = torch.Generator().manual_seed(EVAL_LATENTS_SEED)
    latents = torch.randn(config.eval_samples, config.latent, generator=fixed)
    with torch.no_grad():
        return generator(latents)


def run_gan(method: str, seed: int, config: Config, train, judge: Judge, *, refitted: bool = False):
    """One GAN run; returns (history, final samples)."""
    generator = make_generator(config, seed)
    if refitted:
        from sklearn.ensemble import ExtraTreesClassifier

        trees = ExtraTreesClassifier(n_estimators=100, min_samples_leaf=5, random_state=seed, n_jobs=1)
        discriminator = RefittedClassifier(trees, every=config.refit_every, memory=1024)
        steps = config.refitted_steps
    else:
        network = MLP(64, 1, hidden=(128, 128), activation=lambda: nn.LeakyReLU(0.2), seed=derive(seed, 1))
        discriminator = BackpropDiscriminator(
            network, torch.optim.Adam(network.parameters(), config.discriminator_lr, betas=(0.5, 0.999))
        )
        steps = config.gan_steps
    lr = config.backprop_lr if method == "backprop" else config.ovlr_lr
    optimizer = torch.optim.Adam(generator.parameters(), lr, betas=(0.5, 0.999))
    trainer = {"optimizer": optimizer} if method == "backprop" else {
        "solver": bbopt.make_solver(method, generator, optimizer, sigma=config.sigma, samples=config.samples, seed=seed)
    }  # fmt: skip
    history = train_gan(generator, discriminator, train, steps=steps, latent=config.latent, batch_size=config.batch,
                        seed=seed, evaluate=lambda g: judge(generator_samples(g, config)),
                        evaluate_every=min(config.evaluate_every, steps), progress=False, **trainer)  # fmt: skip
    return history, generator_samples(generator, config)


def make_vae(config: Config, seed: int) -> VAE:
    encoder = MLP(64, 2 * config.vae_latent, hidden=(128,), activation=nn.ReLU, seed=seed)
    decoder = MLP(config.vae_latent, 64, hidden=(128,), activation=nn.ReLU, output_activation=nn.Sigmoid,
                  seed=derive(seed, 1))  # fmt: skip
    return VAE(encoder, decoder, latent=config.vae_latent, seed=seed)


def run_vae(method: str, seed: int, config: Config, train, held_out, judge: Judge):
    vae = make_vae(config, seed)
    lr = config.vae_backprop_lr if method == "backprop" else config.vae_ovlr_lr
    optimizer = torch.optim.Adam(vae.parameters(), lr)
    trainer = {"optimizer": optimizer} if method == "backprop" else {
        "solver": bbopt.make_solver(method, vae, optimizer, sigma=config.sigma, samples=config.vae_samples, seed=seed)
    }  # fmt: skip
    history = fit_vae(vae, train, epochs=config.vae_epochs, batch_size=config.batch, seed=seed, eval_images=held_out,
                      reconstruction=GaussianReconstruction(config.scale), progress=False,
                      **trainer)  # fmt: skip
    samples = vae.sample(config.eval_samples, generator=torch.Generator().manual_seed(EVAL_LATENTS_SEED))
    return history, samples, judge(samples)


def save_grid(samples: torch.Tensor, path: Path, title: str) -> None:
    """The first (up to) 100 samples as rows of 10 digits 8x8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(10, len(samples) // 10)
    tiles = samples[: rows * 10].clamp(0, 1).reshape(rows, 10, 8, 8).permute(0, 2, 1, 3).reshape(rows * 8, 80)
    figure, axis = plt.subplots(figsize=(4, 4.3))
    axis.imshow(tiles.numpy(), cmap="gray_r", vmin=0, vmax=1)
    axis.set_title(title, fontsize=9)
    axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_curves(curves: dict[str, list[list[dict]]], path: Path, floor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for label, runs in curves.items():
        steps = [record["step"] for record in runs[0]]
        means = [statistics.mean(run[k]["fid"] for run in runs) for k in range(len(steps))]
        axis.plot(steps[1:], means[1:], marker="o", label=f"{label} ({len(runs)} seeds)")
    axis.axhline(floor, color="gray", linestyle=":", label="train vs held-out images")
    axis.set_yscale("log")
    axis.set_xlabel("generator steps")
    axis.set_ylabel("FID (digits-classifier features)")
    axis.set_title("GAN on digits: FID of 1,000 samples vs held-out digits")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {PARTS}")
    parser.add_argument("--seeds", type=int, default=Config.seeds)
    parser.add_argument("--gan-steps", type=int, default=Config.gan_steps)
    parser.add_argument("--evaluate-every", type=int, default=Config.evaluate_every)
    parser.add_argument("--refitted-seeds", type=int, default=Config.refitted_seeds)
    parser.add_argument("--refitted-steps", type=int, default=Config.refitted_steps)
    parser.add_argument("--vae-epochs", type=int, default=Config.vae_epochs)
    parser.add_argument("--eval-samples", type=int, default=Config.eval_samples)
    parser.add_argument("--features", type=Path, default=FEATURES, help="the feature classifier (trained if missing)")
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "generative.json")
    args = parser.parse_args(argv)
    parts = [part for part in args.parts.split(",") if part]
    if args.eval_samples < 10:
        parser.error("--eval-samples must be at least 10 (the sample grids have rows of 10)")
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"unknown parts {unknown} (expected some of {PARTS})")
    config = Config(seeds=args.seeds, gan_steps=args.gan_steps, evaluate_every=args.evaluate_every,
                    refitted_seeds=args.refitted_seeds, refitted_steps=args.refitted_steps,
                    vae_epochs=args.vae_epochs, eval_samples=args.eval_samples)  # fmt: skip
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    train, train_labels, held_out, held_labels = load_split()
    classifier, accuracy = feature_network(args.features, train, train_labels, held_out, held_labels)
    judge = Judge(classifier, held_out)
    floor = frechet_distance(judge.features(train).detach(), judge.reference)
    print(f"feature classifier: held-out accuracy {accuracy:.4f}; FID train vs held-out {floor:.2f}; "
          f"confidence on held-out digits {judge.reference_confidence:.3f}", flush=True)  # fmt: skip
    rows: list[dict] = []
    curves: dict[str, list[list[dict]]] = {}
    runs = [("gan", method, config.seeds) for method in GAN_METHODS if "gan" in parts]
    runs += [("refitted", "ovlr", config.refitted_seeds)] if "refitted" in parts else []
    for part, method, seeds in runs:
        began, histories, finals = time.perf_counter(), [], []
        for seed in range(seeds):
            history, samples = run_gan(method, seed, config, train, judge, refitted=part == "refitted")
            histories.append(history)
            finals.append(history[-1])
            if seed == 0:
                title = f"{part} {method}, seed 0, step {int(finals[-1]['step'])}: FID {finals[-1]['fid']:.1f}"
                save_grid(samples, args.out.with_name(f"generative_{part}_{method}.png"), title)
            last = finals[-1]
            print(f"  {part:<8} {method:<8} seed {seed}: FID {last['fid']:.2f}, {int(last['classes'])} classes, "
                  f"confidence {last['confidence']:.3f}", flush=True)  # fmt: skip
        curves[f"{part} {method}"] = histories
        rows.append({
            "part": part, "method": method, "steps": int(finals[0]["step"]),
            **_report.spread("fid", [r["fid"] for r in finals]),
            **_report.spread("classes", [r["classes"] for r in finals]),
            **_report.spread("confidence", [r["confidence"] for r in finals]),
            "fid_curve": [[r["fid"] for r in h] for h in histories],
            "curve_steps": [r["step"] for r in histories[0]],
            "seconds_per_step": sum(sum(r["seconds"] for r in h) for h in histories) / sum(r["step"] for r in finals),
            "seconds": time.perf_counter() - began,
        })  # fmt: skip
    if "vae" in parts:
        for method in VAE_METHODS:
            began, finals = time.perf_counter(), []
            for seed in range(config.seeds):
                history, samples, quality = run_vae(method, seed, config, train, held_out, judge)
                finals.append(history[-1] | quality)
                if seed == 0:
                    save_grid(samples, args.out.with_name(f"generative_vae_{method}.png"),
                              f"VAE {method}, seed 0: prior samples, FID {quality['fid']:.1f}")  # fmt: skip
                last = finals[-1]
                print(f"  vae      {method:<8} seed {seed}: ELBO {last['elbo']:.2f}, "
                      f"squared error {last['squared_error']:.3f}, FID {last['fid']:.2f}", flush=True)  # fmt: skip
            rows.append({
                "part": "vae", "method": method, "steps": config.vae_epochs,
                **_report.spread("elbo", [r["elbo"] for r in finals]),
                **_report.spread("squared_error", [r["squared_error"] for r in finals]),
                **_report.spread("fid", [r["fid"] for r in finals]),
                **_report.spread("classes", [r["classes"] for r in finals]),
                **_report.spread("confidence", [r["confidence"] for r in finals]),
                "seconds_per_epoch": statistics.mean(r["seconds"] for r in finals),
                "seconds": time.perf_counter() - began,
            })  # fmt: skip
    print(f"\nGenerative models on digits (FID on classifier features; floor {floor:.2f})\n")
    _report.table(rows, [("part", "part", "s"), ("method", "method", "s"), ("steps", "steps", "d"),
                         ("fid_mean", "FID", ".2f"), ("fid_std", "std", ".2f"), ("classes_mean", "classes", ".1f"),
                         ("confidence_mean", "confidence", ".3f"), ("elbo_mean", "ELBO", ".2f"),
                         ("elbo_std", "std", ".2f"), ("squared_error_mean", "sq. error", ".3f")])  # fmt: skip
    if curves.get("gan backprop") or curves.get("gan ovlr"):
        plot_curves({k: v for k, v in curves.items() if k.startswith("gan")}, args.out.with_name("generative.png"),
                    floor)  # fmt: skip
    summary = {"feature_accuracy": accuracy, "fid_floor": floor, "reference_confidence": judge.reference_confidence}
    _report.write(args.out, asdict(config), rows, summary)
    return rows


if __name__ == "__main__":
    main()
