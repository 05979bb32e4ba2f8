"""Query allocation (bbopt.allocation): budgets, pairs, the plain estimator as a special case,
unbiasedness against autograd, the variance saving, state and bad input."""

import copy
import math

import pytest
import torch
from torch import nn

import bbopt
from bbopt.allocation import Bernoulli, Equal, Gaussian, Optimal, Pilot, apportion, predicted_reduction

ALLOCATORS = {
    "equal": Equal,
    "optimal": Optimal,
    "gaussian": Gaussian,
    "bernoulli": lambda: Bernoulli(p=0.5),
    "optimal_reuse": lambda: Optimal(reuse=True),
}


def batch(count=6, features=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, features, generator=generator)
    targets = torch.randn(count, 3, generator=generator)
    scales = torch.logspace(-1, 1, count)  # inputs differ in difficulty: the loss scale spans 100x
    return inputs, targets, scales


def quadratic(candidates, targets, scales):
    """``scale_j * ||x - c_j||^2`` per row, smooth: E over the noise has mu's gradient."""
    return scales * ((candidates - targets) ** 2).sum(-1)


def step(solver, inputs, targets, scales):
    """One solver step through the pilot (if any); returns the sizes of each input's rows."""
    while True:
        x = solver.ask(inputs)
        if solver.allocation is None:  # the plain batch mode: [B, n, d]
            solver.tell(quadratic(x, targets[:, None], scales[:, None]))
            return x, None
        groups = solver.groups
        solver.tell(quadratic(x, targets[groups], scales[groups]))
        if not solver.pending:
            return x, groups


def make(cls=bbopt.OVLR, allocation=None, samples=8, seed=0, lr=0.0, **options):
    torch.manual_seed(3)
    model = nn.Linear(4, 3)
    return model, cls(model, torch.optim.SGD(model.parameters(), lr=lr), sigma=0.5, samples=samples, seed=seed,
                      allocation=allocation, **options)  # fmt: skip


# ------------------------------------------------------------------------------ apportion
@pytest.mark.parametrize("scores", [[1, 1, 1], [0, 0, 0], [9, 1, 0], [1e-9, 1, 100], [5, 5, 0.1, 0.1]])
@pytest.mark.parametrize("total", [12, 13, 40])
def test_apportion_sums_exactly_and_respects_the_minimum(scores, total):
    sizes = apportion(torch.tensor(scores, dtype=torch.float64), total, 2)
    assert int(sizes.sum()) == total and int(sizes.min()) >= 2 and sizes.dtype == torch.long


def test_apportion_is_proportional_above_the_minimum():
    assert apportion(torch.tensor([1.0, 3.0]), 40, 1).tolist() == [10, 30]
    assert apportion(torch.tensor([0.0, 1.0, 1.0]), 12, 2).tolist() == [2, 5, 5]  # water-filling
    assert apportion(torch.zeros(4), 8, 1).tolist() == [2, 2, 2, 2]


def test_apportion_refuses_a_budget_below_the_minimum():
    with pytest.raises(ValueError, match="Invalid budget: 5 candidates for 3 inputs"):
        apportion(torch.ones(3), 5, 2)


def test_predicted_reduction_is_the_theorem():
    traces = torch.tensor([1.0, 4.0, 9.0, 16.0])
    assert predicted_reduction(traces) == pytest.approx(1 - 10.0**2 / (4 * 30.0))
    assert predicted_reduction(torch.full((5,), 2.0)) == pytest.approx(0.0, abs=1e-12)
    assert predicted_reduction(torch.zeros(3)) == 0.0


# ------------------------------------------------------------------- through the solver
@pytest.mark.parametrize("name", list(ALLOCATORS))
@pytest.mark.parametrize("antithetic", [True, False])
def test_the_step_spends_the_budget_exactly_in_whole_pairs(name, antithetic):
    inputs, targets, scales = batch()
    _, solver = make(allocation=ALLOCATORS[name](), samples=10, antithetic=antithetic)
    for _ in range(3):
        before = solver.evaluations
        x, groups = step(solver, inputs, targets, scales)
        assert solver.evaluations - before == len(inputs) * 10
        sizes = torch.bincount(groups, minlength=len(inputs))
        assert int(sizes.min()) >= 2
        assert torch.equal(groups, torch.arange(len(inputs)).repeat_interleave(sizes))  # input after input
        if antithetic:
            mu = solver.policy(inputs).detach()
            start = 0
            for j, size in enumerate(sizes.tolist()):
                offset = x[start : start + size] - mu[j]
                half = size // 2
                torch.testing.assert_close(offset[:half], -offset[half:])  # pairs (eps, -eps) intact
                start += size


