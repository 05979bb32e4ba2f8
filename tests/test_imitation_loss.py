"""Demonstrations mixed into simulator training (bbopt.rollout.imitation.ImitationLoss): the
update adds exactly the weighted imitation gradient (SGD, same episodes and noise with and
without it), the weight's decay, minibatches seeded and resumed bit for bit, a refused tell
leaves the stream as it was, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

import bbopt
from bbopt.rollout import Trainer, control_policy
from bbopt.rollout.imitation import ImitationLoss
from tests.test_rollout import FACTORY, SPACE, flat, straight_and_resumed

OBS, ACT = SPACE.observation_space.shape[0], SPACE.action_space.shape[0]


def squared(outputs, targets):
    return ((outputs - targets) ** 2).sum(dim=-1)


def demos(count=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, OBS, generator=generator), 0.5 * torch.randn(count, ACT, generator=generator)


def sgd_solver(lr=0.1, seed=0):
    policy = control_policy(SPACE.observation_space, SPACE.action_space, hidden=(16,), seed=seed)
    return bbopt.make_solver("ovlr", policy, torch.optim.SGD(policy.parameters(), lr=lr), sigma=0.3, episodes=8,
                             seed=seed)  # fmt: skip


def test_an_update_adds_the_weighted_imitation_gradient_to_the_estimate():
    inputs, targets = demos()
    start = copy.deepcopy(sgd_solver().policy)
    expected = start(inputs)  # all 20 pairs in the minibatch (batch_size >= N): the full-data gradient
    (0.7 * squared(expected, targets).mean()).backward()
    imitation_gradient = torch.cat([p.grad.reshape(-1) for p in start.parameters()])
    after = {}
    for mixed in (False, True):
        imitation = ImitationLoss(inputs, targets, squared, weight=0.7, batch_size=64) if mixed else None
        with Trainer(FACTORY, sgd_solver(), eval_every=0, seed=3, imitation=imitation) as trainer:
            record = trainer.update()
        after[mixed] = flat(trainer.solver.policy)
        assert ("imitation_loss" in record) == mixed
    # the same episodes and noise: the difference is SGD's step on the imitation term alone. Both
    # runs end in float32 at the size of the estimate's own step (up to ~36 here), so their
    # difference is exact to a few units in the last place of that size, not to a fixed 1e-6
    resolution = 4 * torch.finfo(torch.float32).eps * float(after[False].abs().max())
    torch.testing.assert_close(after[True] - after[False], -0.1 * imitation_gradient, rtol=1e-4, atol=resolution)


def test_the_weight_decays_per_update_and_the_minibatches_are_seeded():
    inputs, targets = demos()
    policy = sgd_solver().policy
    first, second = (ImitationLoss(inputs, targets, squared, weight=2.0, decay=0.5, batch_size=4, seed=5)
                     for _ in range(2))  # fmt: skip
    values, means = [], []
    for _ in range(3):
        values.append(float(first(policy).detach()))
        means.append(first.last_loss)  # the minibatch's unweighted mean
    assert values == pytest.approx([2.0 * 0.5**k * mean for k, mean in enumerate(means)], rel=1e-6)
    assert values == [float(second(policy).detach()) for _ in range(3)]
    assert [first.current_weight(), second.updates] == [2.0 * 0.5**3, 3]
    other = ImitationLoss(inputs, targets, squared, weight=2.0, decay=0.5, batch_size=4, seed=6)
    assert float(other(policy).detach()) != values[0]  # another seed, another minibatch


def test_a_run_with_imitation_resumes_bit_for_bit_and_mismatched_checkpoints_are_refused():
    inputs, targets = demos()

    def trainer(mixed=True):
        imitation = ImitationLoss(inputs, targets, squared, weight=0.3, decay=0.9, batch_size=4, seed=7)
        return Trainer(FACTORY, sgd_solver(seed=2), eval_every=0, seed=3, imitation=imitation if mixed else None)

    straight, resumed, state = straight_and_resumed(trainer)
    assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
    assert torch.equal(resumed.imitation.generator.get_state(), straight.imitation.generator.get_state())
    with trainer(mixed=False) as plain, pytest.raises(ValueError, match="holds an imitation loss, this trainer has"):
        plain.load_state_dict(state)
    with trainer(mixed=False) as plain:
        bare = plain.state_dict()
    with trainer() as mixed, pytest.raises(ValueError, match="holds no imitation loss"):
        mixed.load_state_dict(bare)


def test_a_refused_tell_leaves_the_minibatch_stream_as_it_was(monkeypatch):
    inputs, targets = demos()
    imitation = ImitationLoss(inputs, targets, squared, batch_size=4, seed=1)
    with Trainer(FACTORY, sgd_solver(), eval_every=0, seed=3, imitation=imitation) as trainer:
        before = imitation.state_dict()

        def refuse(*args, **kwargs):
            raise ValueError("refused")

        monkeypatch.setattr(trainer.solver, "tell", refuse)
        with pytest.raises(ValueError, match="refused"):
            trainer.update()
        assert imitation.updates == before["updates"] == 0
        assert torch.equal(imitation.generator.get_state(), before["generator"])


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        ((torch.zeros(3, 2), torch.zeros(4, 1)), {}, r"\[3, 2\] inputs and \[4, 1\] targets"),
        ((torch.zeros(0, 2), torch.zeros(0, 1)), {}, "N >= 1"),
        ((torch.full((3, 2), float("nan")), torch.zeros(3, 1)), {}, "non-finite inputs"),
        ((torch.zeros(3, 2), torch.full((3, 1), float("inf"))), {}, "non-finite targets"),
        ((torch.zeros(3, 2), torch.zeros(3, 1)), {"weight": 0.0}, "weight"),
        ((torch.zeros(3, 2), torch.zeros(3, 1)), {"decay": 1.5}, "decay"),
        ((torch.zeros(3, 2), torch.zeros(3, 1)), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_demonstrations_and_settings_are_refused(arguments, options, message):
    with pytest.raises(ValueError, match=message):
        ImitationLoss(*arguments, squared, **options)


def test_bad_losses_states_and_imitation_objects_are_refused():
    inputs, targets = demos()
    with pytest.raises(ValueError, match="not callable"):
        ImitationLoss(inputs, targets, "l1")
    summed = ImitationLoss(inputs, targets, lambda outputs, targets: (outputs - targets).sum(), batch_size=4)
    with pytest.raises(ValueError, match=r"shape \[\] \(expected one per pair, \[4\]\)"):
        summed(sgd_solver().policy)
    imitation = ImitationLoss(inputs, targets, squared, seed=1)
    with pytest.raises(ValueError, match=r"missing \['updates'\]"):
        imitation.load_state_dict({"generator": imitation.generator.get_state(), "seed": 1})
    with pytest.raises(ValueError, match=r"seed 2 \(this loss has seed 1\)"):
        imitation.load_state_dict(imitation.state_dict() | {"seed": 2})
    with pytest.raises(ValueError, match="Invalid imitation"):
        Trainer(FACTORY, sgd_solver(), eval_every=0, imitation=squared)
