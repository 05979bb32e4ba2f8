"""A GAN whose generator never sees the discriminator's gradient (scikit-learn's digits).

    python examples/gan_digits.py                          # ~1 minute: OVLR generator
    python examples/gan_digits.py --trees                  # a discriminator with no gradient at all

The generated image is the policy output. OVLR perturbs it, the discriminator scores the
perturbed images as a black box, and one VJP trains the generator. With ``--trees`` the
discriminator is an ExtraTrees classifier refitted every 10 steps on real vs generated digits:
backprop has nothing to differentiate there. Prints the samples as text art.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import nn

import bbopt
from bbopt.generative import BackpropDiscriminator, RefittedClassifier, train_gan
from bbopt.policies import MLP
from bbopt.seeding import derive


@dataclass
class Args:
    steps: int = 10_000
    seed: int = 0
    trees: bool = False


def main(args: Args) -> None:
    images = torch.tensor(load_digits().data, dtype=torch.float32) / 16  # [1797, 64] in [0, 1]
    generator = MLP(16, 64, hidden=(128, 128), activation=nn.ReLU, output_activation=nn.Sigmoid, seed=args.seed)
    if args.trees:
        from sklearn.ensemble import ExtraTreesClassifier

        trees = ExtraTreesClassifier(n_estimators=100, min_samples_leaf=5, random_state=args.seed)
        discriminator = RefittedClassifier(trees, every=10, memory=1024)
    else:
        network = MLP(64, 1, hidden=(128, 128), activation=lambda: nn.LeakyReLU(0.2), seed=derive(args.seed, 1))
        discriminator = BackpropDiscriminator(network, torch.optim.Adam(network.parameters(), 2e-4, betas=(0.5, 0.999)))
    optimizer = torch.optim.Adam(generator.parameters(), 2e-3, betas=(0.5, 0.999))
    solver = bbopt.OVLR(generator, optimizer, sigma=0.05, samples=32, seed=args.seed)
    history = train_gan(generator, discriminator, images, steps=args.steps, latent=16, solver=solver, seed=args.seed,
                        evaluate_every=args.steps // 5)  # fmt: skip
    for record in history[1:]:
        print(f"step {int(record['step']):>6}  discriminator loss {record['discriminator_loss']:.3f}  "
              f"generator loss {record['generator_loss']:.3f}")  # fmt: skip
    with torch.no_grad():
        samples = generator(torch.randn(6, 16, generator=torch.Generator().manual_seed(args.seed)))
    shades = " .:-=+*#%@"
    for row in range(8):
        print("   ".join("".join(shades[int(v * 9.99)] * 2 for v in sample.reshape(8, 8)[row]) for sample in samples))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=Args.steps)
    parser.add_argument("--seed", type=int, default=Args.seed)
    parser.add_argument("--trees", action="store_true", help="an ExtraTrees discriminator (no gradient)")
    main(Args(**vars(parser.parse_args())))
