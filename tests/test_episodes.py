"""Episode mode on a tiny dynamical system: a 2-D point mass pushed toward the origin."""

import copy

import pytest
import torch

import bbopt
from bbopt.noise import Tiled
from bbopt.policies import MLP, LearnedVector

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


@pytest.mark.parametrize("name", bbopt.presets.names(output_space=True))
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


@pytest.mark.parametrize("name", bbopt.presets.names(output_space=True))
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


# ------------------------------------------------------------------ per-step credit


def linear_solver(name="ovlr", seed=0, episodes=8):
    policy = MLP(1, 2, hidden=(), seed=seed)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)  # keep the gradient, move nothing
    return policy, bbopt.make_solver(name, policy, optimizer, sigma=0.5, episodes=episodes, seed=seed)


def run_toy_episodes(solver, horizon=6, episodes=8):
    """Episode i acts at steps 0..length_i - 1 (lengths differ); cost per step ||a - 1||^2.
    Returns episode losses and per-call costs-to-go of the asked episodes."""
    lengths = torch.tensor([horizon - (i % 3) for i in range(episodes)])
    costs = torch.zeros(horizon, episodes)
    asked = []
    for t in range(horizon):
        ids = (lengths > t).nonzero().flatten()
        actions = solver.ask(torch.full((ids.numel(), 1), t / horizon), episode_ids=ids)
        costs[t, ids] = ((actions - 1) ** 2).sum(1)
        asked.append(ids)
    to_go = costs.flip(0).cumsum(0).flip(0)
    return costs.sum(0), [to_go[t, ids] for t, ids in enumerate(asked)]


def test_step_losses_weight_each_step_by_its_cost_to_go():
    """By hand: per ask call, OVLR's leave-pair-out weights on the cost-to-go (0 for
    episodes not asked), times eps / sigma, summed into the bias gradient."""
    policy, solver = linear_solver()
    losses, step_losses = run_toy_episodes(solver)
    records = list(solver._record.steps)
    expected = torch.zeros(2, dtype=torch.float64)
    for step, values in zip(records, step_losses, strict=True):
        to_go = torch.zeros(8, dtype=torch.float64)
        to_go[step.episode_ids] = values.double()
        partner = to_go.roll(4)
        weights = (to_go - (to_go.sum() - to_go - partner) / 6) / 8
        expected += (weights[step.episode_ids][:, None] * step.noise.double() / 0.5).sum(0)
    solver.tell(losses, step_losses=step_losses)
    bias = policy.layers[0].bias
    torch.testing.assert_close(bias.grad.double(), expected, rtol=1e-5, atol=1e-6)


def test_step_credit_keeps_the_mean_and_cuts_the_variance():
    """Same toy, 600 draws of the bias gradient: per-step credit has the same mean as
    whole-episode credit (past costs do not depend on a step's noise) and lower variance."""
    draws = {"episode": [], "to_go": []}
    for credit in draws:
        policy, solver = linear_solver(seed=3)
        for _ in range(600):
            losses, step_losses = run_toy_episodes(solver)
            solver.tell(losses, **({"step_losses": step_losses} if credit == "to_go" else {}))
            draws[credit].append(policy.layers[0].bias.grad.clone())
    episode, to_go = torch.stack(draws["episode"]), torch.stack(draws["to_go"])
    spread = torch.sqrt(episode.var(0) / 600 + to_go.var(0) / 600)
    assert ((episode.mean(0) - to_go.mean(0)).abs() / spread).max() < 4.0
    assert (to_go.var(0) < 0.8 * episode.var(0)).all(), (to_go.var(0), episode.var(0))


def test_step_losses_are_checked():
    _, solver = linear_solver()
    losses, step_losses = run_toy_episodes(solver)
    with pytest.raises(ValueError, match=r"Invalid step_losses: 5 tensors for 6 ask\(\) calls"):
        solver.tell(losses, step_losses=step_losses[:5])
    bad = [*step_losses[:-1], torch.zeros(1)]
    with pytest.raises(ValueError, match=r"Invalid step_losses\[5\]: expected \d+ finite values"):
        solver.tell(losses, step_losses=bad)
    solver.tell(losses, step_losses=step_losses)  # the refused calls kept the records
    _, cem = linear_solver("cem")
    losses, step_losses = run_toy_episodes(cem)
    with pytest.raises(ValueError, match="CEM has no per-step credit"):
        cem.tell(losses, step_losses=step_losses)
    vector = LearnedVector(2)
    plain = bbopt.OVLR(vector, torch.optim.SGD(vector.parameters(), lr=0.1), samples=4)
    plain.ask()
    with pytest.raises(ValueError, match="per-step credit is for episode mode"):
        plain.tell(torch.zeros(4), step_losses=[torch.zeros(4)])


