"""ALOHA episodes started from demonstrations' states: snapshots, their replay, the seeded
reset distribution, stage shaping from a later stage, fine-tuning with it (seeded, resumable)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

pytest.importorskip("gym_aloha", reason="the ALOHA tests need gym-aloha: pip install -e '.[aloha]'")

from bbopt.cli import main
from bbopt.envs.aloha.demos import generate_demos, save_demos
from bbopt.envs.aloha.env import EPISODE_STEPS, AlohaStateEnv
from bbopt.envs.aloha.finetune import finetune, finetune_solver, make_finetune_env
from bbopt.envs.aloha.imitation import make_chunk_policy
from bbopt.envs.aloha.policy_files import save_chunk_policy
from bbopt.envs.aloha.scripted import SCRIPTED
from bbopt.envs.aloha.starts import DemoStarts, demo_states
from bbopt.rollout.driver import Trainer
from bbopt.rollout.pools import EnvFactory
from tests.test_rollout import straight_and_resumed


@pytest.fixture(scope="module")
def demos():
    return generate_demos("transfer_cube", 2, progress=False)


@pytest.fixture(scope="module")
def states(demos):
    return demo_states(demos)


def _scripted_run(env, placement: int, steps: int, snapshot_at: int):
    """Step the scripted policy; returns the snapshot before step ``snapshot_at``, the actions
    from there and what each of them returned."""
    policy = SCRIPTED[env.task](env.physics.model.ptr)
    obs, _ = env.reset(seed=placement)
    policy.reset(obs)
    snapshot, actions, results = None, [], []
    for k in range(steps):
        if k == snapshot_at:
            snapshot = env.snapshot()
        action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        if k >= snapshot_at:
            actions.append(action)
            results.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return snapshot, actions, results


@pytest.mark.parametrize("task", ["transfer_cube", "insertion"])
def test_a_restored_snapshot_steps_exactly_as_the_episode_went_on(task):
    snapshot, actions, results = _scripted_run(AlohaStateEnv(task), placement=3, steps=EPISODE_STEPS, snapshot_at=90)
    assert snapshot.steps == 90 and snapshot.placement_seed == 3
    copied = dataclasses.replace(snapshot, physics=snapshot.physics.copy())
    assert copied == snapshot and dataclasses.replace(snapshot, steps=91) != snapshot  # compared by value
    other = AlohaStateEnv(task)
    other.reset(seed=11)
    other.step(other.action_space.sample())
    _, info = other.reset(seed=5, options={"snapshot": snapshot})  # the snapshot's placement wins over the seed
    assert info["placement_seed"] == 3 and info["start_step"] == 90 and other.steps == 90
    for action, (obs, reward, terminated, truncated, info) in zip(actions, results, strict=True):
        got = other.step(action)
        np.testing.assert_array_equal(got[0], obs)  # bit for bit: MuJoCo's whole integration state came back
        assert got[1:4] == (reward, terminated, truncated) and got[4] == info
    assert results[-1][4]["is_success"]  # the scripted episode finished the task from there


def _stepped_env():
    env = AlohaStateEnv()
    env.reset(seed=1)
    for _ in range(5):
        env.step((env.action_space.low + env.action_space.high) / 2)
    return env


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda s: dataclasses.replace(s, task="insertion"), "Snapshot of a 'transfer_cube' episode"),
        (lambda s: dataclasses.replace(s, steps=EPISODE_STEPS), "step 300"),
        (lambda s: dataclasses.replace(s, steps=-1), "step -1"),
        (lambda s: dataclasses.replace(s, physics=s.physics[:-1]), "physics state of shape"),
        (lambda s: dataclasses.replace(s, physics=np.where(np.arange(len(s.physics)) == 3, np.nan, s.physics)),
         "finite"),
        (lambda s: s.physics, "expected a Snapshot"),
        (lambda s: dataclasses.replace(s, steps=5.5), "must be integers"),
        (lambda s: dataclasses.replace(s, placement_seed="1"), "must be integers"),
        (lambda s: dataclasses.replace(s, placement_seed=-1), "the placement >= 0"),
    ],
)  # fmt: skip
def test_a_bad_snapshot_is_refused_before_the_episode_changes(change, pattern):
    env = _stepped_env()
    before = (env.steps, env.placement_seed, env.snapshot().physics.copy())
    with pytest.raises(ValueError, match=pattern):
        env.reset(seed=2, options={"snapshot": change(env.snapshot())})
    assert (env.steps, env.placement_seed) == before[:2]
    np.testing.assert_array_equal(env.snapshot().physics, before[2])


def test_snapshot_needs_an_episode():
    with pytest.raises(RuntimeError, match="call reset"):
        AlohaStateEnv().snapshot()


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_demo_states_are_the_recorded_demonstrations(noise):
    """The re-run reproduces every recorded observation, DART noise included (drawn from the placement)."""
    demos = generate_demos("transfer_cube", 2, noise=noise, progress=False)
    states = demo_states(demos)
    assert [len(s) for s in states] == demos.episode_lengths.tolist()
    env = AlohaStateEnv()
    for (recorded, _), snapshots in zip(demos.split(), states, strict=True):
        for k in (0, len(snapshots) // 2, len(snapshots) - 1):
            obs, info = env.reset(options={"snapshot": snapshots[k]})
            assert info["start_step"] == k == snapshots[k].steps
            np.testing.assert_allclose(obs, recorded[k], atol=1e-5)


def test_demo_states_refuse_demos_that_do_not_replay(demos):
    tampered = dataclasses.replace(demos, observations=demos.observations.copy())
    start = int(demos.episode_lengths[0])
    tampered.observations[start + 40, 0] += 0.01  # episode 1, step 40
    with pytest.raises(ValueError, match=r"episode 1 \(placement 1\) does not replay: .* 0.01 apart"):
        demo_states(tampered)


def test_starts_are_drawn_from_the_seed_alone(states):
    env = DemoStarts(AlohaStateEnv(), states, 0.5)
    again = DemoStarts(AlohaStateEnv(), states, 0.5)
    seeds = range(4000)
    starts = [env.start(seed) for seed in seeds]
    assert starts == [again.start(seed) for seed in seeds]  # reproducible, whatever else happened
    moved = [s for s in starts if s is not None]
    n = len(seeds)
    assert abs(len(moved) - n / 2) / math.sqrt(n / 4) < 4  # the fraction (binomial z-score)
    per_demo = np.bincount([s.placement_seed for s in moved], minlength=2)
    assert abs(per_demo[0] - len(moved) / 2) / math.sqrt(len(moved) / 4) < 4  # demos equally likely
    steps = np.array([s.steps for s in moved if s.placement_seed == 0])
    length = len(states[0])
    assert steps.min() >= 0 and steps.max() <= length - 1
    assert abs(steps.mean() - (length - 1) / 2) / (length / math.sqrt(12 * len(steps))) < 4  # uniform over steps
    assert all(DemoStarts(AlohaStateEnv(), states, 0.0).start(seed) is None for seed in range(200))
    assert all(DemoStarts(AlohaStateEnv(), states, 1.0).start(seed) is not None for seed in range(200))


def test_a_reset_starts_where_the_seed_says(demos, states):
    env = DemoStarts(AlohaStateEnv(), states, 0.5)
    seed = next(s for s in range(100) if env.start(s) is not None)
    start = env.start(seed)
    obs, info = env.reset(seed=seed)
    recorded = demos.split()[start.placement_seed][0]  # placements 0 and 1 are episodes 0 and 1
    np.testing.assert_allclose(obs, recorded[start.steps], atol=1e-5)
    assert info["start_step"] == start.steps
    fresh = next(s for s in range(100) if env.start(s) is None)
    obs, info = env.reset(seed=fresh)
    assert "start_step" not in info and env.unwrapped.steps == 0 and info["placement_seed"] == fresh
    env.reset()  # no seed: a fresh placement
    assert env.unwrapped.steps == 0


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": -0.1}, "fraction"),
        ({"states": []}, "non-empty"),
        ({"states": [[]]}, "non-empty"),
        ({"env": "insertion"}, "'insertion' snapshots"),
    ],
)  # fmt: skip
def test_demo_starts_bad_input(states, arguments, pattern):
    env = AlohaStateEnv(arguments.get("env", "transfer_cube"))
    with pytest.raises(ValueError, match=pattern):
        DemoStarts(env, arguments.get("states", states), arguments.get("fraction", 0.5))


def test_shaping_from_a_later_stage_pays_only_what_the_episode_adds(demos, states):
    """A start in stage s is worth s + 0.5 progress; the rewards sum to the value gained from it."""
    late = states[0][-20]  # the cube in the left gripper's reach, held by the right
    env = make_finetune_env("transfer_cube", chunk=1, starts=[[late]], start_fraction=1.0)
    _, info = env.reset(seed=0)
    assert info["stage"] >= 2 and info["value"] == pytest.approx(info["stage"] + 0.5 * env.progress(info["stage"]))
    total, start_value = 0.0, info["value"]
    actions = demos.split()[0][1][-20:]
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
        total += reward
        if terminated:
            break
    assert info["is_success"] and total == pytest.approx(info["value"] - start_value) and info["value"] == 4.5


def _trainer(demos, states):
    def make():
        torch.manual_seed(0)  # the same start policy in every trainer, each its own
        policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
        factory = EnvFactory(make_finetune_env, (("task", "transfer_cube"), ("chunk", 2), ("starts", states),
                                                 ("start_fraction", 0.5)))  # fmt: skip
        return Trainer(factory, finetune_solver(policy, "ovlr", population=4, seed=0), eval_every=0, seed=7)

    return make


def test_training_with_demo_starts_resumes_bit_identically(demos, states):
    straight, resumed, _ = straight_and_resumed(_trainer(demos, states), updates=2)
    start = _trainer(demos, states)().solver.policy
    assert straight.env_steps == resumed.env_steps and straight.updates == resumed.updates == 2
    assert straight.solver.policy is not resumed.solver.policy
    for a, b in zip(straight.solver.policy.parameters(), resumed.solver.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    trained = zip(straight.solver.policy.parameters(), start.parameters(), strict=True)
    assert any(not torch.equal(a, c) for a, c in trained)
    # Moved starts are shorter: the same updates take fewer steps than fresh 300-step episodes.
    assert straight.env_steps < 2 * 4 * EPISODE_STEPS


def test_finetune_with_demo_starts(demos):
    runs = []
    for _ in range(2):
        policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
        _, history, _ = finetune(policy, "transfer_cube", env_steps=900, population=4, demos=demos,
                                 imitation_weight=0.0, demo_starts=1.0, validate_every=0, progress=False)  # fmt: skip
        runs.append((history, [p.detach().clone() for p in policy.parameters()]))
    (first, weights), (second, again) = runs
    assert [r["return_mean"] for r in first] == [r["return_mean"] for r in second]  # seeded: the same run
    assert all(torch.equal(a, b) for a, b in zip(weights, again, strict=True))
    assert "imitation_loss" not in first[-1]  # weight 0: starts only, no imitation term
    assert first[-1]["env_steps"] < len(first) * 4 * EPISODE_STEPS  # every episode started part-way
    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    refusals = [({"demo_starts": 0.5}, "needs demos"), ({"demos": demos, "demo_starts": 2.0}, "demo_starts"),
                ({"demos": demos, "imitation_weight": -1.0}, "imitation_weight")]  # fmt: skip
    for arguments, pattern in refusals:
        with pytest.raises(ValueError, match=pattern):
            finetune(policy, "transfer_cube", progress=False, **arguments)


def test_cli_refuses_demo_starts_without_demos(demos, tmp_path, capsys):
    policy_file = tmp_path / "bc.pt"
    save_chunk_policy(make_chunk_policy(demos, chunk=2, hidden=(16,)), policy_file, task="transfer_cube")
    code = main(["aloha", "finetune", "--policy", str(policy_file), "--demo-starts", "0.5", "--out",
                 str(tmp_path / "ft.pt"), "--no-progress"])  # fmt: skip
    assert code == 2 and "--demo-starts starts episodes from the demos' states: add --demos" in capsys.readouterr().err
    for value in ("1.5", "nan"):  # refused before any file is read
        code = main(["aloha", "finetune", "--policy", str(tmp_path / "none.pt"), "--demo-starts", value, "--out",
                     str(tmp_path / "ft.pt"), "--no-progress"])  # fmt: skip
        assert code == 2 and f"--demo-starts {value} must lie in [0, 1]" in capsys.readouterr().err
    demos_file = save_demos(demos, tmp_path / "demos.npz")
    code = main(["aloha", "finetune", "--policy", str(policy_file), "--demos", str(demos_file), "--demo-starts",
                 "0.5", "--imitation-weight", "0", "--env-steps", "600", "--population", "2", "--validate-every",
                 "0", "--eval-episodes", "0", "--out", str(tmp_path / "ft.pt"), "--no-progress"])  # fmt: skip
    assert code == 0 and (tmp_path / "ft.pt").is_file()
