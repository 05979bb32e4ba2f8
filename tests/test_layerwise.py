"""Layer-wise likelihood ratio (bbopt.layerwise): each layer's estimator against the exact
gradient of the expected loss (closed form for linear layers and a quadratic loss), no autograd
graph, antithetic copies, bad input, and training through bbopt.fit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bbopt
from bbopt.layerwise import LayerwiseLR
from bbopt.losses import ZeroOneLoss
from bbopt.training import accuracy


def linear_net(seed=0):
    torch.manual_seed(seed)  # test process only
    return nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Linear(4, 2)).double()


def conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, kernel_size=2, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).double()


def squared(outputs, targets):
    return ((outputs - targets[:, None]) ** 2).sum(-1)


def expected_gradient(model, inputs, targets, sigmas):
    """The exact gradient of E[L] for linear layers, z1' = z1 + s1 eps1, y = W2 f(z1') + b2 + s2 eps2,
    f linear: E||y - t||^2 = ||clean - t||^2 + s1^2 ||W2 J||_F^2 + const, J the map of the first
    layer's noise to the second layer's input (identity, or the flatten)."""
    second = model[2]
    model.zero_grad()
    clean = ((model(inputs) - targets) ** 2).sum(-1).mean()
    noise_term = sigmas[0] ** 2 * (second.weight**2).sum()  # every noise coordinate reaches W2 through J = I
    (clean + noise_term).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def estimates(model, inputs, targets, draws, sigmas, **options):
    solver = LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.0), sigma=sigmas, **options)
    rows = []
    for _ in range(draws):
        outputs = solver.ask(inputs)
        solver.tell(squared(outputs, targets))
        rows.append({name: p.grad.clone() for name, p in model.named_parameters()})
    return rows


@pytest.mark.parametrize(
    "make, shape, options",
    [
        (linear_net, (5, 3), {"antithetic": True}),
        (linear_net, (5, 3), {"antithetic": False, "noise": "laplace"}),
        (conv_net, (4, 1, 3, 3), {"antithetic": True}),
        (linear_net, (5, 3), {"antithetic": True, "qmc": True}),
        (conv_net, (4, 1, 3, 3), {"antithetic": True, "qmc": True, "noise": "student_t"}),
        (linear_net, (5, 3), {"antithetic": False, "baseline": False, "qmc": True}),
    ],
)
def test_every_layer_estimate_is_unbiased_against_the_exact_gradient(make, shape, options):
    model = make()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    targets = torch.randn(shape[0], 2, generator=generator, dtype=torch.float64)
    sigmas = {"0": 0.3, "2": 0.2}
    truth = expected_gradient(model, inputs, targets, [sigmas["0"], sigmas["2"]])
    rows = estimates(model, inputs, targets, 1500, sigmas, samples=8, seed=0, **options)
    means = []
    for name, exact in truth.items():
        draws = torch.stack([row[name] for row in rows])
        mean, error = draws.mean(0), draws.std(0) / len(rows) ** 0.5
        z = ((mean - exact) / error.clamp_min(1e-12)).abs()
        assert float(z.max()) < 4.5, (name, float(z.max()))
        means.append((mean.reshape(-1), exact.reshape(-1)))
    # not vacuous: over all parameters the mean estimate is close to the exact gradient
    mean, exact = (torch.cat(parts) for parts in zip(*means, strict=True))
    assert float((mean - exact).norm() / exact.norm()) < 0.15


def test_no_autograd_graph_is_built_and_pairs_are_negated():
    model = linear_net()
    seen = []
    model[2].register_forward_hook(lambda module, args, out: seen.append((torch.is_grad_enabled(), out.requires_grad)))
    solver = LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.1), sigma=0.5, samples=6, seed=0)
    inputs = torch.randn(2, 3, dtype=torch.float64)
    outputs = solver.ask(inputs)
    assert seen == [(False, False)] and not outputs.requires_grad
    assert outputs.shape == (2, 6, 2)
    ((_, eps),) = solver._asked["record"]["0"]
    eps = eps.reshape(2, 6, 4)
    assert torch.equal(eps[:, 3:], -eps[:, :3])
    with torch.no_grad():
        clean = model(inputs)
    # antithetic copies through linear layers: the pair's mean output is the clean output
    torch.testing.assert_close((outputs[:, :3] + outputs[:, 3:]) / 2, clean[:, None].expand(2, 3, 2))
    solver.tell(torch.zeros(2, 6))


def test_same_seed_same_run_and_state_round_trip():
    runs = []
    for _ in range(2):
        model = linear_net()
        solver = LayerwiseLR(model, torch.optim.Adam(model.parameters(), lr=0.01), sigma=0.3, samples=4, seed=7)
        inputs = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        for _ in range(3):
            solver.tell(squared(solver.ask(inputs), torch.zeros(3, 2, dtype=torch.float64)))
        runs.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    state = solver.state_dict()
    fresh_model = linear_net(1)  # other weights, loaded from the state
    fresh = LayerwiseLR(fresh_model, torch.optim.Adam(fresh_model.parameters(), lr=0.01), sigma=0.3, samples=4)
    fresh.load_state_dict(state)
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in fresh_model.parameters()]), runs[1])
    saved = copy.deepcopy(fresh.optimizer.state_dict()["state"])
    fresh.tell(squared(fresh.ask(inputs), torch.zeros(3, 2, dtype=torch.float64)))
    for moments, kept in zip(saved.values(), state["optimizer"]["state"].values(), strict=True):
        for name, value in moments.items():  # the loaded state is a copy: the step left it alone
            assert torch.equal(kept[name], value)


def test_training_through_fit_learns_blobs_under_the_zero_one_loss():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
    labels = torch.arange(3).repeat(30)
    inputs = centers[labels] + 0.3 * torch.randn(90, 2, generator=generator)
    model = bbopt.policies.MLP(2, 3, hidden=(16,), seed=3)
    solver = LayerwiseLR(model, torch.optim.Adam(model.parameters(), lr=0.02), sigma=0.5, samples=32, seed=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, labels), batch_size=30, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    before = bbopt.evaluate(model, [(inputs, labels)], {"accuracy": accuracy})["accuracy"]
    history = bbopt.fit(model, ZeroOneLoss(), loader, epochs=30, solver=solver, eval_data=[(inputs, labels)],
                        metrics={"accuracy": accuracy}, progress=False)  # fmt: skip
    assert before < 0.7 and history[-1]["accuracy"] >= 0.95, (before, history[-1]["accuracy"])


def test_qmc_noise_is_seeded_spread_and_resumes_exactly():
    def run(solver, inputs, steps):
        for _ in range(steps):
            solver.tell(squared(solver.ask(inputs), torch.zeros(3, 2, dtype=torch.float64)))

    inputs = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    finals = []
    for _ in range(2):
        model = linear_net()
        adam = torch.optim.Adam(model.parameters(), lr=0.01)
        solver = LayerwiseLR(model, adam, sigma=0.3, samples=8, seed=7, qmc=True)
        run(solver, inputs, 3)
        state = copy.deepcopy(solver.state_dict())  # its tensors are the live ones otherwise
        run(solver, inputs, 2)
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(finals[0], finals[1]) and state["sampler"]["seed"] is not None
    fresh_model = linear_net(1)
    adam = torch.optim.Adam(fresh_model.parameters(), lr=0.01)
    fresh = LayerwiseLR(fresh_model, adam, sigma=0.3, samples=8, qmc=True)
    fresh.load_state_dict(state)
    run(fresh, inputs, 2)
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in fresh_model.parameters()]), finals[0])
    # a group's copies are one shifted Sobol net: the first coordinate of its 4 points (pairs: n/2)
    # falls in 4 different quarters of (0, 1), which 4 independent draws rarely do
    solver.ask(inputs)
    ((_, eps),) = solver._asked["record"]["0"]
    quarters = (torch.distributions.Normal(0.0, 1.0).cdf(eps.reshape(3, 8, 4)[:, :4, 0]) * 4).floor()
    assert all(sorted(row.tolist()) == [0, 1, 2, 3] for row in quarters)
    solver.tell(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="saved with qmc=True, this solver has qmc=False"):
        plain = LayerwiseLR(fresh_model, torch.optim.Adam(fresh_model.parameters()), sigma=0.3, samples=8)
        plain.load_state_dict(state)


def test_qmc_refusals_change_nothing():
    model = linear_net()
    with pytest.raises(ValueError, match="QMC noise needs antithetic=True"):
        LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.1), antithetic=False, qmc=True)
    wide = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 21202)).double()  # narrow first, then too wide
    solver = LayerwiseLR(wide, torch.optim.SGD(wide.parameters(), lr=0.1), layers=["0"], samples=2, seed=0, qmc=True)
    solver.ask(torch.zeros(1, 3, dtype=torch.float64))  # the narrow layer alone is fine
    solver.tell(torch.zeros(1, 2))
    solver = LayerwiseLR(wide, torch.optim.SGD(wide.parameters(), lr=0.1), samples=2, seed=0, qmc=True)
    before = solver.generator.get_state()
    with pytest.raises(ValueError, match="a layer output of 21202 noise coordinates"):
        solver.ask(torch.zeros(1, 3, dtype=torch.float64))
    assert torch.equal(solver.generator.get_state(), before) and solver._asked is None
    assert solver.sampler.seed is None  # drawn by the narrow layer before the wide one failed: undone too


BAD = {
    "layer not in the model": (lambda m: {"layers": ["9"]}, "are not modules of the model"),
    "layer of another type": (lambda m: {"layers": ["1"]}, r"are not nn\.Linear or nn\.Conv2d"),
    "zero sigma": (lambda m: {"sigma": 0.0}, "Invalid sigma: 0.0"),
    "nan sigma": (lambda m: {"sigma": float("nan")}, "Invalid sigma: nan"),
    "sigma missing a layer": (lambda m: {"sigma": {"0": 0.1}}, r"no value for layers \['2'\]"),
    "odd samples with pairs": (lambda m: {"samples": 3}, "Invalid samples: 3 with antithetic=True"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused(case):
    model = linear_net()
    options, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.1), **options(model))


def test_a_model_without_linear_or_conv_layers_and_bad_losses_are_refused():
    vector = bbopt.policies.LearnedVector(3)
    with pytest.raises(ValueError, match=r"has no nn\.Linear or nn\.Conv2d layer"):
        LayerwiseLR(vector, torch.optim.SGD(vector.parameters(), lr=0.1))
    model = linear_net()
    solver = LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4, seed=0)
    solver.ask(torch.zeros(2, 3, dtype=torch.float64))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"Invalid losses: 1 non-finite value\(s\)"):
        solver.tell(torch.tensor([[0.0, 1.0, float("nan"), 0.0], [0.0] * 4]))
    with pytest.raises(ValueError, match="Invalid losses"):
        solver.tell(torch.zeros(2, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    solver.tell(torch.zeros(2, 4))


class SharedTwice(nn.Module):
    """One Linear applied twice (weights shared, as over the time steps of a spiking network)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.layer = nn.Linear(2, 2).double()

    def forward(self, x):
        return self.layer(self.layer(x))