def correlated_solver(seed=0, correlation=0.8, episodes=8, tiled=False, reuse=1):
    """A linear policy of two outputs under AR(1) noise (``tiled``: one noise number repeated on both)."""
    policy = MLP(1, 2, hidden=(), seed=0)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)
    noise = {"noise": Tiled(0.5, repeats=2)} if tiled else {"sigma": 0.5}
    return policy, bbopt.OVLR(policy, optimizer, episodes=episodes, seed=seed, correlation=correlation,
                              reuse=reuse, **noise)  # fmt: skip


def test_ar1_noise_is_stationary_correlated_over_time_and_antithetic():
    _, solver = correlated_solver(episodes=200)
    noise = []
    for t in range(6):
        solver.ask(torch.full((200, 1), t / 6.0))
        noise.append(solver._record.steps[-1].noise)
    noise = torch.stack(noise)  # [T, N, 2]
    torch.testing.assert_close(noise[:, 100:], -noise[:, :100])  # partners i, i + N/2 are negations
    independent = noise[:, :100].reshape(6, -1)
    assert abs(float(independent.var(dim=1).mean()) - 1.0) < 0.1  # every step still N(0, 1)
    lag = [float((independent[t] * independent[t + k]).mean()) for k, t in ((1, 2), (2, 2), (1, 4))]
    assert abs(lag[0] - 0.8) < 0.1 and abs(lag[1] - 0.64) < 0.12 and abs(lag[2] - 0.8) < 0.1, lag


def test_discard_drops_the_recorded_episodes_and_changes_nothing_else():
    """A population asked and discarded leaves policy, optimizer, noise and counters as they were;
    tell then has nothing to tell, and the next population starts fresh AR(1) sequences."""
    _, solver = correlated_solver(episodes=4)
    before = copy.deepcopy(solver.state_dict())
    for t in range(3):
        solver.ask(torch.full((4, 1), t / 3.0))
    solver.discard()
    after = solver.state_dict()  # allowed: nothing is pending
    assert all(torch.equal(a, b) for a, b in zip(after["policy"].values(), before["policy"].values(), strict=True))
    assert after["optimizer"] == before["optimizer"] and (after["steps"], after["evaluations"]) == (0, 0)
    with pytest.raises(RuntimeError, match="tell\\(\\) called before ask\\(\\)"):
        solver.tell(torch.zeros(4))
    _, kept = correlated_solver(episodes=4)  # the same draws, its three steps kept
    for t in range(3):
        kept.ask(torch.full((4, 1), t / 3.0))
    last = kept._record.steps[-1].noise
    solver.ask(torch.zeros(4, 1))
    kept.ask(torch.zeros(4, 1))
    assert len(solver._record.steps) == 1  # the new population's first step: xi, where kept continues
    torch.testing.assert_close(solver._record.steps[0].noise, (kept._record.steps[-1].noise - 0.8 * last) / 0.6)
    solver.tell(torch.arange(4.0))
    assert solver.evaluations == 4
    plain = bbopt.OVLR(MLP(2, 2, hidden=(4,)), torch.optim.Adam(MLP(2, 2, hidden=(4,)).parameters()), samples=4)
    with pytest.raises(RuntimeError, match="discard\\(\\) is for episode mode"):
        plain.discard()


