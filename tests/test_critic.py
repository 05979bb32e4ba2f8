"""The state-value control variate of per-step credit (bbopt.rollout.critic.StateValue): the
Trainer's estimate keeps its mean with any V(s, t) (Monte Carlo, paired with the plain
cost-to-go), GAE against a hand computation, the fit learns and keeps predictions across target
rescaling, checkpoints round-trip bit for bit, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bbopt.rollout import Trainer
from bbopt.rollout.critic import StateValue
from tests.test_rollout import FACTORY, flat, make_solver, straight_and_resumed


def gradient(solver):
    return torch.cat([p.grad.reshape(-1) for p in solver.policy.parameters()]).double()


def frozen_critic(seed=0):
    """A fixed, arbitrary V(s): random last layer, never fitted."""
    critic = StateValue(hidden=(8,), seed=seed)
    critic.fit = lambda *args: 0.0
    return critic


def test_any_state_value_keeps_the_estimate_unbiased():
    """Same episodes (seeds) and noise (solver seed) with and without a fixed arbitrary V: the
    paired difference of the policy gradients has mean zero (z-scores over 300 updates)."""
    draws = 300
    runs = {}
    for name in ("plain", "critic"):
        solver = make_solver("ovlr", seed=1)
        for group in solver.optimizer.param_groups:
            group["lr"] = 0.0  # the policy stays put: every draw estimates the same gradient
        critic = frozen_critic() if name == "critic" else None
        with Trainer(FACTORY, solver, eval_every=0, credit="to_go", critic=critic) as trainer:
            if critic is not None:
                with torch.no_grad():
                    critic.network.layers[-1].weight.normal_(0, 3.0, generator=torch.Generator().manual_seed(0))
                    critic.network.layers[-1].bias.fill_(5.0)
            rows = []
            for _ in range(draws):
                trainer.update()
                rows.append(gradient(solver))
        runs[name] = torch.stack(rows)
    difference = runs["critic"] - runs["plain"]
    assert difference.abs().max() > 1e-3  # the critic changes every estimate...
    z = difference.mean(0) / (difference.std(0) / draws**0.5)
    assert z.abs().max() < 4.0, z  # ...but not their mean


def test_gae_lambda_one_is_cost_to_go_minus_value_and_zero_is_the_one_step_error():
    costs = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    alive = np.array([[True, True], [True, True], [True, False]])  # episode 1 ends after two steps
    to_go = np.array([[9.0, 6.0], [8.0, 4.0], [5.0, 0.0]])
    values = np.array([[2.0, 1.0], [1.0, 3.0], [4.0, 0.0]])
    critic = StateValue()
    np.testing.assert_allclose(critic.advantages(to_go, costs, values, alive), np.where(alive, to_go - values, 0))
    critic.gae_lambda = 0.0
    one_step = np.array([[1 + 1 - 2, 2 + 3 - 1], [3 + 4 - 1, 4 + 0 - 3], [5 + 0 - 4, 0.0]])
    np.testing.assert_allclose(critic.advantages(to_go, costs, values, alive), one_step)
    critic.gae_lambda = 0.5  # A_t = delta_t + 0.5 A_{t+1}
    expected = one_step.copy()
    expected[1] += 0.5 * np.where(alive[2], expected[2], 0)
    expected[0] += 0.5 * expected[1]
    np.testing.assert_allclose(critic.advantages(to_go, costs, values, alive), expected)


def test_discounted_gae_against_a_hand_computation_and_telescoping_at_lambda_one():
    """With gamma < 1: delta_t = c_t + gamma V(s_{t+1}) - V(s_t), A_t = delta_t + gamma lambda
    A_{t+1}; as lambda -> 1 the sum telescopes to the discounted cost-to-go minus V."""
    gamma = 0.9
    costs = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    alive = np.array([[True, True], [True, True], [True, False]])
    to_go = np.zeros_like(costs)
    following = np.zeros(2)
    for k in (2, 1, 0):
        following = np.where(alive[k], costs[k] + gamma * following, 0.0)
        to_go[k] = following
    values = np.array([[2.0, 1.0], [1.0, 3.0], [4.0, 0.0]])
    critic = StateValue(gae_lambda=0.5)
    delta = np.array([[1 + gamma * 1 - 2, 2 + gamma * 3 - 1], [3 + gamma * 4 - 1, 4 + 0 - 3], [5 + 0 - 4, 0.0]])
    expected = delta.copy()
    expected[1] += gamma * 0.5 * np.where(alive[2], expected[2], 0)
    expected[0] += gamma * 0.5 * expected[1]
    np.testing.assert_allclose(critic.advantages(to_go, costs, values, alive, discount=gamma), expected)
    critic.gae_lambda = 1.0 - 1e-12  # the recursion, not the lambda = 1 shortcut
    np.testing.assert_allclose(critic.advantages(to_go, costs, values, alive, discount=gamma),
                               np.where(alive, to_go - values, 0.0), atol=1e-9)  # fmt: skip
    with pytest.raises(ValueError, match=r"Invalid discount: 0"):
        critic.advantages(to_go, costs, values, alive, discount=0)


def test_the_trainer_gives_the_critic_its_discount():
    critic = frozen_critic()
    seen = []
    advantages = critic.advantages
    critic.advantages = lambda *args, **kwargs: seen.append(kwargs.get("discount")) or advantages(*args, **kwargs)
    with Trainer(FACTORY, make_solver("ovlr"), eval_every=0, credit="to_go", critic=critic, discount=0.9) as trainer:
        trainer.update()
    assert seen == [0.9]


def test_lambda_return_targets_by_hand_and_the_costs_to_go_at_lambda_one():
    """target="lambda_return" regresses V on A_t + V(s_t), the TD(lambda) return
    R_t = c_t + gamma (1 - end_t) ((1 - lambda) V(s_{t+1}) + lambda R_{t+1}), closed with the
    bootstrap at the segment's end: at lambda 1 the costs-to-go, at lambda 0 the one-step target.
    target="to_go" gives the costs-to-go whatever lambda."""
    from bbopt.rollout.segments import segment_credit

    costs = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [-1.0, 0.5]])
    ends = np.array([[False, False], [True, False], [False, False], [False, True]])
    values = np.array([[0.5, 1.0], [1.5, 2.0], [2.5, 3.0], [-2.0, 4.0]])
    bootstrap, gamma = np.array([10.0, 20.0]), 0.9
    following = np.vstack([values[1:], bootstrap])  # V(s_{t+1}), the bootstrap after the last step
    for lam in (0.0, 0.6, 1.0):
        advantages, to_go = segment_credit(costs, ends, values, bootstrap, discount=gamma, gae_lambda=lam)
        returns, later = np.zeros_like(costs), bootstrap.copy()  # R_T = V(s_T)
        for t in range(3, -1, -1):
            later = costs[t] + gamma * ~ends[t] * ((1 - lam) * following[t] + lam * later)
            returns[t] = later
        critic = StateValue(gae_lambda=lam, target="lambda_return")
        np.testing.assert_allclose(critic.targets(to_go, advantages, values), returns)
        if lam == 0.0:
            np.testing.assert_allclose(returns, costs + gamma * ~ends * following)
        if lam == 1.0:
            np.testing.assert_allclose(returns, to_go)
        else:
            assert np.abs(returns - to_go).max() > 0.1
        plain = StateValue(gae_lambda=lam).targets(to_go, advantages, values)
        np.testing.assert_array_equal(plain, to_go)


@pytest.mark.parametrize("horizon", [None, 12])
@pytest.mark.parametrize("target", ["to_go", "lambda_return"])
def test_the_trainer_fits_the_critic_on_its_targets(horizon, target):
    """Whole episodes and segments: each update's fit regresses on `StateValue.targets` of that
    update's costs-to-go, advantages (before any fit) and values; with "lambda_return" and
    lambda 0.7 these are A + V, not the costs-to-go."""
    critic = StateValue(hidden=(8,), gae_lambda=0.7, target=target, seed=1)
    made, fitted, asked = [], [], []
    targets, fit, advantages = critic.targets, critic.fit, critic.advantages
    critic.targets = lambda *args: made.append((args, targets(*args))) or made[-1][1]
    critic.advantages = lambda *args, **kwargs: asked.append(args[3]) or advantages(*args, **kwargs)  # alive
    critic.fit = lambda observations, steps, given: fitted.append(given.clone()) or fit(observations, steps, given)
    with Trainer(FACTORY, make_solver("ovlr", episodes=4, seed=1), eval_every=0, credit="to_go", seed=2,
                 critic=critic, horizon=horizon) as trainer:  # fmt: skip
        for _ in range(3):
            trainer.update()
    assert len(made) == len(fitted) == 3
    for k, (((to_go, advantages, values), told), given) in enumerate(zip(made, fitted, strict=True)):
        expected = to_go if target == "to_go" else advantages + values
        np.testing.assert_array_equal(told, expected)
        assert np.abs(advantages + values - to_go).max() > 1e-3  # lambda 0.7: the two targets differ
        alive = np.ones(told.shape, dtype=bool) if horizon else asked[k]  # whole episodes: the asked steps
        np.testing.assert_array_equal(
            given.numpy(), np.concatenate([row[on] for row, on in zip(told, alive, strict=True)])
        )


def test_rescaling_the_targets_keeps_every_prediction_and_the_fit_learns():
    critic = StateValue(hidden=(16,), lr=1e-2, epochs=50, batch_size=64, seed=0)
    critic.setup(2, horizon=10)
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(256, 2, generator=generator, dtype=torch.float64)
    steps = torch.randint(0, 10, (256,), generator=generator)
    with torch.no_grad():
        critic.network.layers[-1].weight.normal_(generator=generator)
    before = critic.predict(observations, steps)
    critic._rescale(40.0, 7.0)
    torch.testing.assert_close(critic.predict(observations, steps), before)
    targets = 100.0 + 30.0 * observations[:, 0] - 5.0 * steps  # a value of the state and the time
    first = critic.fit(observations, steps, targets)
    for _ in range(5):
        last = critic.fit(observations, steps, targets)
    assert last < 0.05 * targets.var() and last < first


def test_a_run_with_a_critic_resumes_bit_for_bit_and_mismatched_checkpoints_are_refused():
    """With the per-step recipe's parts: the critic, and reuse passes split into minibatches."""

    def trainer(critic=True):
        return Trainer(FACTORY, make_solver("ovlr", seed=2, reuse=3, minibatches=2), eval_every=0, credit="to_go",
                       seed=3, critic=StateValue(hidden=(8,), seed=4) if critic else None)  # fmt: skip

    straight, resumed, state = straight_and_resumed(trainer)
    assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
    assert torch.equal(flat(resumed.critic.network), flat(straight.critic.network))
    assert resumed.critic.scale == straight.critic.scale
    # The state the resumed run loaded is still the halfway state: a second resume from it
    # continues identically (Adam's moments were aliased into the critic and changed by its fits).
    with trainer() as again:
        again.load_state_dict(state)
        for _ in range(2):
            again.update()
    assert torch.equal(flat(again.critic.network), flat(straight.critic.network))
    with trainer(critic=False) as plain, pytest.raises(ValueError, match="it holds a critic, this trainer has none"):
        plain.load_state_dict(state)