def test_a_layer_called_twice_gets_noise_at_each_call_and_the_sum_of_their_estimates():
    """z1 = W x + b + s e1, z2 = W z1 + b + s e2: E||z2 - t||^2 = ||W (W x + b) + b - t||^2 +
    s^2 ||W||_F^2 + const, whose autograd gradient the summed estimate must match."""
    model = SharedTwice()
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    targets = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    sigma = 0.3
    model.zero_grad()
    clean = ((model(inputs) - targets) ** 2).sum(-1).mean()
    (clean + sigma**2 * (model.layer.weight**2).sum()).backward()
    truth = {name: p.grad.clone() for name, p in model.named_parameters()}
    rows = estimates(model, inputs, targets, 1500, {"layer": sigma}, samples=8, seed=0)
    for name, exact in truth.items():
        draws = torch.stack([row[name] for row in rows])
        z = ((draws.mean(0) - exact) / (draws.std(0) / len(rows) ** 0.5)).abs()
        assert float(z.max()) < 4.5, (name, float(z.max()))
    solver = LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.1), sigma=sigma, samples=4, seed=0)
    solver.ask(inputs)
    assert len(solver._asked["record"]["layer"]) == 2


def test_the_spiking_mlp_is_deterministic_spikes_are_binary_and_only_the_surrogate_has_a_gradient():
    from bbopt.policies import SpikingMLP

    inputs = torch.rand(5, 6, generator=torch.Generator().manual_seed(0)) * 3
    hard, smooth = SpikingMLP(6, 3, hidden=(8, 8), steps=4, seed=1), SpikingMLP(6, 3, hidden=(8, 8), steps=4,
                                                                               surrogate=True, seed=1)  # fmt: skip
    spikes = []
    first = hard(inputs, record=spikes)
    assert torch.equal(first, hard(inputs)) and torch.equal(first, smooth(inputs))  # same forward, repeatable
    assert len(spikes) == 4 * 2 and all(set(s.unique().tolist()) <= {0.0, 1.0} for s in spikes)
    assert any(float(s.sum()) > 0 for s in spikes)  # it does fire
    for model in (hard, smooth):
        model.zero_grad()
        model(inputs).square().sum().backward()
    assert hard.hidden[0].weight.grad is None  # the Heaviside cuts the graph: backprop gets nothing
    assert float(smooth.hidden[0].weight.grad.abs().sum()) > 0.0
    with pytest.raises(ValueError, match="Invalid decay"):
        SpikingMLP(6, 3, decay=1.0)