@pytest.mark.parametrize("tiled, reuse", [(False, 1), (True, 1), (False, 2)], ids=["scaled", "tiled", "factors"])
@pytest.mark.parametrize("credit", ["episode", "to_go"])
def test_ar1_noise_keeps_the_estimate_unbiased(credit, tiled, reuse):
    """600 draws of the gradient with correlated noise against the exact gradient of the expected
    loss, mean over episodes of sum_t ||mu(t/6) - 1||^2 (+ a constant from the noise). With
    `Tiled` noise (one number on both outputs) the estimate is that gradient projected on the
    explored direction (1, 1): each output's gradient replaced by the two outputs' mean. With
    ``reuse`` the estimate credits each step's AR(1) factor (at lr 0 the later pass repeats it)."""
    policy, solver = correlated_solver(seed=5, tiled=tiled, reuse=reuse)
    draws = []
    for _ in range(600):
        losses, step_losses = run_toy_episodes(solver)
        solver.tell(losses, **({"step_losses": step_losses} if credit == "to_go" else {}))
        draws.append(torch.cat([p.grad.reshape(-1) for p in policy.parameters()]).double())
    draws = torch.stack(draws)
    policy.zero_grad()
    lengths = torch.tensor([6 - (i % 3) for i in range(8)])
    steps = torch.arange(6)
    mu = torch.cat([policy(torch.full((1, 1), t / 6.0)) for t in steps])  # [6, 2]
    gradient = 2 * (mu.detach() - 1) * (lengths[None] > steps[:, None]).sum(1, keepdim=True) / 8  # d E / d mu
    mu.backward(gradient.mean(1, keepdim=True).expand(-1, 2) if tiled else gradient)
    exact = torch.cat([p.grad.reshape(-1) for p in policy.parameters()]).double()
    z = (draws.mean(0) - exact) / (draws.std(0) / 600**0.5)
    assert z.abs().max() < 4.0, z
    assert exact.abs().max() > 0.5


def ar1_by_hand(noise, episode_of_record, phi, weights=None):
    """Innovations and the factors' weighted score by a loop over the records in recording order:
    eta_r = (eps_r - phi eps_p) / c for a record with a predecessor p in its episode (c = sqrt(1 -
    phi^2)), else eps_r; factor r adds w_r eta_r / c (1 / 1 at a first step) to eps_r's entry and
    -phi w_r eta_r / c to eps_p's."""
    c = (1 - phi**2) ** 0.5
    eta, score, last = noise.clone(), torch.zeros_like(noise), {}
    weights = torch.ones(len(noise), dtype=noise.dtype) if weights is None else weights.to(noise.dtype)
    for r, episode in enumerate(episode_of_record.tolist()):
        if episode in last:
            p = last[episode]
            eta[r] = (noise[r] - phi * noise[p]) / c
            score[r] += weights[r] * eta[r] / c
            score[p] -= phi * weights[r] * eta[r] / c
        else:
            score[r] += weights[r] * eta[r]
        last[episode] = r
    return eta, score


def test_ar1_innovations_and_factor_scores_by_hand():
    """Records of interleaved episodes of unequal lengths, as the solver records them: the
    innovations of AR(1) sequences are their fresh draws; the factors' score with one weight per
    episode is that weight times the sequence's score; with per-record weights it is the loop above."""
    from bbopt.episodes import AR1Sequences, ar1_score

    generator = torch.Generator().manual_seed(0)
    phi, lengths = 0.8, [5, 1, 3, 4]
    fresh, noise, episode_of_record, last = [], [], [], {}
    for t in range(max(lengths)):
        for episode, length in enumerate(lengths):
            if t < length:
                xi = torch.randn(3, generator=generator, dtype=torch.float64)
                eps = xi if t == 0 else phi * last[episode] + (1 - phi**2) ** 0.5 * xi
                fresh.append(xi), noise.append(eps), episode_of_record.append(episode)
                last[episode] = eps
    fresh, noise, episode_of_record = torch.stack(fresh), torch.stack(noise), torch.tensor(episode_of_record)
    sequences = AR1Sequences(episode_of_record, phi)
    torch.testing.assert_close(sequences.innovations(noise), fresh)
    per_episode = torch.tensor([0.5, -2.0, 1.5, 3.0], dtype=torch.float64)[episode_of_record]
    torch.testing.assert_close(sequences.factor_score(fresh, per_episode),
                               per_episode[:, None] * ar1_score(noise, episode_of_record, phi))  # fmt: skip
    per_record = torch.randn(len(noise), generator=generator, dtype=torch.float64)
    _, expected = ar1_by_hand(noise, episode_of_record, phi, per_record)
    torch.testing.assert_close(sequences.factor_score(fresh, per_record), expected)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"samples": 8}, "for episode mode"),
        ({"episodes": 8, "noise": "laplace"}, "Gaussian noise"),
        ({"episodes": 8, "sigma": bbopt.sigma.CSA(0.5)}, "a fixed sigma"),
        ({"episodes": 8, "correlation": 1.0}, "correlation"),
        ({"episodes": 8, "correlation": -0.1}, "correlation"),
    ],
)
def test_bad_correlation_settings_are_refused(options, message):
    policy = MLP(1, 2, hidden=(), seed=0)
    options = {"correlation": 0.5} | options
    with pytest.raises(ValueError, match=message):
        bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.1), **options)


