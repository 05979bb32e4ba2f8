"""bbopt.generative: the OVLR generator step against its expected value (Monte Carlo, a toy
discriminator whose generator loss is a known quadratic), the discriminator never differentiated
in a solver step, the OVLR VAE step against backprop's gradient, FID, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bbopt
from bbopt.generative import (
    VAE,
    BackpropDiscriminator,
    GaussianReconstruction,
    RefittedClassifier,
    class_coverage,
    fit_vae,
    frechet_distance,
    generator_loss,
    train_gan,
)

WIDTH, LATENT = 4, 3


def generator(seed=0):
    torch.manual_seed(seed)  # test process only
    return nn.Sequential(nn.Linear(LATENT, 8), nn.Tanh(), nn.Linear(8, WIDTH)).double()


def real_images(count=32, seed=1):
    return torch.rand(count, WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


class QuadraticCritic:
    """A fixed toy discriminator whose generator loss is ``q(x) = |x - t|^2 + 0.1``:
    ``logit = -log(expm1(q))`` makes ``softplus(-logit) = q`` (so E over the noise is
    ``|mu - t|^2 + sigma^2 d + 0.1``, gradient ``2 (mu - t)``). Records the grad mode of its calls."""

    differentiable = True

    def __init__(self):
        self.target = torch.linspace(-0.5, 0.5, WIDTH, dtype=torch.float64)
        self.grad_modes: list[bool] = []

    def q(self, images):
        return ((images - self.target) ** 2).sum(-1) + 0.1

    def logits(self, images):
        self.grad_modes.append(torch.is_grad_enabled())
        return -torch.log(torch.expm1(self.q(images)))

    def update(self, real, fake):
        return 0.0


def test_generator_loss_of_the_toy_critic_is_its_quadratic():
    critic, images = QuadraticCritic(), real_images()
    torch.testing.assert_close(generator_loss(critic.logits(images)), critic.q(images))


def test_the_ovlr_generator_step_is_unbiased_for_the_expected_discriminator_loss():
    """Mean of many one-step generator gradients (solver seeds) vs the exact gradient of
    E_eps mean_b q(G(z_b) + sigma eps) at the same latents; z-scores over the draws."""
    critic, images, draws = QuadraticCritic(), real_images(), 400
    estimates = []
    for draw in range(draws):
        model = generator()
        solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.0), sigma=0.1, samples=4, seed=draw)
        train_gan(model, critic, images, steps=1, latent=LATENT, batch_size=6, solver=solver, seed=5, progress=False)
        estimates.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    estimates = torch.stack(estimates)
    model = generator()
    latents_rng = torch.Generator().manual_seed(5)  # train_gan's draws: the real batch, then two latent batches
    torch.randint(len(images), (6,), generator=latents_rng)
    torch.randn(6, LATENT, generator=latents_rng, dtype=torch.float64)
    latents = torch.randn(6, LATENT, generator=latents_rng, dtype=torch.float64)
    critic.q(model(latents)).mean().backward()  # + sigma^2 d + const: no gradient
    exact = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    z = (estimates.mean(0) - exact) / (estimates.std(0) / draws**0.5)
    assert z.abs().max() < 4.5, z
    assert exact.abs().max() > 0.05  # a gradient worth estimating


def test_the_discriminator_is_never_differentiated_in_a_solver_step():
    critic, model = QuadraticCritic(), generator()
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), sigma=0.1, samples=4, seed=0)
    train_gan(model, critic, real_images(), steps=3, latent=LATENT, batch_size=6, solver=solver, progress=False)
    assert critic.grad_modes == [False] * 3  # every verdict asked under torch.no_grad()
    backprop = QuadraticCritic()  # the baseline differentiates it: the test can tell
    model = generator()
    train_gan(model, backprop, real_images(), steps=1, latent=LATENT, batch_size=6, progress=False,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))  # fmt: skip
    assert backprop.grad_modes == [True]


def test_no_gradient_reaches_a_network_discriminator_from_the_generator_step():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(WIDTH, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    discriminator = BackpropDiscriminator(network, torch.optim.SGD(network.parameters(), lr=0.0))
    after_update = {}

    def keep(real, fake, update=discriminator.update):
        loss = update(real, fake)
        after_update.update({name: p.grad.clone() for name, p in network.named_parameters()})
        return loss

    discriminator.update = keep
    model = generator()
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), sigma=0.1, samples=4, seed=0)
    train_gan(model, discriminator, real_images(), steps=1, latent=LATENT, batch_size=6, solver=solver, progress=False)
    for name, p in network.named_parameters():  # the generator step added nothing to them
        assert torch.equal(p.grad, after_update[name]), name


@pytest.mark.parametrize("name", ["ovlr", "es", "cem"])
def test_solvers_are_interchangeable_and_a_refitted_classifier_trains_a_generator(name):
    from sklearn.ensemble import ExtraTreesClassifier

    images = real_images(64)
    discriminator = RefittedClassifier(ExtraTreesClassifier(n_estimators=10, min_samples_leaf=3, random_state=0),
                                       every=2, memory=64)  # fmt: skip
    model = generator()
    before = [p.detach().clone() for p in model.parameters()]
    solver = bbopt.make_solver(name, model, torch.optim.Adam(model.parameters(), lr=1e-2), sigma=0.1, samples=8,
                               seed=0)  # fmt: skip

    def evaluate(model):
        return {"mean": float(model(torch.zeros(1, LATENT, dtype=torch.float64)).mean())}

    history = train_gan(model, discriminator, images, steps=4, latent=LATENT, batch_size=8, solver=solver,
                        progress=False, evaluate=evaluate)  # fmt: skip
    assert [r["step"] for r in history] == [0.0, 4.0]
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert discriminator.fitted is not None and np.isfinite(history[-1]["discriminator_loss"])


def test_the_refitted_classifier_refits_on_schedule_and_keeps_its_memory():
    class Counting:
        fits = 0

        def fit(self, images, labels):
            Counting.fits += 1
            self.share = labels.mean()
            return self

        def predict_proba(self, images):
            return np.tile([1 - self.share, self.share], (len(images), 1))

    discriminator = RefittedClassifier(Counting(), every=3, memory=10)
    assert torch.equal(discriminator.logits(real_images(5)), torch.zeros(5, dtype=torch.float64))  # before any fit
    for _ in range(7):
        discriminator.update(real_images(4), real_images(4, seed=2))
    assert Counting.fits == 3  # updates 1, 4 and 7
    assert len(discriminator.real) == len(discriminator.fake) == 10


def test_a_gan_run_is_deterministic_under_its_seeds():
    def run():
        torch.manual_seed(0)
        network = nn.Sequential(nn.Linear(WIDTH, 8), nn.ReLU(), nn.Linear(8, 1)).double()
        discriminator = BackpropDiscriminator(network, torch.optim.Adam(network.parameters(), lr=1e-2))
        model = generator()
        solver = bbopt.OVLR(model, torch.optim.Adam(model.parameters(), lr=1e-2), sigma=0.1, samples=4, seed=7)
        history = train_gan(model, discriminator, real_images(), steps=5, latent=LATENT, batch_size=6, seed=3,
                            solver=solver, progress=False)  # fmt: skip
        return [p.detach().clone() for p in model.parameters()], [r["generator_loss"] for r in history]

    (first, losses), (second, again) = run(), run()
    assert losses == again
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def vae(seed=0):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(WIDTH, 8), nn.Tanh(), nn.Linear(8, 2 * 2)).double()
    decoder = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, WIDTH)).double()
    return VAE(encoder, decoder, latent=2, seed=seed)


def test_the_ovlr_vae_step_is_unbiased_for_backprops_gradient():
    """With a Gaussian reconstruction loss the output noise only adds a constant, so at the same
    latents (the VAE's generator re-seeded) the expected OVLR step gradient, VJP plus the KL by
    autograd, is backprop's gradient of reconstruction + KL."""
    images, draws = real_images(6), 400
    loss = GaussianReconstruction(scale=0.5)
    estimates = []
    for draw in range(draws):
        model = vae()
        solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.0), sigma=0.1, samples=4, seed=draw)
        fit_vae(model, images, epochs=1, batch_size=6, reconstruction=loss, solver=solver, progress=False)
        estimates.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    estimates = torch.stack(estimates)
    model = vae()
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0))  # fit_vae's order for seed 0
    inputs = images[order]
    (loss(model(inputs), inputs) + model.kl).mean().backward()
    exact = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    z = (estimates.mean(0) - exact) / (estimates.std(0) / draws**0.5 + 1e-12)
    assert z.abs().max() < 4.5, z
    assert exact.abs().max() > 0.05


