"""Gradient-agnostic losses, label noise, the outlier task and the supervised trainer."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt.data import sine_with_outliers, symmetric_label_noise
from bbopt.losses import TruncatedLoss, ZeroOneLoss, zero_one_loss
from bbopt.policies import MLP
from bbopt.training import accuracy, squared_error


def test_zero_one_loss_values_shapes_and_no_gradient():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.0, 0.2]], requires_grad=True)
    targets = torch.tensor([0, 2, 2])
    loss = zero_one_loss(logits, targets)
    assert loss.tolist() == [0.0, 1.0, 0.0]
    assert not loss.requires_grad  # piecewise constant: nothing for backprop
    candidates = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(0))  # [B, n, C]
    per_candidate = ZeroOneLoss()(candidates, targets[:, None])
    assert per_candidate.shape == (3, 5)
    torch.testing.assert_close(per_candidate, (candidates.argmax(-1) != targets[:, None]).float())


def test_truncated_loss_values_cap_and_power():
    outputs = torch.tensor([[0.0], [0.3], [2.0], [-5.0]])
    targets = torch.zeros(4, 1)
    torch.testing.assert_close(TruncatedLoss(0.25)(outputs, targets), torch.tensor([0.0, 0.09, 0.25, 0.25]))
    torch.testing.assert_close(TruncatedLoss(1.0, power=1)(outputs, targets), torch.tensor([0.0, 0.3, 1.0, 1.0]))
    two_dimensional = TruncatedLoss(10.0)(torch.ones(2, 4, 3), torch.zeros(2, 1, 3))  # [B, n, k] vs [B, 1, k]
    assert two_dimensional.shape == (2, 4) and bool((two_dimensional == 3.0).all())
    with pytest.raises(ValueError, match=r"Invalid cap: 0 \(expected a finite float > 0\)"):
        TruncatedLoss(0)
    with pytest.raises(ValueError, match=r"Invalid power: -1"):
        TruncatedLoss(1.0, power=-1)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.37, 0.6, 1.0])
def test_symmetric_label_noise_flips_exactly_the_asked_fraction_to_other_classes(rate):
    labels = torch.arange(1000) % 10
    noisy, flipped = symmetric_label_noise(labels, rate, 10, generator=torch.Generator().manual_seed(0))
    assert int(flipped.sum()) == round(rate * 1000)
    assert int((noisy != labels).sum()) == round(rate * 1000)  # every flip lands on another class
    assert torch.equal(noisy[~flipped], labels[~flipped])
    assert torch.equal(labels, torch.arange(1000) % 10)  # input untouched


def test_symmetric_label_noise_is_uniform_over_the_other_classes_and_seeded():
    labels = torch.zeros(20000, dtype=torch.long)
    noisy, _ = symmetric_label_noise(labels, 0.9, 10, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(noisy, minlength=10)[1:].float()
    assert float(counts.min()) > 0.9 * float(counts.mean()) and float(counts.max()) < 1.1 * float(counts.mean())
    again, _ = symmetric_label_noise(labels, 0.9, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)
    with pytest.raises(ValueError, match=r"Invalid rate: 1.5"):
        symmetric_label_noise(labels, 1.5, 10, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"Invalid labels"):
        symmetric_label_noise(labels.float(), 0.5, 10, generator=torch.Generator())


def test_sine_with_outliers_replaces_exactly_the_asked_fraction():
    inputs, targets, outliers = sine_with_outliers(
        500, outlier_fraction=0.2, generator=torch.Generator().manual_seed(0)
    )
    assert inputs.shape == targets.shape == (500, 1) and int(outliers.sum()) == 100
    assert float(inputs.abs().max()) <= 1.0
    torch.testing.assert_close(targets[~outliers], torch.sin(6 * inputs[~outliers]))
    assert float((targets[outliers] - torch.sin(6 * inputs[outliers])).abs().mean()) > 2.0


def blobs(seed=0):
    """Three well-separated Gaussian blobs in 2-D, 60 points each."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    labels = torch.arange(3).repeat_interleave(60)
    inputs = centers[labels] + 0.4 * torch.randn(180, 2, generator=generator)
    return inputs, labels


