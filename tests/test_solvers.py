"""One contract run over every registered solver: shapes, pairing, determinism, state_dict."""

import io

import pytest
import torch

import bbopt
from bbopt.envs import sphere
from tests.conftest import mlp_policy, vector_policy

SOLVER_NAMES = bbopt.presets.names(output_space=True)  # the generic contract: output-space solvers
INPUTS = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))


def make(name, policy, seed=0, **options):
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    return bbopt.make_solver(name, policy, optimizer, sigma=0.3, samples=8, seed=seed, **options)


def regression_loss(candidates):
    return ((candidates - 1.0) ** 2).sum(-1)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_registry_builds_each_solver(name):
    solver = make(name, vector_policy(4))
    assert isinstance(solver, bbopt.SOLVERS[name])
    assert isinstance(solver, bbopt.Solver)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_ask_shapes_and_stats(name):
    solver = make(name, vector_policy(4))
    candidates = solver.ask()
    assert candidates.shape == (8, 4)
    stats = solver.tell(sphere(candidates))
    assert set(stats) == {"step", "loss_mean", "loss_min", "grad_norm", "sigma"}
    assert stats["loss_min"] == pytest.approx(float(sphere(candidates).min()))
    assert stats["loss_mean"] == pytest.approx(float(sphere(candidates).mean()))
    batched = make(name, mlp_policy())
    candidates = batched.ask(INPUTS)
    assert candidates.shape == (5, 8, 4)
    batched.tell(regression_loss(candidates))
    assert batched.evaluations == 40 and batched.steps == 1


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_antithetic_pairs_negate_inside_each_group(name):
    policy = mlp_policy()
    solver = make(name, policy, antithetic=True)
    candidates = solver.ask(INPUTS)
    mu = policy(INPUTS).detach()[:, None]
    eps = candidates - mu
    torch.testing.assert_close(eps[:, :4], -eps[:, 4:])  # pair (i, i + n/2) in the same group
    assert not torch.allclose(eps[0], eps[1])  # groups get their own noise


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_antithetic_refuses_odd_samples(name):
    policy = vector_policy(4)
    with pytest.raises(ValueError, match=r"Invalid samples: 7 with antithetic=True .*use 8 or antithetic=False"):
        bbopt.make_solver(name, policy, torch.optim.SGD(policy.parameters(), lr=0.1), samples=7, antithetic=True)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_same_seed_gives_bitwise_identical_runs(name):
    runs = []
    for _ in range(2):
        policy = mlp_policy(seed=1)
        solver = make(name, policy, seed=7)
        asked = []
        for _ in range(10):
            candidates = solver.ask(INPUTS)
            solver.tell(regression_loss(candidates))
            asked.append(candidates)
        runs.append((torch.stack(asked), [p.detach().clone() for p in policy.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert torch.equal(a, b)
    other = make(name, mlp_policy(seed=1), seed=8)
    assert not torch.equal(other.ask(INPUTS), runs[0][0][0])


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_state_dict_round_trip_continues_identically_for_20_steps(name):
    """torch.optim's test shape: step, reload into a fresh copy, assert the two stay identical."""
    solver = make(name, mlp_policy(seed=1), seed=3)
    for _ in range(5):
        solver.tell(regression_loss(solver.ask(INPUTS)))
    buffer = io.BytesIO()
    torch.save(solver.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # no arbitrary pickle needed
    fresh = make(name, mlp_policy(seed=2), seed=99)
    fresh.load_state_dict(state)
    assert (fresh.steps, fresh.evaluations) == (solver.steps, solver.evaluations)
    for _ in range(20):
        a, b = solver.ask(INPUTS), fresh.ask(INPUTS)
        assert torch.equal(a, b)
        stats_a, stats_b = solver.tell(regression_loss(a)), fresh.tell(regression_loss(b))
        assert stats_a == stats_b
    for p, q in zip(solver.policy.parameters(), fresh.policy.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_learned_sigma_state_round_trips(name):
    def build(seed):
        policy = vector_policy(3)
        sigma = bbopt.sigma.Learned([0.5, 0.4, 0.3], lr=0.1)
        return bbopt.make_solver(
            name, policy, torch.optim.Adam(policy.parameters(), lr=0.1), sigma=sigma, samples=8, seed=seed
        )

    solver = build(0)
    for _ in range(5):
        solver.tell(sphere(solver.ask()))
    fresh = build(1)
    fresh.load_state_dict(solver.state_dict())
    for _ in range(20):
        a, b = solver.ask(), fresh.ask()
        assert torch.equal(a, b)
        solver.tell(sphere(a))
        fresh.tell(sphere(b))
    assert torch.equal(solver.sigma.value(), fresh.sigma.value())
    assert not torch.equal(solver.sigma.value(), torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_nan_policy_worst_replaces_by_the_worst_finite_loss_of_the_group(name):
    def run(losses_of):
        policy = mlp_policy(seed=1)
        solver = make(name, policy, seed=4, nan_policy="worst")
        candidates = solver.ask(INPUTS)
        solver.tell(losses_of(candidates))
        return [p.detach().clone() for p in policy.parameters()]

    def with_nan(candidates):
        losses = regression_loss(candidates)
        losses[1, 2] = float("nan")
        losses[3, 0] = float("inf")
        return losses

    def by_hand(candidates):
        losses = regression_loss(candidates)
        losses[1, 2] = torch.cat([losses[1, :2], losses[1, 3:]]).max()
        losses[3, 0] = losses[3, 1:].max()
        return losses

    for a, b in zip(run(with_nan), run(by_hand), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_maximize_is_minimizing_the_negation(name):
    def run(maximize):
        policy = vector_policy(4)
        solver = make(name, policy, seed=5, maximize=maximize)
        for _ in range(3):
            candidates = solver.ask()
            solver.tell(-sphere(candidates) if maximize else sphere(candidates))
        return policy.value.detach().clone()

    assert torch.equal(run(True), run(False))