def warmup_trainer(warmup, horizon=12, imitation=None):
    return Trainer(FACTORY, make_solver("ovlr", episodes=4, seed=1, reuse=2), eval_every=0, credit="to_go", seed=5,
                   critic=StateValue(hidden=(8,), seed=2), horizon=horizon, critic_warmup=warmup,
                   imitation=imitation)  # fmt: skip


@pytest.mark.parametrize("horizon", [None, 12])
def test_a_critic_warmup_fits_the_critic_while_the_policy_stays_put(horizon):
    """Updates that begin before ``critic_warmup`` env steps run the episodes a run without a
    warm-up would (the first update's are the same), fit the critic and the normalizer, and
    leave the policy, Adam and the imitation stream as they were; the first update after it
    moves the policy."""
    from bbopt.rollout.imitation import ImitationLoss

    generator = torch.Generator().manual_seed(0)
    demos = torch.randn(20, 2, generator=generator), torch.randn(20, 2, generator=generator)
    imitation = ImitationLoss(*demos, lambda outputs, targets: ((outputs - targets) ** 2).sum(-1), weight=0.5, seed=3)
    with warmup_trainer(100, horizon, imitation) as warm, warmup_trainer(0, horizon) as plain:
        policy, critic = flat(warm.solver.policy).clone(), flat(warm.critic.network).clone()
        stream = imitation.state_dict()["generator"].clone(), imitation.updates
        records = [warm.update()]
        assert records[0]["return_mean"] == plain.update()["return_mean"]  # the same episodes
        while warm.env_steps < 100:
            records.append(warm.update())
            plain.update()
        assert len(records) >= 2 and all(r["critic_warmup"] and r["sigma"] == 0.3 for r in records)
        assert torch.equal(flat(warm.solver.policy), policy) and not warm.solver.optimizer.state
        assert warm.solver.evaluations == 0 and imitation.updates == stream[1]
        assert torch.equal(imitation.state_dict()["generator"], stream[0])
        assert not torch.equal(flat(warm.critic.network), critic) and warm.normalizer.count > 0
        assert not torch.equal(flat(plain.solver.policy), policy)  # the plain run moved all along
        moved = warm.update()
        assert "critic_warmup" not in moved and not torch.equal(flat(warm.solver.policy), policy)
        assert warm.solver.evaluations == 4 and imitation.updates == stream[1] + 1


