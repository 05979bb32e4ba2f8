"""Updates over fixed-length segments of running episodes (``Trainer(horizon=T)``): the credit
by hand and against whole-episode GAE, the slots' episodes carried across updates and reseeded
when they end, a failed episode, bit-for-bit resume through a checkpoint file, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bbopt.rollout import EnvFactory, Trainer, load_checkpoint, save_checkpoint
from bbopt.rollout.critic import StateValue
from bbopt.rollout.runs import RunConfig, make_trainer, sigma_updates
from bbopt.rollout.segments import segment_credit
from tests.test_rollout import FACTORY, flat, make_solver, straight_and_resumed
from tests.toy_envs import point_mass


def test_segment_credit_by_hand():
    """Two slots, three steps; slot 0's episode ends with step 1 and the next starts at step 2."""
    costs = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ends = np.array([[False, False], [True, False], [False, False]])
    values = np.array([[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]])
    bootstrap = np.array([10.0, 20.0])
    gamma, lam = 0.9, 0.8
    advantages, to_go = segment_credit(costs, ends, values, bootstrap, discount=gamma, gae_lambda=lam)
    g = {(2, 0): 5 + gamma * 10, (1, 0): 3.0, (2, 1): 6 + gamma * 20}
    g[(0, 0)], g[(1, 1)] = 1 + gamma * g[(1, 0)], 4 + gamma * g[(2, 1)]
    g[(0, 1)] = 2 + gamma * g[(1, 1)]
    np.testing.assert_allclose(to_go, [[g[(t, j)] for j in range(2)] for t in range(3)])
    delta = {(2, 0): 5 + gamma * 10 - 2.5, (1, 0): 3 - 1.5, (0, 0): 1 + gamma * 1.5 - 0.5,
             (2, 1): 6 + gamma * 20 - 3.0, (1, 1): 4 + gamma * 3.0 - 2.0, (0, 1): 2 + gamma * 2.0 - 1.0}  # fmt: skip
    a = {(2, 0): delta[(2, 0)], (1, 0): delta[(1, 0)], (2, 1): delta[(2, 1)]}  # nothing follows an end
    a[(0, 0)] = delta[(0, 0)] + gamma * lam * a[(1, 0)]
    a[(1, 1)] = delta[(1, 1)] + gamma * lam * a[(2, 1)]
    a[(0, 1)] = delta[(0, 1)] + gamma * lam * a[(1, 1)]
    np.testing.assert_allclose(advantages, [[a[(t, j)] for j in range(2)] for t in range(3)])
    one, to_go_one = segment_credit(costs, ends, values, bootstrap, discount=gamma, gae_lambda=1.0)
    np.testing.assert_allclose(one, to_go_one - values)  # lambda 1: cost-to-go minus V
    zero, _ = segment_credit(costs, ends, values, bootstrap, discount=gamma, gae_lambda=0.0)
    np.testing.assert_allclose(zero, [[delta[(t, j)] for j in range(2)] for t in range(3)])


def test_a_segment_of_whole_episodes_is_whole_episode_gae():
    """Episodes that all end with the segment's last step: the bootstrap plays no part and the
    credit is the whole-episode critic's (`StateValue.advantages`)."""
    rng = np.random.default_rng(0)
    costs, values = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    ends = np.zeros((7, 4), dtype=bool)
    ends[-1] = True
    critic = StateValue(gae_lambda=0.7)
    advantages, to_go = segment_credit(costs, ends, values, rng.normal(size=4), discount=0.95, gae_lambda=0.7)
    whole_to_go = np.zeros_like(costs)
    following = np.zeros(4)
    for t in range(6, -1, -1):
        following = costs[t] + 0.95 * following
        whole_to_go[t] = following
    np.testing.assert_allclose(to_go, whole_to_go)
    alive = np.ones_like(ends)
    np.testing.assert_allclose(advantages, critic.advantages(whole_to_go, costs, values, alive, discount=0.95))


def test_segment_credit_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="Invalid segment"):
        segment_credit(np.zeros((3, 2)), np.zeros((3, 1), dtype=bool), np.zeros((3, 2)), np.zeros(2),
                       discount=1.0, gae_lambda=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="Invalid bootstrap"):
        segment_credit(np.zeros((3, 2)), np.zeros((3, 2), dtype=bool), np.zeros((3, 2)), np.zeros(3),
                       discount=1.0, gae_lambda=1.0)  # fmt: skip


def segment_trainer(factory=FACTORY, horizon=12, **options):
    return Trainer(factory, make_solver(episodes=4, seed=1), eval_every=0, credit="to_go", discount=0.99, seed=5,
                   critic=StateValue(hidden=(8,), gae_lambda=0.9, seed=2), horizon=horizon, **options)  # fmt: skip


