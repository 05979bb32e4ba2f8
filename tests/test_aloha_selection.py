"""Which weights an ALOHA fine-tuning run keeps: the screen's shortlist and its confirmation on
fresh placements (`bbopt.envs.aloha.selection`), with a scripted stand-in for the simulator."""

from __future__ import annotations

import itertools

import pytest
import torch

from bbopt.envs.aloha.placements import CONFIRMATION_SEED, EVAL_SEED, VALIDATION_SEED
from bbopt.envs.aloha.selection import Selection


class Scores:
    """``run(episodes, seed)`` for a one-weight policy: the success rate a table gives the current
    weight on the screen's or the confirmation's placements (weight ``w`` is the update ``w``)."""

    def __init__(self, policy, screen: dict, confirm: dict):
        self.policy, self.table = policy, {VALIDATION_SEED: screen, CONFIRMATION_SEED: confirm}
        self.calls = []

    def __call__(self, episodes: int, seed: int) -> dict:
        update = int(self.policy.weight.item())
        self.calls.append((seed, episodes, update))
        success = self.table[seed][update]
        return {"success_rate": success, "mean_stage": 1.0, "records": [{"steps": 10}] * episodes}


def screened(screen: dict, confirm: dict, confirmation_episodes: int = 5, shortlist: int = 2):
    """A run whose update u sets the weight to u, screened after every update."""
    policy = torch.nn.Linear(1, 1, bias=False)
    run = Scores(policy, screen, confirm)
    selection = Selection(policy, run, 3, confirmation_episodes, shortlist=shortlist)
    for update in sorted(screen):
        with torch.no_grad():
            policy.weight.fill_(update)
        selection.screen(update, 100 * update)
    with torch.no_grad():
        policy.weight.fill_(-1.0)  # the last weights are not kept by accident
    return policy, run, selection.choose()


def test_the_confirmation_overrules_a_lucky_screen():
    screen = {0: 0.3, 1: 0.6, 2: 0.5, 3: 0.4, 4: 0.55}
    confirm = {0: 0.3, 1: 0.2, 2: 0.45, 3: 0.9, 4: 0.35}  # 2 and 3 would be better, but are not shortlisted
    policy, run, record = screened(screen, confirm)
    assert policy.weight.item() == 4.0  # not the screen's best (1)
    assert record["update"] == 4 and record["validation_success"] == 0.55 and record["confirmation_success"] == 0.35
    assert record["start_validation_success"] == 0.3
    # The start and the two best screened, in the screen's order, on 5 fresh placements each.
    assert run.calls[len(screen) :] == [(CONFIRMATION_SEED, 5, 0), (CONFIRMATION_SEED, 5, 1), (CONFIRMATION_SEED, 5, 4)]
    assert record["confirmation"] == [[0, 0.3, 1.0], [1, 0.2, 1.0], [4, 0.35, 1.0]]
    assert record["validation_curve"] == [[100 * u, s, 1.0] for u, s in screen.items()]
    assert record["validation_steps"] == 10 * (3 * len(screen) + 5 * 3)


def test_the_start_is_kept_unless_something_beats_it_on_the_confirmation():
    policy, _, record = screened({0: 0.3, 1: 0.6, 2: 0.5}, {0: 0.4, 1: 0.4, 2: 0.1})
    assert policy.weight.item() == 0.0 and record["update"] == 0 and record["confirmation_success"] == 0.4


def test_ties_on_the_screen_shortlist_the_earlier():
    _, run, record = screened({0: 0.1, 1: 0.5, 2: 0.5, 3: 0.5}, {0: 0.0, 1: 0.2, 2: 0.2, 3: 0.9})
    assert [update for _, _, update in run.calls[4:]] == [0, 1, 2] and record["update"] == 1


def test_without_a_confirmation_the_screens_best_is_kept_the_start_on_ties():
    policy, run, record = screened({0: 0.3, 1: 0.6, 2: 0.6}, {}, confirmation_episodes=0)
    assert policy.weight.item() == 1.0 and record["update"] == 1 and "confirmation" not in record
    assert all(seed == VALIDATION_SEED for seed, _, _ in run.calls)
    policy, _, record = screened({0: 0.3, 1: 0.3}, {}, confirmation_episodes=0)
    assert policy.weight.item() == 0.0 and record["update"] == 0


def test_the_placement_ranges_are_apart():
    """Demonstrations, screens and confirmations of up to 250,000 placements each stay out of the
    next range (the demonstrations' seeds are 0, 1, ...)."""
    starts = [0, VALIDATION_SEED, CONFIRMATION_SEED, EVAL_SEED]
    assert all(b - a >= 250_000 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(
    "episodes, confirmation_episodes, shortlist, message",
    [
        (0, 5, 2, r"Invalid validation_episodes: 0"),
        (3, -1, 2, r"Invalid confirmation_episodes: -1"),
        (3, 2.5, 2, r"Invalid confirmation_episodes: 2.5"),
        (3, True, 2, r"Invalid confirmation_episodes: True"),
        (3, 5, 0, r"Invalid shortlist: 0"),
    ],
)
def test_bad_settings_are_refused(episodes, confirmation_episodes, shortlist, message):
    with pytest.raises(ValueError, match=message):
        Selection(torch.nn.Linear(1, 1), lambda *_: {}, episodes, confirmation_episodes, shortlist=shortlist)


def test_choose_before_a_screen_is_refused():
    with pytest.raises(RuntimeError, match="before any screen"):
        Selection(torch.nn.Linear(1, 1), lambda *_: {}, 3, 5).choose()