@pytest.mark.parametrize("cls", [bbopt.OVLR, bbopt.ES, bbopt.CEM])
def test_equal_allocation_is_the_plain_batch_estimator(cls):
    inputs, targets, scales = batch()
    results = []
    for allocation in (None, Equal()):
        model, solver = make(cls, allocation=allocation)
        x = solver.ask(inputs)
        flat = x.reshape(-1, 3)
        losses = quadratic(flat, targets.repeat_interleave(8, 0), scales.repeat_interleave(8))
        solver.tell(losses if allocation is not None else losses.reshape(len(inputs), 8))
        results.append((flat, model.weight.grad.clone(), solver.noise.mean_sigma()))
    assert torch.equal(results[0][0], results[1][0])  # the same draws
    torch.testing.assert_close(results[0][1], results[1][1])
    assert results[0][2] == pytest.approx(results[1][2])


@pytest.mark.parametrize("name", ["optimal", "gaussian", "bernoulli", "optimal_reuse"])
def test_one_input_is_the_plain_estimator_without_a_pilot(name):
    inputs, targets, scales = batch(count=1)
    results = []
    for allocation in (None, ALLOCATORS[name]()):
        model, solver = make(allocation=allocation)
        x = solver.ask(inputs)
        losses = quadratic(x.reshape(-1, 3), targets, scales)
        solver.tell(losses if allocation is not None else losses[None])
        assert not solver.pending
        results.append((x.reshape(-1, 3), model.weight.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def autograd_gradient(model, inputs, targets, scales):
    model.zero_grad()
    quadratic(model(inputs), targets, scales).mean().backward()
    return torch.cat([model.weight.grad.reshape(-1), model.bias.grad]).clone()


@pytest.mark.parametrize("name", list(ALLOCATORS))
@pytest.mark.parametrize("antithetic", [True, False])
def test_allocated_estimates_are_unbiased(name, antithetic):
    """Monte Carlo mean of the allocated estimator against autograd's gradient of the batch's
    mean loss (E over Gaussian noise of a quadratic has mu's gradient): every z-score small."""
    inputs, targets, scales = batch(count=5)
    model, solver = make(allocation=ALLOCATORS[name](), samples=6, antithetic=antithetic, baseline=True)
    truth = autograd_gradient(model, inputs, targets, scales)
    draws = []
    for _ in range(600):
        step(solver, inputs, targets, scales)
        draws.append(torch.cat([model.weight.grad.reshape(-1), model.bias.grad]).clone())
    draws = torch.stack(draws).double()
    z = (draws.mean(0) - truth) / (draws.std(0) / math.sqrt(len(draws)))
    assert float(z.abs().max()) < 4.5, z


def batch_variance(allocation, draws=300, seed=0):
    inputs, targets, scales = batch(count=8)
    model, solver = make(allocation=allocation, samples=16, seed=seed)
    rows = []
    for _ in range(draws):
        step(solver, inputs, targets, scales)
        rows.append(torch.cat([model.weight.grad.reshape(-1), model.bias.grad]).clone())
    rows = torch.stack(rows).double()
    return float(((rows - rows.mean(0)) ** 2).sum(1).mean())


def test_optimal_allocation_lowers_the_variance_of_heterogeneous_inputs():
    """Loss scales spanning 100x: the theorem predicts a large saving; at least half is reached
    (pilot and rounding included; benchmarks/allocation.py measures it closely)."""
    _, _, scales = batch(count=8)
    predicted = predicted_reduction(scales**2)  # per-input trace ~ scale^2 (same geometry)
    equal, optimal = batch_variance(None), batch_variance(Optimal())
    assert predicted > 0.3
    assert 1 - optimal / equal > 0.5 * predicted, (equal, optimal, predicted)


@pytest.mark.parametrize("name", list(ALLOCATORS))
def test_state_dict_round_trip_continues_the_same_run(name):
    inputs, targets, scales = batch()
    model, solver = make(allocation=ALLOCATORS[name](), lr=0.05)
    for _ in range(2):
        step(solver, inputs, targets, scales)
    state = copy.deepcopy(solver.state_dict())  # torch's state dicts share the live tensors
    for _ in range(3):
        step(solver, inputs, targets, scales)
    other_model, other = make(allocation=ALLOCATORS[name](), lr=0.05, seed=99)
    other.load_state_dict(state)
    for _ in range(3):
        step(other, inputs, targets, scales)
    assert torch.equal(model.weight, other_model.weight)
    if name == "gaussian":
        assert not torch.equal(solver.allocation.parameters, torch.tensor([1.0, 0.5, math.log(0.2), 0.0]).double())
        assert torch.equal(solver.allocation.parameters, other.allocation.parameters)


def test_same_seed_same_allocations():
    inputs, targets, scales = batch()
    runs = []
    for _ in range(2):
        _, solver = make(allocation=Gaussian())
        runs.append([step(solver, inputs, targets, scales)[1] for _ in range(3)])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_gaussian_allocator_learns_to_favour_high_trace_inputs():
    """Traces rising with the pilot loss: the LR gradient moves the mean allocation to a lower
    objective J = sum t_j / n_j than its start (which already leans on the loss) and than equal."""
    allocator = Gaussian(steps=50, shrink=0.0)
    losses = torch.linspace(-1.5, 1.5, 16, dtype=torch.float64)
    outputs = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pilot = Pilot(traces=torch.exp(3 * losses), losses=losses, outputs=outputs)
    start = allocator.distribution(pilot).mean
    sizes = allocator.sizes(16, 64, 1, pilot, torch.Generator().manual_seed(0))
    means = torch.stack([torch.ones(16).double(), start, allocator.distribution(pilot).mean])
    equal, before, after = allocator.objective(means, pilot, 64, 1)
    assert after < 0.8 * before < 0.8 * equal
    assert int(sizes.sum()) == 64 and int(sizes[-4:].sum()) > 4 * int(sizes[:4].sum())


def test_training_with_an_allocator_through_bbopt_train():
    inputs, targets, _ = batch(count=12)
    model, solver = make(allocation=Optimal(), lr=0.05)
    data = [(inputs, targets)]
    history = bbopt.fit(model, lambda x, y: ((x - y) ** 2).sum(-1), data, epochs=30, solver=solver,
                        progress=False)  # fmt: skip
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert solver.evaluations == 30 * 12 * 8 and not solver.pending


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"allocation": "optimal"}, "Invalid allocation: str"),
        ({"allocation": Optimal(), "episodes": 8, "samples": None}, "episode mode has none"),
        ({"allocation": Optimal(pilot=3)}, "Invalid allocation: pilot 3 with antithetic=True"),
        ({"allocation": Optimal(pilot=4), "samples": 4}, "Invalid samples: 4 per input leaves 0"),
        ({"allocation": Equal(), "samples": 1, "antithetic": False}, "leaves 1"),
    ],
)
def test_bad_solver_options(options, match):
    model = nn.Linear(4, 3)
    options = {"samples": 8} | options
    with pytest.raises(ValueError, match=match):
        bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), sigma=0.5, **options)