def reuse_solver(reuse, lr=0.0, seed=0, episodes=8, minibatches=1, target_kl=None, correlation=0.0, max_kl=None):
    policy = MLP(1, 2, hidden=(4,), seed=1)
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    return policy, bbopt.OVLR(policy, optimizer, sigma=0.5, episodes=episodes, seed=seed, reuse=reuse,
                              minibatches=minibatches, target_kl=target_kl, correlation=correlation,
                              max_kl=max_kl)  # fmt: skip


@pytest.mark.parametrize("correlation", [0.0, 0.8], ids=["independent", "ar1"])
def test_reuse_passes_of_an_unmoved_policy_repeat_the_first_estimate(correlation):
    """Ratio 1 everywhere: every pass steps on the first pass's gradient; with independent steps
    that is the plain tell's (under AR(1) noise a tell with reuse credits each step's factor, a
    tell without it the sequence's score: two unbiased estimates, tested above)."""
    grads = []
    for reuse in (1, 3):
        policy, solver = reuse_solver(reuse, correlation=correlation)
        losses, step_losses = run_toy_episodes(solver)
        steps, step = [], solver.optimizer.step

        def keep_gradient(*args, step=step, steps=steps, policy=policy, **kwargs):
            steps.append(torch.cat([p.grad.reshape(-1) for p in policy.parameters()]))
            return step(*args, **kwargs)

        solver.optimizer.step = keep_gradient
        stats = solver.tell(losses, step_losses=step_losses)
        grads.append(steps)
        assert solver.steps == 1 and len(steps) == reuse
    for later in grads[1][1:]:
        torch.testing.assert_close(later, grads[1][0])
    if not correlation:
        torch.testing.assert_close(grads[1][0], grads[0][0])
    assert stats["reuse_active"] == 1.0


@pytest.mark.parametrize("correlation", [0.0, 0.8], ids=["independent", "ar1"])
@pytest.mark.parametrize("credit", ["episode", "to_go"])
def test_a_reuse_pass_weights_each_recorded_action_by_its_clipped_likelihood_ratio(credit, correlation):
    """By hand: after the first SGD step, eps' = (a - mu_new) / sigma, r = exp((|eps|^2 - |eps'|^2) / 2),
    weights r w where PPO's clip keeps the step (w > 0: r > 1 - c; w < 0: r < 1 + c), one VJP.
    Under AR(1) noise the same for each step's factor: eps replaced by the innovations eta (by
    the loop of `ar1_by_hand`), the step the clipped factors' weighted score; the pass's KL is
    the factors' mean |eta' - eta|^2 / 2."""
    policy, solver = reuse_solver(2, lr=3.0, seed=2, correlation=correlation)
    before = MLP(1, 2, hidden=(4,), seed=1)
    losses, step_losses = run_toy_episodes(solver)
    record = solver._record
    inputs, noise, episode = record.inputs(), record.noise().double(), record.episode_of_record()
    if credit == "to_go":
        weights = solver._step_weights(step_losses)
    else:
        weights = solver._group_weights(torch.as_tensor(losses, dtype=torch.float64)[None], record.counts())[0, episode]
    moved = {}  # the policy after the first step, as the reuse pass sees it
    first_pass_done = solver._reuse_pass

    def keep_policy(*args):
        moved["policy"] = copy.deepcopy(policy)
        return first_pass_done(*args)

    solver._reuse_pass = keep_policy
    stats = solver.tell(losses, **({"step_losses": step_losses} if credit == "to_go" else {}))
    with torch.no_grad():
        old = before(inputs).double()
    new = moved["policy"](inputs)
    shifted = noise + (old - new.detach().double()) / 0.5
    eta, eta_moved = noise, shifted
    if correlation:
        (eta, _), (eta_moved, _) = (ar1_by_hand(values, episode, correlation) for values in (noise, shifted))
    ratio = torch.exp(0.5 * (eta.square().sum(1) - eta_moved.square().sum(1)))
    active = torch.where(weights > 0, ratio > 0.8, ratio < 1.2)
    assert 0 < int(active.sum()) < len(active)  # the clip acts on some steps, not all
    used = torch.where(active, ratio * weights, 0.0)
    signal = used[:, None] * shifted
    if correlation:
        _, signal = ar1_by_hand(shifted, episode, correlation, used)
    assert stats["reuse_kl"] == pytest.approx(float(0.5 * (eta_moved - eta).square().sum(1).mean()), rel=1e-5)
    expected = torch.autograd.grad(new, list(moved["policy"].parameters()), (signal / 0.5).float())
    for parameter, grad in zip(policy.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, grad, rtol=1e-4, atol=1e-5)