def test_slots_run_on_across_updates_and_reseed_each_new_episode():
    resets = []
    with segment_trainer() as trainer:
        reset = trainer.pool.reset
        trainer.pool.reset = lambda seeds, ids=None: resets.append((list(seeds), ids)) or reset(seeds, ids)
        told = []
        tell = trainer.solver.tell
        trainer.solver.tell = lambda losses, **kw: told.append(kw["step_losses"]) or tell(losses, **kw)
        records = [trainer.update() for _ in range(4)]
        assert [r["env_steps"] for r in records] == [48, 96, 144, 192]  # 4 slots x 12 steps per update
        assert all(len(steps) == 12 and all(s.shape == (4,) for s in steps) for steps in told)
        # The first reset starts every slot; later ones restart the slots whose episode ended,
        # each with the seed of its count of episodes in that slot.
        assert resets[0] == ([trainer.slot_seed(j, 0) for j in range(4)], None)
        counts = np.ones(4, dtype=int)
        for seeds, ids in resets[1:]:
            assert seeds == [trainer.slot_seed(int(j), int(counts[j])) for j in ids]
            counts[ids] += 1
        assert np.array_equal(counts, trainer._slots["counts"])
        assert counts.sum() > 4  # PointMass episodes last 5-30 steps: some ended
        assert (trainer._episode_times() < 31).all() and np.isfinite(records[-1]["return_mean"])
        # an episode running for longer than one update carried its steps over
        assert any(len(actions) > 12 for actions in trainer.pool.actions) or (counts > 1).all()


def test_a_segment_run_resumes_bit_for_bit_through_a_checkpoint_file(tmp_path):
    straight, resumed, state = straight_and_resumed(segment_trainer, updates=6)
    assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
    assert torch.equal(flat(resumed.critic.network), flat(straight.critic.network))
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")  # weights_only: the episodes in flight as tensors
    assert any(len(actions) for actions in loaded["slots"]["actions"])  # an episode was mid-way
    with segment_trainer() as again:
        again.load_state_dict(loaded)
        for _ in range(3):
            again.update()
        assert torch.equal(flat(again.solver.policy), flat(straight.solver.policy))
        assert np.array_equal(again._slots["observations"], straight._slots["observations"])
    with segment_trainer(horizon=8) as other, pytest.raises(ValueError, match="horizon 12 \\(this trainer has 8\\)"):
        other.load_state_dict(loaded)
    whole = Trainer(FACTORY, make_solver(episodes=4, seed=1), eval_every=0, credit="to_go", seed=5,
                    critic=StateValue(hidden=(8,), seed=2))  # fmt: skip
    with whole, pytest.raises(ValueError, match="horizon 12 \\(this trainer has None\\)"):
        whole.load_state_dict(loaded)


def test_a_failed_episode_in_a_segment_gets_the_worst_advantage_and_a_warning():
    probe = segment_trainer()
    fail_seed = probe.slot_seed(2, 0)
    probe.close()
    factory = EnvFactory(point_mass, kwargs=(("fail_seed", fail_seed), ("fail_step", 3)))
    with segment_trainer(factory) as trainer:
        told = []
        tell = trainer.solver.tell
        trainer.solver.tell = lambda losses, **kw: told.append(kw["step_losses"]) or tell(losses, **kw)
        with pytest.warns(RuntimeWarning, match="(?s)slot 2 failed.*simulated simulator crash"):
            record = trainer.update()
        assert record["failed"] == 1 and trainer._slots["counts"][2] >= 2  # the slot went on with a new episode
        steps = torch.stack(told[0])  # [12, 4]
        for t in range(4):  # the failed episode's steps 0-3: the worst advantage of their step
            others = torch.cat([steps[t, :2], steps[t, 3:]])
            assert steps[t, 2] == others.max()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"horizon": 0}, r"Invalid horizon: 0"),
        ({"horizon": 2.5}, r"Invalid horizon: 2.5"),
        ({"horizon": 8, "critic": None}, r"Invalid horizon: segments of episodes need a critic"),
    ],
)
def test_bad_horizons_are_refused(options, message):
    options = {"critic": StateValue(hidden=(8,))} | options
    with pytest.raises(ValueError, match=message):
        Trainer(FACTORY, make_solver(episodes=4), eval_every=0, credit="to_go", **options)


def test_run_config_refuses_a_horizon_without_the_critic():
    assert RunConfig(env="Pendulum-v1", horizon=64).horizon == 64
    with pytest.raises(ValueError, match="Invalid horizon: segments of episodes need the critic"):
        RunConfig(env="Pendulum-v1", horizon=64, critic="none")
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="Invalid horizon"):
            RunConfig(env="Pendulum-v1", horizon=bad)


