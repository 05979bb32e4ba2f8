"""bbopt.schedules.KLAdaptiveLR: the step follows each update's KL, within its bounds, and its state
travels in the optimizer's state dict."""

import math

import pytest
import torch

from bbopt.schedules import KLAdaptiveLR


def optimizer(lr=0.01, groups=1):
    return torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for _ in range(groups)])


@pytest.mark.parametrize(("kl", "factor"), [(0.05, 1 / 1.5), (0.041, 1 / 1.5), (0.04, 1.0), (0.02, 1.0),
                                            (0.01, 1.0), (0.0099, 1.5), (0.0, 1.5)])  # fmt: skip
def test_the_step_shrinks_past_twice_the_target_grows_under_half_and_holds_between(kl, factor):
    adam = optimizer(0.01, groups=2)
    KLAdaptiveLR(adam, 0.02, bounds=(0.01, 3.0)).step(kl)
    assert [group["lr"] for group in adam.param_groups] == pytest.approx([0.01 * factor] * 2)


def test_by_default_the_initial_step_is_the_largest_and_the_step_returns_to_it():
    adam = optimizer(0.01)
    schedule = KLAdaptiveLR(adam, 0.02)
    schedule.step(0.0)
    assert adam.param_groups[0]["lr"] == 0.01
    schedule.step(1.0)
    schedule.step(1.0)
    assert adam.param_groups[0]["lr"] == pytest.approx(0.01 / 1.5**2)
    for _ in range(3):
        schedule.step(0.001)
    assert adam.param_groups[0]["lr"] == pytest.approx(0.01)


def test_the_step_stays_within_its_bounds_times_the_initial_step():
    adam = optimizer(0.01)
    schedule = KLAdaptiveLR(adam, 0.02, bounds=(0.1, 3.0))
    for _ in range(20):
        schedule.step(1.0)
    assert adam.param_groups[0]["lr"] == pytest.approx(0.001)
    for _ in range(40):
        schedule.step(0.0)
    assert adam.param_groups[0]["lr"] == pytest.approx(0.03)
    assert adam.param_groups[0]["initial_lr"] == 0.01


@pytest.mark.parametrize("kl", [None, math.nan, math.inf])
def test_an_update_without_a_finite_kl_leaves_the_step(kl):
    adam = optimizer(0.01)
    KLAdaptiveLR(adam, 0.02).step(kl)
    assert adam.param_groups[0]["lr"] == 0.01


def test_the_adapted_step_and_its_bounds_resume_from_the_optimizers_state_dict():
    adam = optimizer(0.01)
    schedule = KLAdaptiveLR(adam, 0.02, bounds=(0.5, 2.0))
    schedule.step(0.0)
    state = adam.state_dict()
    fresh = optimizer(0.01)
    KLAdaptiveLR(fresh, 0.02, bounds=(0.5, 2.0))
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.015)
    resumed = KLAdaptiveLR(fresh, 0.02, bounds=(0.5, 2.0))  # a schedule rebuilt after the load keeps initial_lr
    for _ in range(5):
        resumed.step(0.0)
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.02)  # twice the first step, not twice the resumed one


@pytest.mark.parametrize(("options", "message"), [
    ({"target": 0.0}, "Invalid target"), ({"target": -0.1}, "Invalid target"), ({"target": math.nan}, "Invalid target"),
    ({"factor": 1.0}, "Invalid factor"), ({"bounds": (2.0, 3.0)}, "Invalid bounds"),
    ({"bounds": (0.1, 0.5)}, "Invalid bounds"), ({"bounds": (0.0, 2.0)}, "Invalid bound"),
])  # fmt: skip
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        KLAdaptiveLR(optimizer(), **({"target": 0.02} | options))