def test_layerwise_lr_trains_the_spiking_mlp_through_its_time_steps():
    from bbopt.policies import SpikingMLP

    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    labels = torch.arange(3).repeat(30)
    inputs = centers[labels] + 0.3 * torch.randn(90, 2, generator=generator)
    model = SpikingMLP(2, 3, hidden=(16,), steps=4, seed=0)
    solver = LayerwiseLR(model, torch.optim.Adam(model.parameters(), lr=0.03), sigma=0.3, samples=16, seed=0)
    solver.ask(inputs[:4])
    assert len(solver._asked["record"]["hidden.0"]) == 4  # one noisy call per time step
    solver.tell(torch.zeros(4, 16))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, labels), batch_size=30, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    before = bbopt.evaluate(model, [(inputs, labels)], {"accuracy": accuracy})["accuracy"]
    history = bbopt.fit(model, ZeroOneLoss(), loader, epochs=30, solver=solver, eval_data=[(inputs, labels)],
                        metrics={"accuracy": accuracy}, progress=False)  # fmt: skip
    assert history[-1]["accuracy"] >= 0.9 and history[-1]["accuracy"] > before + 0.2, (before, history[-1])


def test_a_gradient_that_overflows_the_float_type_is_refused_before_the_step():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # float32
    solver = LayerwiseLR(model, torch.optim.Adam(model.parameters(), lr=0.1), sigma=1e-30, samples=4, seed=0)
    solver.ask(torch.ones(2, 3))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="the gradient they imply overflows"):
        solver.tell(torch.tensor([[0.0, 1e10, 0.0, 0.0], [0.0] * 4]))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    solver.tell(torch.zeros(2, 4))  # corrected losses go through
    assert all(torch.isfinite(p).all() for p in model.parameters())


