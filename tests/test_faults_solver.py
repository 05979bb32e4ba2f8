"""Fault injection on the ask/tell core: losses no float can carry through an update, bad loss
types, refused tells, and state dicts that do not fit. Each refusal leaves the solver exactly as
it was (same parameters, optimizer state, noise model, counters) and able to ask again."""

import copy

import numpy as np
import pytest
import torch

import bbopt
from bbopt.noise import FullCovariance
from bbopt.validation import loss_stats
from tests.conftest import mlp_policy, vector_policy

SOLVERS = ("ovlr", "es", "cem")


def make(name="ovlr", policy=None, optimizer=torch.optim.Adam, **options):
    policy = vector_policy(4, value=1.0) if policy is None else policy
    return bbopt.make_solver(name, policy, optimizer(policy.parameters(), lr=0.1), samples=8, seed=0, **options)


def snapshot(solver):
    return copy.deepcopy(solver.state_dict())


def assert_same_state(first, second):
    def walk(a, b, where):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), where
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                walk(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list | tuple):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]")
        else:
            assert a == b, where

    walk(first, second, "state")


def huge(candidates, value, where=0):
    losses = torch.zeros(candidates.shape[:-1], dtype=torch.float64)
    losses.view(-1)[where] = value
    return losses


@pytest.mark.parametrize("value", [1e30, 1e100, 1e308, -1e308])
def test_one_huge_finite_loss_is_refused_by_ovlr_before_any_state_changes(value):
    solver = make("ovlr")
    solver.tell((solver.ask() ** 2).sum(-1))
    before = snapshot(solver)
    candidates = solver.ask()
    with pytest.raises(ValueError, match=r"overflow.*index 3.*normalize=True") as error:
        solver.tell(huge(candidates, value, where=3))
    assert "float32" in str(error.value)
    assert solver.steps == 1 and solver.evaluations == 8
    solver._asked = None  # the pending candidates are not part of the state (their draw is)
    after = snapshot(solver)
    assert not torch.equal(before.pop("generator"), after.pop("generator"))
    assert_same_state(before, after)


@pytest.mark.parametrize("value", [1e30, 1e308])
def test_all_huge_losses_refused_too(value):
    solver = make("ovlr")
    candidates = solver.ask()
    with pytest.raises(ValueError, match="overflow"):
        solver.tell(torch.full(candidates.shape[:-1], value, dtype=torch.float64) * torch.linspace(0.5, 1, 8))


def test_after_a_refused_tell_the_solver_takes_corrected_losses_or_asks_again():
    solver = make("ovlr")
    candidates = solver.ask()
    with pytest.raises(ValueError):
        solver.tell(huge(candidates, 1e30))
    solver.tell((candidates**2).sum(-1))  # the same candidates, corrected losses
    candidates = solver.ask()
    with pytest.raises(ValueError, match="non-finite"):
        solver.tell(huge(candidates, float("nan")))
    candidates = solver.ask()  # or discard them and ask again
    solver.tell((candidates**2).sum(-1))
    assert solver.steps == 2
    assert torch.isfinite(solver.ask()).all()


def test_ask_twice_without_a_refusal_is_still_an_error():
    solver = make("ovlr")
    solver.ask()
    with pytest.raises(RuntimeError, match="ask\\(\\) called twice"):
        solver.ask()


def test_normalized_ovlr_and_rank_solvers_take_huge_losses_and_keep_learning():
    for name, options in (("ovlr", {"normalize": True}), ("es", {}), ("cem", {})):
        solver = make(name, **options)
        candidates = solver.ask()
        solver.tell(huge(candidates, 1e308))
        for _ in range(30):
            candidates = solver.ask()
            solver.tell((candidates**2).sum(-1))
        assert torch.isfinite(solver.ask()).all(), name
        assert float(solver.policy().detach().abs().max()) < 1.0, name  # still moving toward 0


def test_huge_losses_in_batch_and_episode_modes_are_refused_with_their_indices():
    policy = mlp_policy(3, 2)
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=0.01), samples=4, seed=0)
    candidates = solver.ask(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"index \(2, 1\)"):
        solver.tell(huge(candidates, 1e35, where=2 * 4 + 1))
    solver.tell((candidates**2).sum(-1))

    policy = mlp_policy(3, 2)
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=0.01), episodes=4, seed=0)
    for _ in range(3):
        solver.ask(torch.randn(4, 3))
    before = copy.deepcopy(policy.state_dict())
    with pytest.raises(ValueError, match="index 2"):
        solver.tell(torch.tensor([0.0, 1.0, 1e36, 2.0]))
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())
    solver.tell(torch.tensor([0.0, 1.0, 3.0, 2.0]))  # the recorded episodes are still there
    assert solver.steps == 1


def test_a_float64_policy_takes_what_float32_cannot():
    policy = vector_policy(4, value=1.0).double()
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=0.1), samples=8, seed=0)
    solver.tell(huge(solver.ask(), 1e30))
    assert torch.isfinite(solver.ask()).all()


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize(
    "losses, message",
    [
        (np.ones(8, dtype=bool), "bool"),
        (torch.ones(8, dtype=torch.bool), "bool"),
        (np.ones(8, dtype=complex), "complex"),
        (torch.ones(8, dtype=torch.complex64), "complex"),
        ([1 + 1j] * 8, "complex"),
        ([True] * 8, "bool"),
        (np.array(["1"] * 8), "str"),
        ([None] * 8, "object"),
    ],
)
def test_losses_that_are_not_real_numbers_are_refused(name, losses, message):
    solver = make(name)
    solver.ask()
    with pytest.raises(ValueError, match=f"Invalid losses.*{message}"):
        solver.tell(losses)
    solver.tell(list(range(8)))  # integers are real numbers