def test_vae_training_improves_the_held_out_elbo_with_either_method():
    images = real_images(64)
    for method in ("ovlr", "backprop"):
        model = vae()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        trainer = {"optimizer": optimizer} if method == "backprop" else {
            "solver": bbopt.OVLR(model, optimizer, sigma=0.05, samples=16, seed=0)}  # fmt: skip
        history = fit_vae(model, images, epochs=30, batch_size=16, eval_images=real_images(32, seed=9),
                          reconstruction=GaussianReconstruction(0.2), progress=False, **trainer)  # fmt: skip
        assert history[-1]["elbo"] > history[0]["elbo"] + 1.0, (method, history[0]["elbo"], history[-1]["elbo"])


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise():
    features = torch.randn(500, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
    noise = torch.randn(500, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    distances = [frechet_distance(features, features + level * noise) for level in (0.1, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[0] > 0
    shifted = frechet_distance(features, features + 1.0)  # a mean shift of 1 in 6 dimensions
    assert shifted == pytest.approx(6.0, rel=1e-9)


def test_class_coverage_counts_classes_with_a_quarter_of_their_share():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 19 + [3] * 1)  # fair share 25, a quarter 6.25
    assert class_coverage(labels, 4) == 3
    assert class_coverage(labels, 4, minimum_share=1.0) == 2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda g, d, s: train_gan(g, d, real_images(), steps=1, latent=LATENT, progress=False), "give exactly one"),
        (
            lambda g, d, s: train_gan(
                g, d, real_images(), steps=1, latent=LATENT, progress=False, solver=s, optimizer=s.optimizer
            ),
            "give exactly one",
        ),
        (
            lambda g, d, s: train_gan(generator(), d, real_images(), steps=1, latent=LATENT, solver=s, progress=False),
            "built on the generator",
        ),
        (lambda g, d, s: train_gan(g, object(), real_images(), steps=1, latent=LATENT, solver=s), r"logits\(\) and"),
        (
            lambda g, d, s: train_gan(g, d, real_images()[:, :3], steps=1, latent=LATENT, solver=s, progress=False),
            r"Invalid generator output: shape \[64, 4\] \(expected \[64, 3\]",
        ),
        (lambda g, d, s: train_gan(g, d, real_images()[0], steps=1, latent=LATENT, solver=s), "flattened to"),
        (lambda g, d, s: train_gan(g, d, real_images(), steps=0, latent=LATENT, solver=s), "steps"),
        (
            lambda g, d, s: train_gan(
                g, RefittedClassifier(_Proba()), real_images(), steps=1, latent=LATENT, optimizer=s.optimizer
            ),
            "not differentiable",
        ),
    ],
)
def test_bad_gan_input_is_refused(call, message):
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(WIDTH, 1)).double()
    discriminator = BackpropDiscriminator(network, torch.optim.SGD(network.parameters(), lr=0.1))
    model = generator()
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4, seed=0)
    with pytest.raises(ValueError, match=message):
        call(model, discriminator, solver)