def deep_head_net(seed=0):
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(4, 3), nn.Identity(), nn.Linear(3, 2))
    return nn.Sequential(nn.Linear(3, 4), nn.Identity(), head).double()


def test_the_hybrid_head_by_vjp_and_the_layers_below_by_layer_wise_lr_are_unbiased():
    """LR-WL on a linear net: layer 0 layer-wise (noise s0), the two-layer head '2' by OVLR at its
    output (noise sh). E||y - t||^2 = ||clean - t||^2 + s0^2 ||W_b W_a||_F^2 + const, so the
    exact gradient is autograd of that; z-scores over 1,500 draws for every parameter."""
    model = deep_head_net()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    targets = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    model.zero_grad()
    head = model[2]
    clean = ((model(inputs) - targets) ** 2).sum(-1).mean()
    (clean + 0.3**2 * ((head[2].weight @ head[0].weight) ** 2).sum()).backward()
    truth = {name: p.grad.clone() for name, p in model.named_parameters()}
    solver = LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.0), sigma=0.3, head="2", head_sigma=0.2,
                         samples=8, seed=0)  # fmt: skip
    assert list(solver.layers) == ["0"]
    rows = []
    for _ in range(1500):
        solver.tell(squared(solver.ask(inputs), targets))
        rows.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, exact in truth.items():
        draws = torch.stack([row[name] for row in rows])
        z = ((draws.mean(0) - exact) / (draws.std(0) / 1500**0.5).clamp_min(1e-12)).abs()
        assert float(z.max()) < 4.5, (name, float(z.max()))


def test_the_head_builds_a_graph_only_inside_itself_and_bad_heads_are_refused():
    model = deep_head_net()
    modes = []
    model[0].register_forward_hook(lambda module, args, out: modes.append(("body", out.requires_grad)))
    model[2][2].register_forward_hook(lambda module, args, out: modes.append(("head", out.requires_grad)))
    solver = LayerwiseLR(model, torch.optim.SGD(model.parameters(), lr=0.1), head="2", samples=4, seed=0)
    outputs = solver.ask(torch.randn(2, 3, dtype=torch.float64))
    assert modes == [("body", False), ("head", True)] and not outputs.requires_grad
    assert torch.is_grad_enabled()  # the head turned grad on inside ask; the caller's mode is back
    solver.tell(torch.zeros(2, 4))
    assert all(p.grad is not None for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Invalid head: 'nothing'"):
        LayerwiseLR(model, optimizer, head="nothing")
    with pytest.raises(ValueError, match=r"Invalid layers: \['2.0'\] are inside the head '2'"):
        LayerwiseLR(model, optimizer, head="2", layers=["0", "2.0"])
    with pytest.raises(ValueError, match="does not step every chosen layer"):
        LayerwiseLR(model, torch.optim.SGD(model[0].parameters(), lr=0.1), head="2")