def test_a_run_with_a_critic_warmup_resumes_bit_for_bit_across_its_end():
    """48 steps per update: updates 1-4 (from 0, 48, 96 and 144 steps) are the warm-up; the run is
    saved after update 3 and resumed for updates 4-6."""
    with warmup_trainer(150) as fresh:
        start = flat(fresh.solver.policy).clone()
    straight, resumed, state = straight_and_resumed(lambda: warmup_trainer(150), updates=6)
    with warmup_trainer(150) as halfway:
        halfway.load_state_dict(state)
        assert halfway.env_steps == 144 and torch.equal(flat(halfway.solver.policy), start)
    assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
    assert not torch.equal(flat(resumed.solver.policy), start)
    assert torch.equal(flat(resumed.critic.network), flat(straight.critic.network))


def test_bad_critic_settings_are_refused():
    with pytest.raises(ValueError, match="acts on per-step credit"):
        Trainer(FACTORY, make_solver("ovlr"), credit="episode", critic=StateValue())
    for bad in (-1, 1.5, "100", True):
        with pytest.raises(ValueError, match="Invalid critic_warmup"):
            Trainer(FACTORY, make_solver("ovlr"), credit="to_go", critic=StateValue(), critic_warmup=bad)
    with pytest.raises(ValueError, match="Invalid critic_warmup: it trains the critic before the policy moves"):
        Trainer(FACTORY, make_solver("ovlr"), credit="to_go", critic_warmup=100)
    with pytest.raises(ValueError, match=r"Invalid gae_lambda: 1\.5"):
        StateValue(gae_lambda=1.5)
    for bad in (True, float("nan"), "0.9", -0.1):
        with pytest.raises(ValueError, match="Invalid gae_lambda"):
            StateValue(gae_lambda=bad)
    with pytest.raises(ValueError, match="epochs"):
        StateValue(epochs=0)
    for bad in ("lambda", "", None, 1):
        with pytest.raises(ValueError, match="Invalid target"):
            StateValue(target=bad)
    critic = StateValue()
    critic.setup(2, horizon=None)
    with pytest.raises(ValueError, match="non-finite"):
        critic.fit(torch.zeros(2, 2), torch.zeros(2), torch.tensor([0.0, float("nan")]))
    state = critic.state_dict() | {"scale": 0.0}
    with pytest.raises(ValueError, match=r"Invalid critic state: offset 0\.0, scale 0\.0"):
        critic.load_state_dict(state)