def test_minibatched_passes_split_the_recorded_steps_and_sum_to_the_whole_batch_step():
    """An unmoved policy (lr 0): every later pass takes one step per part of a random split of
    the records, the parts disjoint and covering them all, each part's gradient scaled to the whole
    batch's, so that they average to the plain estimate; the split differs from pass to pass."""
    policy, solver = reuse_solver(3, minibatches=3)
    losses, step_losses = run_toy_episodes(solver)
    records = len(solver._record.inputs())
    steps, parts = [], []
    step = solver.optimizer.step

    def keep_gradient(*args, **kwargs):
        steps.append(torch.cat([p.grad.reshape(-1) for p in policy.parameters()]))
        return step(*args, **kwargs)

    pass_of = solver._reuse_pass

    def keep_part(inputs, behaviour_mu, noise, *args):
        parts.append(noise[:, 0].clone())  # each record's noise tells it from the others
        return pass_of(inputs, behaviour_mu, noise, *args)

    solver.optimizer.step, solver._reuse_pass = keep_gradient, keep_part
    stats = solver.tell(losses, step_losses=step_losses)
    assert len(steps) == 1 + 2 * 3 and solver.steps == 1 and stats["reuse_active"] == 1.0
    for epoch in (parts[:3], parts[3:]):
        assert sum(len(part) for part in epoch) == records and len(torch.cat(epoch).unique()) == records
        assert abs(len(epoch[0]) - len(epoch[2])) <= 1
    assert not torch.equal(parts[0], parts[3])  # a new split each pass
    for epoch in (steps[1:4], steps[4:]):
        assert not torch.allclose(epoch[0], steps[0])  # a part alone is not the whole batch's estimate
        torch.testing.assert_close(sum(epoch) / 3, steps[0])


def test_more_minibatches_than_recorded_steps_take_one_step_per_step():
    """minibatches above the record count: one part per record, none empty (an empty part would
    step on nothing and report a share of nan), and the parts still average to the plain step."""
    policy, solver = reuse_solver(2, minibatches=10_000)
    losses, step_losses = run_toy_episodes(solver)
    records = len(solver._record.inputs())
    steps = []
    step = solver.optimizer.step

    def keep_gradient(*args, **kwargs):
        steps.append(torch.cat([p.grad.reshape(-1) for p in policy.parameters()]))
        return step(*args, **kwargs)

    solver.optimizer.step = keep_gradient
    stats = solver.tell(losses, step_losses=step_losses)
    assert len(steps) == 1 + records and stats["reuse_active"] == 1.0
    torch.testing.assert_close(sum(steps[1:]) / records, steps[0])


@pytest.mark.parametrize("rule", [lambda: bbopt.sigma.Scheduled(lambda t: 0.5 * 0.5**t),
                                  lambda: bbopt.sigma.Linear(0.5, 0.25, 1)])  # fmt: skip