@pytest.mark.parametrize(
    ("make_allocator", "match"),
    [
        (lambda: Optimal(pilot=1), "Invalid pilot"),
        (lambda: Bernoulli(p=1.5), "Invalid p"),
        (lambda: Optimal(shrink=-0.1), "Invalid shrink"),
        (lambda: Gaussian(shrink=2), "Invalid shrink"),
        (lambda: Optimal(reuse="yes"), "Invalid reuse"),
        (lambda: Gaussian(lr=0.0), "Invalid lr"),
        (lambda: Gaussian(draws=1), "Invalid draws"),
    ],
)
def test_bad_allocator_arguments(make_allocator, match):
    with pytest.raises(ValueError, match=match):
        make_allocator()


def test_bad_use_of_an_allocated_step():
    inputs, targets, scales = batch()
    _, solver = make(allocation=Optimal())
    with pytest.raises(ValueError, match="allocation= is for batch mode"):
        solver.ask()
    with pytest.raises(RuntimeError, match="before ask"):
        solver.tell(torch.zeros(12))
    x = solver.ask(inputs)
    with pytest.raises(RuntimeError, match=r"ask\(\) called twice"):
        solver.ask(inputs)
    with pytest.raises(ValueError, match="Invalid losses"):
        solver.tell(torch.zeros(len(x) + 1))
    solver.tell(quadratic(x, targets[solver.groups], scales[solver.groups]))  # the pilot, after a refusal
    assert solver.pending
    with pytest.raises(RuntimeError, match="before ask"):
        solver.tell(torch.zeros(12))
    with pytest.raises(RuntimeError, match=r"between ask\(\) and tell\(\)"):
        solver.state_dict()
    with pytest.raises(ValueError, match="the pilot of another batch"):
        solver.ask(inputs + 1)
    x = solver.ask(inputs.clone())  # the same batch, another tensor: fine
    solver.tell(quadratic(x, targets[solver.groups], scales[solver.groups]))
    assert solver.steps == 1 and not solver.pending


def test_states_with_and_without_an_allocator_do_not_mix():
    _, plain = make()
    _, allocated = make(allocation=Gaussian())
    with pytest.raises(ValueError, match="holds no allocator state"):
        allocated.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="holds an allocator's state"):
        plain.load_state_dict(allocated.state_dict())
    state = allocated.state_dict()
    state["allocation"]["parameters"] = torch.tensor([float("nan")] * 4)
    before = allocated.allocation.parameters.clone()
    with pytest.raises(ValueError, match=r"allocation\.parameters holds non-finite"):
        allocated.load_state_dict(state)
    assert torch.equal(allocated.allocation.parameters, before)


def test_a_pilot_whose_signal_overflows_is_refused_and_can_be_retold():
    inputs, targets, scales = batch()
    _, solver = make(allocation=Optimal())
    x = solver.ask(inputs)
    huge = torch.full((len(x),), 1e300, dtype=torch.float64)
    huge[::2] = -1e300
    with pytest.raises(ValueError, match="pilot's signal overflows"):
        solver.tell(huge)
    assert not solver.pending
    solver.tell(quadratic(x, targets[solver.groups], scales[solver.groups]))
    assert solver.pending