# ------------------------------------------------------------------------- load_state_dict
def trained(name="ovlr", optimizer=torch.optim.Adam, **options):
    solver = make(name, optimizer=optimizer, **options)
    for _ in range(3):
        candidates = solver.ask()
        solver.tell((candidates**2).sum(-1))
    return solver


def corrupt(change):
    def build(state):
        state = copy.deepcopy(state)
        change(state)
        return state

    return build


def _drop(mapping, key):
    del mapping[key]


BAD_STATES = {
    "not a dict": (lambda state: [state], "expected a dict"),
    "missing key": (corrupt(lambda s: _drop(s, "noise")), "missing 'noise'"),
    "policy shape": (corrupt(lambda s: s["policy"].update(value=torch.zeros(5))), "policy.*value.*shape"),
    "policy key": (corrupt(lambda s: s["policy"].update(extra=torch.zeros(1))), "policy.*extra"),
    "policy nan": (corrupt(lambda s: s["policy"]["value"].fill_(float("nan"))), "policy.*non-finite"),
    "optimizer groups": (corrupt(lambda s: s["optimizer"]["param_groups"].append({})), "optimizer.*group"),
    "optimizer state shape": (
        corrupt(lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(7))),
        "optimizer.*exp_avg.*shape",
    ),
    "generator": (corrupt(lambda s: s.update(generator=torch.zeros(3, dtype=torch.uint8))), "generator"),
    "dimension": (corrupt(lambda s: s.update(dimension=5)), "dimension"),
    "noise": (corrupt(lambda s: s["noise"].update({"sigma.log_sigma": torch.zeros(3)})), "noise"),
    "steps": (corrupt(lambda s: s.update(steps=-1)), "steps"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_a_bad_state_dict_is_refused_before_anything_changes(case):
    build, message = BAD_STATES[case]
    good = trained().state_dict()
    target = make("ovlr")
    target.tell((target.ask() ** 2).sum(-1))
    before = snapshot(target)
    with pytest.raises(ValueError, match=f"Invalid state.*{message}"):
        target.load_state_dict(build(good))
    assert_same_state(before, snapshot(target))
    target.load_state_dict(good)  # and a good one still loads afterwards


def test_adam_state_into_an_sgd_solver_is_refused_at_load():
    state = trained(optimizer=torch.optim.Adam).state_dict()
    target = make("ovlr", optimizer=torch.optim.SGD)
    before = snapshot(target)
    with pytest.raises(ValueError, match=r"Invalid state: optimizer.*betas.*momentum"):
        target.load_state_dict(state)
    assert_same_state(before, snapshot(target))


def test_a_state_dict_with_another_noise_model_is_refused_before_anything_changes():
    state = trained().state_dict()
    policy = vector_policy(4, value=1.0)
    target = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters(), lr=0.1), samples=8, seed=0,
                        noise=FullCovariance(0.5))  # fmt: skip
    before = copy.deepcopy(policy.state_dict())
    with pytest.raises(ValueError, match="Invalid state: noise"):
        target.load_state_dict(state)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_normalized_ovlr_weights_stay_finite_for_the_largest_floats():
    solver = make("ovlr", normalize=True)
    candidates = solver.ask()
    solver.tell(torch.full(candidates.shape[:-1], 1.7e308, dtype=torch.float64) * torch.linspace(0.5, 1, 8))
    assert torch.isfinite(solver.ask()).all()


@pytest.mark.parametrize("name", SOLVERS)
def test_the_stats_of_the_largest_floats_are_their_mean_not_an_overflow(name):
    solver = make(name, normalize=True) if name == "ovlr" else make(name)
    solver.ask()
    losses = 1.7e308 * torch.linspace(0.5, 1, 8, dtype=torch.float64)  # their sum overflows, their mean does not
    stats = solver.tell(losses)
    assert stats["loss_mean"] == pytest.approx(1.7e308 * 0.75, rel=1e-12)
    assert stats["loss_min"] == 0.85e308


def test_loss_stats_keep_numpys_mean_and_only_divide_first_where_the_sum_overflows():
    ordinary = torch.tensor([0.1, 0.2, 0.7, 1e-300], dtype=torch.float64)
    assert loss_stats(ordinary) == {"loss_mean": float(ordinary.numpy().mean()), "loss_min": 1e-300}
    huge = torch.tensor([1.7e308, -1.7e308, 1.7e308, 1.7e308], dtype=torch.float64)
    assert loss_stats(huge) == {"loss_mean": pytest.approx(0.85e308, rel=1e-12), "loss_min": -1.7e308}
    assert loss_stats(huge[:1])["loss_mean"] == 1.7e308


def test_a_gradient_that_overflows_is_refused_after_the_vjp_and_only_a_new_ask_can_follow():
    solver = make("ovlr", sigma=1e-3)  # weights ~1e17 fit float32; the gradient (~1e20 / entry) does not
    solver.tell((solver.ask() ** 2).sum(-1))
    before = copy.deepcopy(solver.optimizer.state_dict()), solver.policy().detach().clone()
    candidates = solver.ask()
    with pytest.raises(ValueError, match=r"the gradient overflow float32.*index 3.*ask again"):
        solver.tell(huge(candidates, 1e18, where=3))
    assert torch.equal(solver.policy().detach(), before[1])
    assert torch.equal(solver.optimizer.state_dict()["state"][0]["exp_avg_sq"], before[0]["state"][0]["exp_avg_sq"])
    with pytest.raises(RuntimeError, match="ask for new candidates"):
        solver.tell((candidates**2).sum(-1))
    candidates = solver.ask()
    solver.tell((candidates**2).sum(-1))
    assert solver.steps == 2