class _Proba:
    def fit(self, images, labels):
        return self

    def predict_proba(self, images):
        return np.full((len(images), 2), 0.5)


def test_a_discriminator_returning_the_wrong_shape_is_refused():
    torch.manual_seed(0)
    network = nn.Linear(WIDTH, 2).double()  # two logits per image
    discriminator = BackpropDiscriminator(network, torch.optim.SGD(network.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"Invalid discriminator output: shape \[32, 2\] for 32 images"):
        discriminator.update(real_images(), real_images(seed=2))
    with pytest.raises(ValueError, match="images of width 3"):
        discriminator.update(real_images(), real_images()[:, :3])
    with pytest.raises(ValueError, match="expected fit and predict_proba"):
        RefittedClassifier(object())


def test_images_with_non_finite_pixels_are_refused_before_training():
    images = real_images()
    images[3, 1] = float("nan")
    model = generator()
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="non-finite pixels in 1 image"):
        train_gan(model, QuadraticCritic(), images, steps=1, latent=LATENT, solver=solver, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="Invalid eval_images: non-finite pixels"):
        fit_vae(vae(), real_images(), epochs=1, optimizer=torch.optim.SGD(vae().parameters(), lr=0.1),
                eval_images=images)  # fmt: skip


def test_bad_vae_and_metric_input_is_refused():
    model = vae()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid encoder output: shape \[32, 4\] \(expected \[32, 6\]"):
        VAE(model.encoder, model.decoder, latent=3)(real_images())
    with pytest.raises(ValueError, match="Invalid eval_images: width 3"):
        fit_vae(model, real_images(), epochs=1, optimizer=optimizer, eval_images=real_images()[:, :3])
    with pytest.raises(ValueError, match="Invalid reconstructions: width 3"):
        GaussianReconstruction()(real_images()[:, :3], real_images())
    with pytest.raises(ValueError, match="Invalid scale"):
        GaussianReconstruction(0.0)
    with pytest.raises(ValueError, match="widths 6 and 5"):
        frechet_distance(torch.randn(10, 6), torch.randn(10, 5))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(torch.full((10, 2), float("nan")), torch.randn(10, 2))
    with pytest.raises(ValueError, match=r"values in \[0, 12\] for 10 classes"):
        class_coverage(torch.tensor([0, 12]), 10)