def test_a_scheduled_sigma_steps_once_per_tell_and_its_reuse_passes_see_the_behaviour_sigma(rule):
    """A schedule is a sigma that does not learn, so reuse accepts it: every pass of one tell must
    use the sigma the actions were drawn with, and the schedule advance once, after the passes.
    The parameters then equal a fixed sigma's run; only the next population's sigma differs."""
    results = []
    for sigma in (0.5, rule()):
        policy = MLP(1, 2, hidden=(4,), seed=1)
        solver = bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=1.0), sigma=sigma, episodes=8, seed=0,
                            reuse=3)  # fmt: skip
        losses, step_losses = run_toy_episodes(solver)
        stats = solver.tell(losses, step_losses=step_losses)
        results.append((torch.cat([p.detach().reshape(-1) for p in policy.parameters()]), solver, stats))
    (fixed, _, _), (scheduled, solver, stats) = results
    torch.testing.assert_close(scheduled, fixed)
    assert solver.noise.sigma.steps == 1 and stats["sigma"] == pytest.approx(0.25)


def divergences_of_the_passes(solver, policy) -> tuple[list[float], list[float]]:
    """A tell of the toy episodes; the mean KL each later pass measured, and the same by hand:
    ``|mu_now - mu_behaviour|^2 / (2 sigma^2)`` over the recorded steps, from the policy as the
    pass found it."""
    losses, step_losses = run_toy_episodes(solver)
    inputs = solver._record.inputs()
    with torch.no_grad():
        behaviour = policy(inputs).double()
    measured, by_hand = [], []
    pass_of = solver._reuse_pass

    def keep(*args):
        with torch.no_grad():
            now = policy(inputs).double()
        by_hand.append(float(((now - behaviour) / 0.5).square().sum(1).mean() / 2))
        share, divergence = pass_of(*args)
        measured.append(divergence)
        return share, divergence

    solver._reuse_pass = keep
    solver.stats = solver.tell(losses, step_losses=step_losses)
    return measured, by_hand


