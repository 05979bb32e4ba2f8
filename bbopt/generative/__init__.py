"""Generative models trained through the black-box path (`bbopt.OVLR` by default).

GAN: the generator's image is the policy output; the discriminator's verdict is the black-box
loss. A solver perturbs the generated images, scores them with the discriminator and trains
the generator with one VJP, never differentiating the discriminator, which may therefore be
non-differentiable (`RefittedClassifier`: a scikit-learn classifier refitted on real vs
generated images). VAE: the decoder's output is scored by a black-box reconstruction loss, the
KL term by autograd, in one solver step (``tell(..., autograd_loss=kl)``).

    discriminator = BackpropDiscriminator(critic_net, torch.optim.Adam(critic_net.parameters(), 2e-4))
    solver = bbopt.OVLR(generator, torch.optim.Adam(generator.parameters(), 2e-4), sigma=0.05, samples=8)
    history = train_gan(generator, discriminator, images, steps=5000, latent=16, solver=solver)
"""

from bbopt.generative.discriminators import (
    BackpropDiscriminator,
    Discriminator,
    RefittedClassifier,
)
from bbopt.generative.gan import generator_loss, train_gan
from bbopt.generative.metrics import class_coverage, frechet_distance
from bbopt.generative.vae import VAE, GaussianReconstruction, evaluate_vae, fit_vae

__all__ = [
    "VAE",
    "BackpropDiscriminator",
    "Discriminator",
    "GaussianReconstruction",
    "RefittedClassifier",
    "class_coverage",
    "evaluate_vae",
    "fit_vae",
    "frechet_distance",
    "generator_loss",
    "train_gan",
]