@pytest.mark.parametrize("kind", ["serial", "process"])
def test_a_pool_resets_some_envs_and_restores_episodes_in_flight(kind):
    from bbopt.rollout import make_pool

    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(3, 4, 2)).astype(np.float32)  # 3 steps of 4 envs
    with make_pool(kind, FACTORY, 4, 2) as pool:
        pool.reset([1, 2, 3, 4])
        for step in range(2):
            pool.step(np.arange(4), actions[step])
        again = pool.reset([7, 8], ids=[3, 1])  # the others keep running
        assert pool.live.all() and list(pool.seeds) == [1, 8, 3, 7]
        assert [len(a) for a in pool.actions] == [2, 0, 2, 0]
        moved = pool.step(np.arange(4), actions[2]).observations
        seeds, taken = pool.seeds.copy(), [list(a) for a in pool.actions]
    with make_pool("serial", FACTORY, 4) as fresh:
        np.testing.assert_array_equal(again, fresh.reset([8, 7], ids=[1, 3])[::-1])
    with make_pool(kind, FACTORY, 4, 2) as restored:
        restored.restore(seeds, taken)  # every env back where the first pool left it
        following = restored.step(np.arange(4), actions[0]).observations
    with make_pool("serial", FACTORY, 4) as reference:
        reference.reset([1, 8, 3, 7])
        for a in range(4):
            for action in taken[a]:
                reference.step([a], action[None])
        np.testing.assert_array_equal(following, reference.step(np.arange(4), actions[0]).observations)
    assert moved.shape == (4, 2)
    with make_pool("serial", FACTORY, 4) as pool:
        with pytest.raises(ValueError, match="Invalid seeds: 1 seeds for 2 envs"):
            pool.reset([1], ids=[0, 1])
        with pytest.raises(ValueError, match=r"Invalid ids: \[0, 0\]"):
            pool.reset([1, 2], ids=[0, 0])
        with pytest.raises(ValueError, match=r"Invalid ids: \[4\]"):
            pool.reset([1], ids=[4])
        with pytest.raises(ValueError, match="Invalid episodes: 3 seeds and 4 action lists for 4 envs"):
            pool.restore([1, 2, 3], [[], [], [], []])


def test_a_worker_that_dies_before_a_reset_of_some_envs_replays_its_other_episodes():
    """Worker 0 holds envs 0 and 1; it dies, and env 1 is restarted: env 0's episode in flight
    must be replayed, not lost (a whole-pool reset needs no replay)."""
    from bbopt.rollout import make_pool

    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, size=(4, 4, 2)).astype(np.float32)
    with make_pool("serial", FACTORY, 4) as reference:
        reference.reset([1, 2, 3, 4])
        for step in range(2):
            reference.step(np.arange(4), actions[step])
        reference.reset([9], ids=[1])
        expected = [reference.step(np.arange(4), actions[step]).observations for step in (2, 3)]
    with make_pool("process", FACTORY, 4, 2) as pool:
        pool.reset([1, 2, 3, 4])
        for step in range(2):
            pool.step(np.arange(4), actions[step])
        pool.processes[0].kill()
        pool.processes[0].join()
        with pytest.warns(RuntimeWarning, match="replaced, its 1 live episodes replayed and its reset sent again"):
            pool.reset([9], ids=[1])
        for step, observations in zip((2, 3), expected, strict=True):
            np.testing.assert_array_equal(pool.step(np.arange(4), actions[step]).observations, observations)


def test_a_checkpoint_whose_episodes_in_flight_do_not_fit_is_refused_before_anything_loads():
    with segment_trainer() as trainer:
        trainer.update()
        state = trainer.state_dict()
    bad_states = [
        {"observations": torch.zeros(3, 2)},  # 3 slots for 4
        {"observations": torch.zeros(4, 5)},  # another observation space
        {"returns": torch.tensor([0.0, float("nan"), 0.0, 0.0])},
        {"counts": torch.zeros(4, dtype=torch.int64)},
        {"actions": state["slots"]["actions"][:3]},
        {"actions": [torch.full((2, 2), float("inf"))] * 4},
        {"actions": [torch.zeros(3)] * 4},  # not whole actions of 2
    ]
    for change in bad_states:
        with segment_trainer() as fresh:
            before = flat(fresh.solver.policy).clone()
            with pytest.raises(ValueError, match="Invalid checkpoint: its episodes in flight"):
                fresh.load_state_dict(state | {"slots": state["slots"] | change})
            assert fresh.updates == 0 and torch.equal(flat(fresh.solver.policy), before)
    with segment_trainer() as fresh, pytest.raises(ValueError, match="unreadable"):
        fresh.load_state_dict(state | {"slots": {k: v for k, v in state["slots"].items() if k != "seeds"}})