def test_trainer_on_the_zero_one_loss_makes_the_error_fall():
    """Fixed seed; the stated bound: test error <= 0.1 after 30 epochs, from about 2/3."""
    inputs, labels = blobs()
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=30, shuffle=True,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    model = MLP(2, 3, hidden=(16,), seed=3)
    before = bbopt.evaluate(model, [(inputs, labels)], {"accuracy": accuracy})["accuracy"]
    solver = bbopt.OVLR(model, torch.optim.Adam(model.parameters(), lr=0.01), sigma=1.0, samples=32, seed=0)
    history = bbopt.fit(model, ZeroOneLoss(), loader, epochs=30, solver=solver, eval_data=[(inputs, labels)],
                        metrics={"accuracy": accuracy}, progress=False)  # fmt: skip
    assert before < 0.5
    assert len(history) == 30 and history[-1]["accuracy"] >= 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_trainer_runs_one_forward_and_one_backward_per_step():
    inputs, labels = blobs()
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=45)  # 4 batches
    model = MLP(2, 3, hidden=(8,))
    calls = {"forward": 0, "backward": 0}
    model.register_forward_hook(lambda *args: calls.__setitem__("forward", calls["forward"] + 1))
    # A backward pass reaches the first layer's weight exactly once.
    model.layers[0].weight.register_hook(lambda grad: calls.__setitem__("backward", calls["backward"] + 1))
    solver = bbopt.ES(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=8, seed=0)
    bbopt.fit(model, ZeroOneLoss(), loader, epochs=2, solver=solver, progress=False)
    assert calls == {"forward": 8, "backward": 8}
    calls.update(forward=0, backward=0)
    bbopt.fit(model, nn.CrossEntropyLoss(reduction="none"), loader, epochs=2,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)  # fmt: skip
    assert calls == {"forward": 8, "backward": 8}


def test_trainer_sets_the_epoch_of_a_distributed_style_sampler():
    """A loader whose sampler has set_epoch (DistributedSampler) gets each epoch's number before
    the epoch's batches are drawn, so every epoch reshuffles."""
    inputs, labels = blobs()
    seen = []

    class EpochSampler(torch.utils.data.Sampler):
        def __init__(self):
            self.epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            seen.append(self.epoch)
            return iter(torch.randperm(len(inputs), generator=torch.Generator().manual_seed(self.epoch)).tolist())

        def __len__(self):
            return len(inputs)

    loader = DataLoader(TensorDataset(inputs, labels), batch_size=45, sampler=EpochSampler())
    model = MLP(2, 3, hidden=(8,))
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4, seed=0)
    bbopt.fit(model, ZeroOneLoss(), loader, epochs=3, solver=solver, progress=False)
    assert seen == [1, 2, 3]


def test_trainer_refuses_bad_combinations():
    inputs, labels = blobs()
    loader = [(inputs, labels)]
    model = MLP(2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    solver = bbopt.OVLR(model, optimizer, samples=4)
    with pytest.raises(ValueError, match=r"Invalid solver/optimizer: give exactly one"):
        bbopt.fit(model, ZeroOneLoss(), loader, epochs=1, solver=solver, optimizer=optimizer)
    with pytest.raises(ValueError, match=r"Invalid solver: it must be built on the model"):
        bbopt.fit(MLP(2, 3), ZeroOneLoss(), loader, epochs=1, solver=solver)
    with pytest.raises(ValueError, match=r"Invalid epochs: 0"):
        bbopt.fit(model, ZeroOneLoss(), loader, epochs=0, solver=solver)
    with pytest.raises(ValueError, match=r"Invalid metrics: they need eval_data"):
        bbopt.fit(model, ZeroOneLoss(), loader, epochs=1, solver=solver, metrics={"accuracy": accuracy})
    with pytest.raises(RuntimeError, match=r"ZeroOneLoss\(\) gives no gradient: backprop cannot train on it"):
        bbopt.fit(model, ZeroOneLoss(), loader, epochs=1, optimizer=optimizer)


def test_squared_error_metric():
    assert squared_error(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).tolist() == [1.0, 4.0]


def test_train_is_fit_under_its_old_name_for_one_release():
    inputs, labels = blobs()
    runs = []
    for name in ("fit", "train"):
        model = MLP(2, 3, hidden=(8,), seed=0)
        solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4, seed=0)
        run = getattr(bbopt, name)
        if name == "train":
            with pytest.warns(FutureWarning, match=r"bbopt.train\(\) is deprecated: use bbopt.fit\(\)"):
                runs.append(run(model, ZeroOneLoss(), [(inputs, labels)], epochs=2, solver=solver, progress=False))
        else:
            runs.append(run(model, ZeroOneLoss(), [(inputs, labels)], epochs=2, solver=solver, progress=False))
    assert [r["train_loss"] for r in runs[0]] == [r["train_loss"] for r in runs[1]]