def test_discounted_costs_to_go_by_hand():
    """credit='to_go' with discount gamma: each step is told c_t + gamma c_{t+1} + gamma^2 c_{t+2} ..."""
    told = {}
    solver = make_solver("ovlr")
    original_tell = solver.tell

    def recording_tell(losses, step_losses=None):
        told["steps"] = [s.clone() for s in step_losses]
        return original_tell(losses, step_losses=step_losses)

    solver.tell = recording_tell
    rewards = []
    with Trainer(FACTORY, solver, eval_every=0, credit="to_go", discount=0.9) as trainer:
        pool_step = trainer.pool.step

        def recording_step(ids, actions):
            result = pool_step(ids, actions)
            rewards.append(dict(zip(ids.tolist(), result.rewards, strict=True)))
            return result

        trainer.pool.step = recording_step
        trainer.update()
    for episode in (0, 5):
        costs = [-step[episode] for step in rewards if episode in step]
        expected = [sum(c * 0.9**k for k, c in enumerate(costs[t:])) for t in range(len(costs))]
        got = [float(values[list(step).index(episode)]) for values, step in zip(told["steps"], rewards, strict=False)
               if episode in step]  # fmt: skip
        np.testing.assert_allclose(got, expected, rtol=1e-9)
    with pytest.raises(ValueError, match="Invalid discount: 0"):
        Trainer(FACTORY, make_solver("ovlr"), credit="to_go", discount=0)
    with pytest.raises(ValueError, match="discounts per-step credit"):
        Trainer(FACTORY, make_solver("ovlr"), discount=0.9)