def test_target_kl_stops_the_passes_at_the_first_policy_past_it_as_reuse_of_that_many_would():
    """Without a target, every later pass measures the policy's mean KL from the acting one (by
    hand above); with a target between two of those, the tell stops at the first pass past it,
    without its step: the parameters equal a plain run with that many passes."""
    policy, solver = reuse_solver(8, lr=0.05, seed=3)
    measured, by_hand = divergences_of_the_passes(solver, policy)
    assert measured == pytest.approx(by_hand, rel=1e-5) and len(measured) == 7
    assert measured[0] > 0 and solver.stats["reuse_passes"] == 8.0
    # the first later pass that found the policy further than every pass before it
    first = next(k for k in range(1, 7) if measured[k] > max(measured[:k]))
    target = (max(measured[:first]) + measured[first]) / 2
    stopped_policy, stopped = reuse_solver(8, lr=0.05, seed=3, target_kl=target)
    stopped_measured, _ = divergences_of_the_passes(stopped, stopped_policy)
    assert stopped_measured == pytest.approx(measured[: first + 1]) and stopped.stats["reuse_passes"] == first + 1
    plain_policy, plain = reuse_solver(first + 1, lr=0.05, seed=3)
    losses, step_losses = run_toy_episodes(plain)
    plain.tell(losses, step_losses=step_losses)
    for a, b in zip(stopped_policy.parameters(), plain_policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_target_kl_below_any_move_keeps_only_the_first_step_with_or_without_minibatches():
    for minibatches in (1, 3):
        stopped_policy, stopped = reuse_solver(5, lr=1.0, seed=4, minibatches=minibatches, target_kl=1e-12)
        plain_policy, plain = reuse_solver(1, lr=1.0, seed=4)
        for solver in (stopped, plain):
            losses, step_losses = run_toy_episodes(solver)
            solver.stats = solver.tell(losses, step_losses=step_losses)
        assert stopped.stats["reuse_passes"] == 1.0 and "reuse_active" not in stopped.stats
        for a, b in zip(stopped_policy.parameters(), plain_policy.parameters(), strict=True):
            torch.testing.assert_close(a, b)


def kl_along_the_update(correlation, scales) -> tuple[list[torch.Tensor], list[torch.Tensor], list[float]]:
    """A tell of 3 passes without ``max_kl`` (SGD at a step that moves the toy policy far); its
    parameters before and after, and by hand the mean KL from the acting density of the policy
    ``before + s (after - before)`` at each of ``scales``: ``|mu_s - mu_behaviour|^2 / (2 sigma^2)``
    over the recorded steps, under AR(1) noise the same in the innovations ``eta_t = (d_t -
    phi d_(t-1)) / sqrt(1 - phi^2)`` along each episode (``d`` the move in units of sigma)."""
    policy, solver = reuse_solver(3, lr=0.3, seed=5, correlation=correlation)
    losses, step_losses = run_toy_episodes(solver)
    inputs, episode = solver._record.inputs(), solver._record.episode_of_record()
    before = [p.detach().clone() for p in policy.parameters()]
    with torch.no_grad():
        behaviour = policy(inputs).double()
    solver.tell(losses, step_losses=step_losses)
    after = [p.detach().clone() for p in policy.parameters()]
    divergences = []
    for scale in scales:
        with torch.no_grad():
            for p, a, b in zip(policy.parameters(), before, after, strict=True):
                p.copy_(a + scale * (b - a))
            moved = (policy(inputs).double() - behaviour) / 0.5
        if correlation:  # records are in time order; each episode's first step is its own innovation
            innovations, previous = moved.clone(), {}
            for row, i in enumerate(episode.tolist()):
                if i in previous:
                    innovations[row] = (moved[row] - correlation * moved[previous[i]]) / (1 - correlation**2) ** 0.5
                previous[i] = row
            moved = innovations
        divergences.append(float(moved.square().sum(1).mean() / 2))
    return before, after, divergences


@pytest.mark.parametrize("correlation", [0.0, 0.8], ids=["independent", "ar1"])
def test_max_kl_keeps_the_first_halving_of_the_update_within_it(correlation):
    """With ``max_kl`` between the KLs of a quarter and half the update, the tell's parameters are
    ``before + (after - before) / 4``: the first halving whose KL (by hand) is within it; the
    stats give the whole update's KL and the scale kept."""
    scales = [1.0, 0.5, 0.25]
    before, after, divergences = kl_along_the_update(correlation, scales)
    assert divergences[0] > divergences[1] > divergences[2] > 0
    max_kl = (divergences[1] + divergences[2]) / 2
    policy, solver = reuse_solver(3, lr=0.3, seed=5, correlation=correlation, max_kl=max_kl)
    losses, step_losses = run_toy_episodes(solver)
    stats = solver.tell(losses, step_losses=step_losses)
    assert stats["step_scale"] == 0.25 and stats["update_kl"] == pytest.approx(divergences[0], rel=1e-5)
    for p, a, b in zip(policy.parameters(), before, after, strict=True):
        torch.testing.assert_close(p.detach(), a + 0.25 * (b - a))


def test_a_max_kl_the_update_stays_within_changes_nothing_and_one_below_every_move_undoes_it():
    scales = [1.0]
    before, after, (divergence,) = kl_along_the_update(0.0, scales)
    for max_kl, scale, expected in ((2 * divergence, 1.0, after), (1e-300, 0.0, before)):
        policy, solver = reuse_solver(3, lr=0.3, seed=5, max_kl=max_kl)
        losses, step_losses = run_toy_episodes(solver)
        stats = solver.tell(losses, step_losses=step_losses)
        assert stats["step_scale"] == scale and solver.steps == 1
        for p, kept in zip(policy.parameters(), expected, strict=True):
            assert torch.equal(p.detach(), kept)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"samples": 8}, "for episode mode"),
        ({"episodes": 8, "noise": "laplace"}, "Gaussian noise"),
        ({"episodes": 8, "correlation": 0.5, "minibatches": 2}, "every record in each step"),
        ({"episodes": 8, "correlation": 0.5, "natural": True}, "likelihood-ratio signal"),
        ({"episodes": 8, "sigma": bbopt.sigma.CSA(0.5)}, "a fixed or scheduled sigma"),
        ({"episodes": 8, "sigma": bbopt.sigma.Learned(0.5)}, "a fixed or scheduled sigma"),
        ({"episodes": 8, "reuse": 0}, "reuse"),
        ({"episodes": 8, "clip": 0.0}, "clip"),
        ({"episodes": 8, "minibatches": 0}, "minibatches"),
        ({"episodes": 8, "minibatches": 2.0}, "minibatches"),
        ({"episodes": 8, "reuse": 1, "minibatches": 2}, "split the passes of reuse"),
        ({"episodes": 8, "target_kl": 0.0}, "target_kl"),
        ({"episodes": 8, "target_kl": -0.01}, "target_kl"),
        ({"episodes": 8, "target_kl": float("nan")}, "target_kl"),
        ({"episodes": 8, "target_kl": "0.01"}, "target_kl"),
        ({"episodes": 8, "reuse": 1, "target_kl": 0.01}, "stops the later passes of reuse"),
        ({"episodes": 8, "max_kl": 0.0}, "max_kl"),
        ({"episodes": 8, "max_kl": -0.01}, "max_kl"),
        ({"episodes": 8, "max_kl": float("nan")}, "max_kl"),
        ({"episodes": 8, "max_kl": "0.01"}, "max_kl"),
        ({"episodes": 8, "reuse": 1, "max_kl": 0.01}, "bounds the update of reuse"),
    ],
)
def test_bad_reuse_settings_are_refused(options, message):
    policy = MLP(1, 2, hidden=(), seed=0)
    options = {"reuse": 2} | options
    with pytest.raises(ValueError, match=message):
        bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.1), **options)