def test_a_falling_sigma_follows_the_run_config_and_resumes_bit_for_bit(tmp_path):
    """``--sigma-final``: sigma falls in equal steps from ``--sigma`` over the run's updates (or
    ``--sigma-decay`` env steps, warm-up excluded), one step per update, then stays; a run
    interrupted mid-way resumes on the same line, bit for bit."""
    import dataclasses

    config = RunConfig(env="Pendulum-v1", population=4, horizon=32, env_steps=1024, sigma=0.6, sigma_final=0.2,
                       hidden=[8], eval_every=0, checkpoint_every=1, pool="serial", threads=1)  # fmt: skip
    assert sigma_updates(config) == 8  # 1,024 steps in updates of 4 x 32
    assert sigma_updates(dataclasses.replace(config, sigma_decay=300)) == 3
    assert sigma_updates(dataclasses.replace(config, critic_warmup=256)) == 6
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with make_trainer(config, tmp_path / "a") as straight:
        straight.train(env_steps=1024, progress=False)
    assert [r["sigma"] for r in straight.history] == pytest.approx([0.6 - 0.05 * k for k in range(1, 9)])
    warm = dataclasses.replace(config, critic_warmup=256)  # two updates that fit only the critic
    (tmp_path / "w").mkdir()
    with make_trainer(warm, tmp_path / "w") as trainer:
        trainer.train(env_steps=1024, progress=False)
    assert [r.get("critic_warmup", False) for r in trainer.history] == [True, True] + [False] * 6
    assert [r["sigma"] for r in trainer.history] == pytest.approx([0.6, 0.6] + [0.6 - 0.4 / 6 * k for k in range(1, 7)])
    sigmas = []
    resumed = resumed_after_three_updates(config, tmp_path / "b", sigmas)
    assert sigmas == pytest.approx([0.45])
    assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
    assert [r["sigma"] for r in resumed.history] == [r["sigma"] for r in straight.history]


def resumed_after_three_updates(config, out, sigmas=None):
    """A run of ``config`` in ``out`` interrupted after its third update (Ctrl-C), then resumed
    from its checkpoint to the end; the resumed trainer (closed). ``sigmas`` gets the sigma the
    resumed solver starts from."""

    def stop_after_three(record):
        if record["update"] == 3:
            raise KeyboardInterrupt

    with make_trainer(config, out) as first, pytest.raises(KeyboardInterrupt):
        first.train(env_steps=config.env_steps, progress=False, callback=stop_after_three)
    with make_trainer(config, out) as resumed:
        resumed.resume(out / "checkpoint.pt")
        if sigmas is not None:
            sigmas.append(resumed.solver.noise.mean_sigma())
        resumed.train(env_steps=config.env_steps, progress=False)
    return resumed


def test_correlated_noise_with_reuse_on_segments_resumes_bit_for_bit(tmp_path):
    """``--correlation --reuse``: each slot's noise an AR(1) sequence over its segment (fresh at
    every update: the solver's record is cleared by each tell, so no noise state crosses a
    checkpoint), every update's passes taken on the factors' ratios; a run interrupted after 3
    updates resumes bit for bit."""
    config = RunConfig(env="Pendulum-v1", population=4, horizon=32, env_steps=1024, correlation=0.8, reuse=3,
                       hidden=[8], eval_every=0, checkpoint_every=1, pool="serial", threads=1)  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with make_trainer(config, tmp_path / "a") as straight:
        assert (straight.solver.correlation, straight.solver.reuse) == (0.8, 3)
        straight.train(env_steps=1024, progress=False)
    assert [r["reuse_passes"] for r in straight.history] == [3.0] * 8
    resumed = resumed_after_three_updates(config, tmp_path / "b")
    assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
    assert torch.equal(flat(resumed.critic.network), flat(straight.critic.network))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sigma_final": 0.1, "horizon": 0}, r"Invalid sigma_final: the schedule counts updates of a fixed number"),
        ({"sigma_final": 0.1, "solver": "cem"}, r"Invalid sigma_final: the schedule counts updates"),
        ({"sigma_final": 0.0}, r"Invalid sigma_final: 0.0"),
        ({"sigma_final": float("nan")}, r"Invalid sigma_final: nan"),
        ({"sigma_decay": 1000}, r"Invalid sigma_decay: it is the length of the --sigma-final schedule"),
        ({"sigma_final": 0.1, "sigma_decay": -1}, r"Invalid sigma_decay: -1"),
    ],
)
def test_run_config_refuses_a_sigma_schedule_it_cannot_follow(options, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(env="Pendulum-v1", **options)
