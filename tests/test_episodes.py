"""Episode mode on a tiny dynamical system: a 2-D point mass pushed toward the origin."""

import pytest
import torch

import bbopt
from bbopt.policies import MLP

EPISODES = 8
HORIZON = 12


def rollout(solver, starts, horizons):
    """Step all live episodes in lockstep; episode i stops after horizons[i] steps or when it
    reaches the origin. Loss = sum over its steps of ||s_t||^2. Returns the losses [N]."""
    states = starts.clone()
    losses = torch.zeros(len(starts))
    live = torch.ones(len(starts), dtype=torch.bool)
    for t in range(HORIZON):
        live &= (horizons > t) & (states.norm(dim=1) > 0.05)
        if not live.any():
            break
        ids = live.nonzero().flatten()
        actions = solver.ask(states[ids], episode_ids=ids)
        states[ids] = states[ids] + 0.2 * actions.clamp(-2, 2)
        losses[ids] += (states[ids] ** 2).sum(1)
    return losses


def setup(name, seed=0, **options):
    policy = MLP(2, 2, hidden=(16,), seed=seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.03)
    solver = bbopt.make_solver(name, policy, optimizer, sigma=0.3, episodes=EPISODES, seed=seed, **options)
    generator = torch.Generator().manual_seed(seed)
    return policy, solver, generator


def starts_and_horizons(generator):
    """Episodes i and i + N/2 (an antithetic pair) share their start and horizon (common
    random numbers), so the pair's loss difference measures the noise, not the start."""
    starts = torch.rand(EPISODES // 2, 2, generator=generator) * 4 - 2
    horizons = torch.randint(4, HORIZON + 1, (EPISODES // 2,), generator=generator)
    return starts.repeat(2, 1), horizons.repeat(2)


def record_asks(solver):
    """Wrap solver.ask to keep (inputs, actions, episode_ids) of every step."""
    recorded = []
    original_ask = solver.ask

    def recording_ask(inputs, episode_ids):
        actions = original_ask(inputs, episode_ids=episode_ids)
        recorded.append((inputs.clone(), actions.clone(), episode_ids.clone()))
        return actions

    solver.ask = recording_ask
    return recorded


@pytest.mark.parametrize("name", sorted(bbopt.SOLVERS))
def test_episode_ask_gives_one_action_per_live_episode_and_pairs_whole_episodes(name):
    policy, solver, _ = setup(name, antithetic=True)
    observations = torch.ones(EPISODES, 2)
    actions = solver.ask(observations)
    assert actions.shape == (EPISODES, 2)
    mu = policy(observations).detach()
    torch.testing.assert_close(actions[: EPISODES // 2] - mu[:4], -(actions[EPISODES // 2 :] - mu[4:]))
    partial = solver.ask(observations[[1, 6]], episode_ids=[1, 6])
    assert partial.shape == (2, 2)
    solver.tell(torch.arange(EPISODES, dtype=torch.float64))
    assert solver.evaluations == EPISODES


def test_episode_noise_does_not_depend_on_which_others_are_live():
    _, first, _ = setup("ovlr")
    _, second, _ = setup("ovlr")
    observation = torch.ones(EPISODES, 2)
    for _ in range(3):
        all_live = first.ask(observation)
        few_live = second.ask(observation[[2, 5]], episode_ids=[2, 5])
        assert torch.equal(all_live[[2, 5]], few_live)


def test_episode_tell_is_one_vjp_of_the_per_step_signal():
    """p.grad equals autograd.grad of sum_t mu(s_t) . v_t with v_t = w_e * eps_t / sigma."""
    policy, solver, generator = setup("ovlr", antithetic=False, baseline=False)
    starts, horizons = starts_and_horizons(generator)
    recorded = record_asks(solver)
    losses = rollout(solver, starts, horizons)
    inputs = torch.cat([r[0] for r in recorded])
    actions = torch.cat([r[1] for r in recorded])
    ids = torch.cat([r[2] for r in recorded])
    with torch.no_grad():
        eps = (actions - policy(inputs)) / 0.3
    v = (losses[ids] / EPISODES)[:, None] * eps / 0.3
    expected = torch.autograd.grad((policy(inputs) * v).sum(), list(policy.parameters()))
    solver.tell(losses)
    for parameter, grad in zip(policy.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, grad, rtol=1e-4, atol=1e-5)


def test_cem_episode_mode_regresses_onto_the_elite_episodes_actions():
    policy, solver, generator = setup("cem", elite_fraction=0.25)  # 2 elites of 8
    starts, horizons = starts_and_horizons(generator)
    recorded = record_asks(solver)
    losses = rollout(solver, starts, horizons)
    elites = torch.argsort(losses, stable=True)[:2]
    inputs = torch.cat([r[0] for r in recorded])
    actions = torch.cat([r[1] for r in recorded])
    ids = torch.cat([r[2] for r in recorded])
    keep = torch.isin(ids, elites)
    regression = 0.5 * ((policy(inputs[keep]) - actions[keep]) ** 2).sum() / keep.sum()
    expected = torch.autograd.grad(regression, list(policy.parameters()))
    solver.tell(losses)
    for parameter, grad in zip(policy.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(bbopt.SOLVERS))
def test_each_solver_learns_the_point_mass_in_episode_mode(name):
    """Fixed seed; the stated bound: mean episode loss over 3 fresh evaluation rollouts falls
    to at most 60% of the untrained policy's after 60 updates."""
    policy, solver, generator = setup(name, seed=1)
    evaluation = torch.Generator().manual_seed(1234)
    tests = [starts_and_horizons(evaluation) for _ in range(3)]

    def evaluate():
        # Noiseless evaluation: the policy's mean action.
        total = 0.0
        for starts, horizons in tests:
            states, loss = starts.clone(), 0.0
            for t in range(HORIZON):
                live = (horizons > t) & (states.norm(dim=1) > 0.05)
                with torch.no_grad():
                    states[live] += 0.2 * policy(states[live]).clamp(-2, 2)
                loss += float((states[live] ** 2).sum())
            total += loss / EPISODES
        return total / len(tests)

    before = evaluate()
    for _ in range(60):
        solver.tell(rollout(solver, *starts_and_horizons(generator)))
    after = evaluate()
    assert after <= 0.6 * before, (before, after)