@pytest.mark.parametrize("option", [{"minibatches": 2}, {"target_kl": 0.01}, {"max_kl": 0.01}])
def test_an_option_of_reuse_on_a_solver_that_cannot_reuse_says_why_not_add_reuse(option):
    """Each option of reuse's passes, given with reuse 1, is refused with the remedy: "add reuse"
    where the solver could take it, else the reason it cannot (here a sigma that learns)."""
    name = next(iter(option))
    policy = MLP(1, 2, hidden=(), seed=0)
    with pytest.raises(ValueError, match=rf"Invalid {name}: .*\(add reuse=2 or more\)$"):
        bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.1), episodes=8, **option)
    with pytest.raises(ValueError, match=rf"Invalid {name}: .*cannot reuse: .*learns=True") as refused:
        bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.1), episodes=8,
                   sigma=bbopt.sigma.Learned(0.5), **option)  # fmt: skip
    assert "add reuse" not in str(refused.value)


def test_an_overflow_in_a_reuse_pass_is_blamed_on_the_ratios_not_the_losses():
    """The first step took these losses, so an overflow in a later pass comes from the ratios (the
    policy moved far from the one that acted): the warning says so, with the pass's KL and largest
    ratio, instead of the first step's advice to scale the losses down."""
    _, solver = reuse_solver(3, lr=0.1)
    losses, step_losses = run_toy_episodes(solver)
    update = solver._update

    def overflowing_later(**options):
        if not options.get("counted", True):  # a reuse pass
            raise ValueError("Invalid losses: the gradient overflow float32 (...). Scale the losses down, ...")
        return update(**options)

    solver._update = overflowing_later
    with pytest.warns(RuntimeWarning) as warned:
        solver.tell(losses, step_losses=step_losses)
    message = str(warned[0].message)
    assert message.startswith(
        "reuse stopped after 1 of 3 passes on this population: the ratio-weighted gradient "
        "overflows float32: the policy has moved far from the one that acted (mean KL "
    )
    assert "largest likelihood ratio in use" in message and "Scale the losses down" not in message
    assert solver.steps == 1 and not solver._record


def test_a_reuse_pass_that_overflows_leaves_the_first_step_and_a_finished_tell():
    policy, solver = reuse_solver(3, lr=0.1)
    losses, step_losses = run_toy_episodes(solver)

    def overflowing(*args):
        raise ValueError("Invalid losses: the gradient they imply overflows the model's float type")

    solver._reuse_pass = overflowing
    before = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    with pytest.warns(RuntimeWarning, match="reuse stopped after 1 of 3 passes"):
        solver.tell(losses, step_losses=step_losses)
    assert not torch.equal(before, torch.cat([p.detach().reshape(-1) for p in policy.parameters()]))  # step 1 stands
    assert solver.steps == 1 and not solver._record  # the tell finished: the next ask starts a new population
    losses, step_losses = run_toy_episodes(solver)
    assert len(solver._record.steps) == 6
