"""ALOHA: state envs, IK, scripted demos and their schema, chunk policies, imitation, fine-tuning, CLI."""

from __future__ import annotations

import copy
import itertools
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("gym_aloha", reason="the ALOHA tests need gym-aloha: pip install -e '.[aloha]'")

import bbopt
import bbopt.envs  # registers the bbopt/ ids
import bbopt.envs.aloha.finetune as finetune_module
from bbopt.cli import main
from bbopt.envs.aloha.demos import Demos, action_chunks, generate_demos, load_demos, save_demos
from bbopt.envs.aloha.env import AlohaStateEnv, import_gym_aloha, policy_features
from bbopt.envs.aloha.evaluation import evaluate_success
from bbopt.envs.aloha.finetune import (
    CORRELATION,
    LR,
    LR_KL,
    MAX_KL,
    REUSE,
    StageShaping,
    finetune,
    finetune_lr_schedule,
    finetune_solver,
    make_finetune_env,
)
from bbopt.envs.aloha.ik import ArmIK, orientation_error
from bbopt.envs.aloha.imitation import ChunkL1, behavior_clone, make_chunk_policy
from bbopt.envs.aloha.policy_files import load_chunk_policy, save_chunk_policy
from bbopt.envs.aloha.scripted import RIGHT_DOWN, SCRIPTED
from bbopt.noise import Tiled
from bbopt.policies.chunking import ChunkMLP
from bbopt.rollout.chunking import ChunkedActions, TemporalEnsemble
from bbopt.rollout.driver import LR_KL as LR_KL_TRAIN

TASKS = ("transfer_cube", "insertion")


@pytest.fixture(scope="module")
def demos() -> Demos:
    return generate_demos("transfer_cube", 3, progress=False)


# ----------------------------------------------------------------------------- envs
@pytest.mark.parametrize("name", ["bbopt/AlohaTransferCube-v0", "bbopt/AlohaInsertion-v0"])
def test_registered_envs_pass_check_env(name):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(name)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.shape == (36,) if "Transfer" in name else (43,)


@pytest.mark.parametrize("task", TASKS)
def test_placement_is_seeded_like_gym_aloha(task):
    _, _, _, utils, _ = import_gym_aloha()
    env = AlohaStateEnv(task)
    obs, info = env.reset(seed=7)
    expected = utils.sample_box_pose(7) if task == "transfer_cube" else np.concatenate(utils.sample_insertion_pose(7))
    np.testing.assert_allclose(env.placement(7), expected)
    assert info == {"is_success": False, "stage": 0, "placement_seed": 7}
    # The objects start where gym-aloha puts them (x, y; z falls from the sampled height).
    np.testing.assert_allclose(obs[28:30], expected[0:2], atol=1e-6)
    again, _ = AlohaStateEnv(task).reset(seed=7)
    np.testing.assert_array_equal(obs, again)
    other, _ = env.reset(seed=8)
    assert not np.allclose(obs[28:30], other[28:30])


def test_unseeded_resets_follow_the_first_seed():
    first, second = AlohaStateEnv(), AlohaStateEnv()
    first.reset(seed=3)
    second.reset(seed=3)
    a, info_a = first.reset()
    b, info_b = second.reset()
    np.testing.assert_array_equal(a, b)
    assert info_a["placement_seed"] == info_b["placement_seed"] != 3


def test_action_box_is_the_actuators_range():
    env = AlohaStateEnv()
    low, high = env.action_space.low, env.action_space.high
    # A gripper target g drives the fingers to 0.01844 + 0.03956 g, clamped to [0.021, 0.057].
    assert low[6] == pytest.approx((0.021 - 0.01844) / 0.03956, abs=1e-5)
    assert high[13] == pytest.approx((0.057 - 0.01844) / 0.03956, abs=1e-5)
    assert low[1] == pytest.approx(-1.85005) and high[2] == pytest.approx(1.6057)


def test_episode_steps_rewards_and_truncation():
    env = AlohaStateEnv()
    obs, _ = env.reset(seed=0)
    hold = obs[:14].copy()
    for step in range(1, 301):
        obs, reward, terminated, truncated, info = env.step(hold)
        assert obs[-1] == pytest.approx(step / 300)
        assert reward == info["stage"] == 0 and not terminated
        assert truncated == (step == 300)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(hold)


@pytest.mark.parametrize(
    ("kwargs", "action", "error", "pattern"),
    [
        ({"task": "cube"}, None, ValueError, "Invalid task"),
        ({"render_mode": "human"}, None, ValueError, "render_mode"),
        ({}, np.zeros(13), ValueError, "action shape"),
        ({}, np.full(14, np.nan), ValueError, "NaN"),
    ],
)
def test_env_bad_input(kwargs, action, error, pattern):
    with pytest.raises(error, match=pattern):
        env = AlohaStateEnv(**kwargs)
        env.reset(seed=0)
        env.step(action)


def test_render_without_render_mode_says_how():
    with pytest.raises(RuntimeError, match="rgb_array"):
        AlohaStateEnv().render()


def test_physics_divergence_ends_the_episode_as_a_failure(monkeypatch):
    env = AlohaStateEnv()
    obs, _ = env.reset(seed=0)

    def diverge(action):
        raise env._physics_error("Physics state is invalid")

    monkeypatch.setattr(env._env, "step", diverge)
    after, reward, terminated, truncated, info = env.step(obs[:14])
    assert (reward, terminated, truncated, info["is_success"]) == (0.0, False, True, False)
    assert "invalid" in info["physics_error"]
    np.testing.assert_array_equal(after, obs)


# ----------------------------------------------------------------------------- IK
def test_ik_reaches_a_pose_within_tolerance():
    env = AlohaStateEnv()
    obs, _ = env.reset(seed=0)
    ik = ArmIK(env.physics.model.ptr, "right")
    target = np.array([0.12, 0.45, 0.06])
    q = obs[7:13].copy()
    for _ in range(10):  # warm-started, as every control step does
        q = ik.solve(q, target, RIGHT_DOWN)
    position, rotation = ik.forward(q)
    assert np.linalg.norm(position - target) < 1e-3
    assert np.linalg.norm(orientation_error(rotation, RIGHT_DOWN)) < 1e-2
    assert np.all(q >= ik.low) and np.all(q <= ik.high)


def test_ik_keeps_unreachable_targets_inside_the_joint_ranges():
    env = AlohaStateEnv()
    obs, _ = env.reset(seed=0)
    ik = ArmIK(env.physics.model.ptr, "left")
    q = ik.solve(obs[0:6], np.array([2.0, 2.0, 2.0]), np.eye(3))
    assert np.all(np.isfinite(q)) and np.all(q >= ik.low) and np.all(q <= ik.high)


def test_orientation_error_is_the_rotation_vector():
    from scipy.spatial.transform import Rotation

    base = Rotation.from_euler("xyz", [0.3, -0.2, 0.5]).as_matrix()
    turn = np.array([0.05, -0.1, 0.2])
    target = Rotation.from_rotvec(turn).as_matrix() @ base
    np.testing.assert_allclose(orientation_error(base, target), turn, atol=1e-9)
    np.testing.assert_allclose(orientation_error(base, base), 0.0, atol=1e-12)


@pytest.mark.parametrize("arm, damping", [("middle", 0.2), ("left", 0.0)])
def test_ik_bad_input(arm, damping):
    with pytest.raises(ValueError, match=r"arm|damping"):
        ArmIK(AlohaStateEnv().physics.model.ptr, arm, damping=damping)


# ----------------------------------------------------------------------------- scripted demos
@pytest.mark.parametrize("task", TASKS)
def test_scripted_policy_succeeds(task):
    result = evaluate_success(task, SCRIPTED[task](AlohaStateEnv(task).physics.model.ptr), 3, progress=False)
    assert result["success_rate"] == 1.0 and result["mean_stage"] == 4.0


def test_scripted_policy_needs_reset():
    with pytest.raises(RuntimeError, match="reset"):
        SCRIPTED["transfer_cube"](AlohaStateEnv().physics.model.ptr)(np.zeros(36))


def test_demos_round_trip(demos, tmp_path):
    assert demos.episodes == 3 and demos.attempted == 3 and demos.success_rate == 1.0
    assert demos.observations.shape == (int(demos.episode_lengths.sum()), 36)
    path = save_demos(demos, tmp_path / "demos.npz")
    loaded = load_demos(path)
    for field in ("observations", "actions", "episode_lengths", "placement_seeds"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(demos, field))
    assert (loaded.task, loaded.attempted, loaded.noise) == ("transfer_cube", 3, 0.0)
    assert not list(tmp_path.glob("*.partial"))


def test_demos_replay_exactly(demos):
    env = AlohaStateEnv()
    (observations, actions), seed = demos.split()[1], int(demos.placement_seeds[1])
    obs, _ = env.reset(seed=seed)
    for k, action in enumerate(actions):
        np.testing.assert_allclose(obs, observations[k], atol=1e-5)
        obs, _, terminated, _, info = env.step(action)
    assert terminated and info["is_success"]


def _rewrite(path, **changes):
    with np.load(path) as data:
        fields = {name: data[name] for name in data.files}
    for name, value in changes.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    np.savez(path, **fields)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"actions": None}, "missing \\['actions'\\]"),
        ({"meta": np.array(json.dumps({"schema": "other/9", "task": "transfer_cube", "attempted": 3}))}, "schema"),
        ({"meta": np.array(json.dumps({"schema": "bbopt.aloha.demos/1", "task": "stack", "attempted": 3}))}, "task"),
        ({"observations": np.zeros((10, 35), np.float32)}, "observations have shape"),
        ({"episode_lengths": np.array([1, 2, 3])}, "sum to"),
        ({"placement_seeds": np.array([0, 1])}, "one length"),
        ({"actions": "nan"}, "NaN"),
        ({"episode_lengths": "float"}, "dtype"),
        ({"meta": np.array(json.dumps({"schema": "bbopt.aloha.demos/1", "task": "transfer_cube", "attempted": 1}))},
         "attempted"),
    ],
)  # fmt: skip
def test_demos_validation_errors(demos, tmp_path, change, pattern):
    path = save_demos(demos, tmp_path / "demos.npz")
    if isinstance(change.get("actions"), str):
        change = {"actions": np.where(np.arange(demos.actions.size).reshape(demos.actions.shape) == 5, np.nan,
                                      demos.actions).astype(np.float32)}  # fmt: skip
    if isinstance(change.get("episode_lengths"), str):
        change = {"episode_lengths": demos.episode_lengths.astype(np.float64)}
    _rewrite(path, **change)
    with pytest.raises(ValueError, match=pattern):
        load_demos(path)


def test_missing_demos_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="bbopt aloha demos"):
        load_demos(tmp_path / "nothing.npz")


@pytest.mark.parametrize("content", [b"not an archive at all", b"\x80\x04K\x01.", b"PK\x03\x04 truncated zip"])
def test_a_file_that_is_no_npz_archive_is_refused_as_not_demos(tmp_path, content):
    """A policy file, a pickle or a torn archive given as demos: one plain refusal naming the file
    (numpy's own message for a pickle advised loading it with allow_pickle)."""
    path = tmp_path / "policy.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"Invalid demos file .*policy\.pt: not an \.npz archive") as caught:
        load_demos(path)
    assert "allow_pickle" not in str(caught.value)


def test_a_single_npy_array_or_a_damaged_member_is_refused_as_demos(demos, tmp_path):
    array = tmp_path / "demos.npz"
    with array.open("wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(ValueError, match=r"not an \.npz archive"):
        load_demos(array)
    damaged = save_demos(demos, tmp_path / "good.npz")
    raw = bytearray(damaged.read_bytes())
    start = raw.index(b"observations.npy") + 200  # inside that member's stored data: its CRC no longer matches
    raw[start : start + 64] = bytes(64)
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="an unreadable member"):
        load_demos(damaged)


def test_action_chunks_repeat_the_last_action(demos):
    inputs, targets = action_chunks(demos, 4)
    (_, actions), length = demos.split()[0], int(demos.episode_lengths[0])
    chunks = targets[:length].view(length, 4, 14).numpy()
    np.testing.assert_array_equal(chunks[0], actions[0:4])
    np.testing.assert_array_equal(chunks[-1], np.repeat(actions[-1:], 4, axis=0))
    np.testing.assert_array_equal(chunks[-2][:1], actions[-2:-1])
    assert inputs.shape == (len(demos.actions), 36)
    with pytest.raises(ValueError, match="chunk"):
        action_chunks(demos, 0)


# ----------------------------------------------------------------------------- chunk policies
def test_chunk_policy_features_statistics_and_round_trip(demos, tmp_path):
    policy = make_chunk_policy(demos, chunk=3, hidden=(16,))
    assert policy.features.tolist() == policy_features("transfer_cube")
    assert 14 not in policy.features.tolist()  # no joint velocities
    std = torch.sqrt(policy.normalizer.var)
    assert float(std.min()) >= 0.05 - 1e-9  # the floor keeps near-constant features tame
    obs = torch.as_tensor(demos.observations[:5])
    changed = obs.clone()
    changed[:, 14:28] += 100.0  # velocities are not features
    torch.testing.assert_close(policy(obs), policy(changed))
    path = save_chunk_policy(policy, tmp_path / "p.pt", task="transfer_cube")
    loaded, meta = load_chunk_policy(path)
    assert meta == {"task": "transfer_cube"} and not loaded.training
    torch.testing.assert_close(loaded(obs), policy(obs))


def test_chunk_policy_ensemble_averages_its_members_each_seeded_apart(demos, tmp_path):
    ensemble = make_chunk_policy(demos, chunk=3, hidden=(16,), seed=2, members=3)
    alone = [make_chunk_policy(demos, chunk=3, hidden=(16,), seed=2 * 3 + j) for j in range(3)]
    for net, single in zip(ensemble.member_networks(), alone, strict=True):  # member j: seed 2 * 3 + j
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), single.net.parameters(), strict=True))
    obs = torch.as_tensor(demos.observations[:5])
    torch.testing.assert_close(ensemble(obs), torch.stack([single(obs) for single in alone]).mean(0))
    assert len(list(ensemble.parameters())) == 3 * len(list(alone[0].parameters()))
    path = save_chunk_policy(ensemble, tmp_path / "e.pt", task="transfer_cube")
    loaded, _ = load_chunk_policy(path)
    assert loaded.members == 3
    torch.testing.assert_close(loaded(obs), ensemble(obs))
    single = make_chunk_policy(demos, chunk=3, hidden=(16,))  # one member: the weights' names of files saved before
    assert {name.split(".")[1] for name in single.state_dict() if name.startswith("net.")} == {"layers", "output_scale"}
    assert {name.split(".")[1] for name in ensemble.state_dict() if name.startswith("net.")} == {"0", "1", "2"}
    old_file = {k: v for k, v in single.config().items() if k != "members"}  # a file saved before members existed
    torch.testing.assert_close(ChunkMLP(**old_file)(obs), ChunkMLP(**single.config())(obs))


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((36, 14, 0), "chunk"),
        ((36, 0, 2), "action_dim"),
        ((36, 14, 2, [40]), "features"),
        ((36, 14, 2, [1, 1]), "features"),
    ],
)  # fmt: skip
def test_chunk_policy_bad_input(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        ChunkMLP(*args[:3], features=args[3] if len(args) > 3 else None)
    with pytest.raises(ValueError, match="Invalid members: 0"):
        ChunkMLP(36, 14, 2, members=0)
    with pytest.raises(ValueError, match=r"Invalid seed: 3689348814741910323 with 5 members gives member seeds"):
        ChunkMLP(36, 14, 2, seed=(2**64 - 1) // 5, members=5)  # the last member seed past torch's range
    ChunkMLP(36, 14, 2, hidden=(4,), seed=(2**64 - 5) // 5, members=5)  # every member seed in it


def test_temporal_ensemble_by_hand():
    ensemble = TemporalEnsemble(3, decay=0.5)
    first = np.array([[1.0], [2.0], [3.0]])
    second = np.array([[10.0], [20.0], [30.0]])
    assert ensemble.add(first)[0] == 1.0
    # step 1: first chunk's entry 1 (age 1, weight e^-0.5) and second chunk's entry 0 (weight 1)
    w = np.exp(-0.5)
    assert ensemble.add(second)[0] == pytest.approx((w * 2.0 + 10.0) / (w + 1))
    ensemble.reset()
    assert ensemble.add(second)[0] == 10.0
    with pytest.raises(ValueError, match="chunk shape"):
        ensemble.add(np.zeros((2, 1)))


@pytest.mark.parametrize("chunk", [1, 2, 3, 10])
def test_temporal_ensemble_averages_every_chunk_that_covers_the_step(chunk):
    """Regression: with 10-step chunks the ensemble kept only the 5 newest (a negative slice start).
    Chunk s holds s + 100 j at entry j (its guess of step s + j), so step t's average of the chunks
    s = t - k + 1 .. t that cover it, weighted exp(-decay * (t - s)), is known by hand."""
    ensemble = TemporalEnsemble(chunk, decay=0.1)
    for t in range(2 * chunk + 3):
        executed = ensemble.add(np.array([[t + 100.0 * j] for j in range(chunk)]))[0]
        covering = np.arange(max(0, t - chunk + 1), t + 1)
        weights = np.exp(-0.1 * (t - covering))
        assert len(ensemble.chunks) == len(covering)
        assert executed == pytest.approx((weights * (covering + 100.0 * (t - covering))).sum() / weights.sum())


@pytest.mark.parametrize("shared, correlation, expected", [(False, 0.95, 0.33), (True, 0.95, 0.92), (True, 0.0, 0.33)])
def test_executed_noise_of_a_chunk_policy(shared, correlation, expected):
    """The executed ensemble's noise, in units of sigma (10-step chunks, ACT's decay 0.1): a draw
    per entry averages down to a third; one draw shared over the chunk keeps 0.92 of it when the
    draws are correlated over time (AR(1) at 0.95), and a third again when they are not."""
    from bbopt.policies import MLP

    policy = MLP(1, 20, hidden=(), seed=0)  # 10 steps x 2 actions
    noise = {"noise": Tiled(1.0, repeats=10)} if shared else {"sigma": 1.0}
    solver = bbopt.OVLR(policy, torch.optim.SGD(policy.parameters(), lr=0.0), episodes=400, seed=0,
                        correlation=correlation, **noise)  # fmt: skip
    ensembles, executed = [TemporalEnsemble(10, decay=0.1) for _ in range(400)], []
    for t in range(60):
        with torch.no_grad():
            perturbation = solver.ask(torch.zeros(400, 1)) - policy(torch.zeros(400, 1))
        step = [e.add(p.reshape(10, 2).numpy()) for e, p in zip(ensembles, perturbation, strict=True)]
        if t >= 20:  # the ensemble full and the AR(1) sequences settled
            executed.append(np.stack(step))
    assert np.std(executed) == pytest.approx(expected, abs=0.03)


def test_chunked_actions_env_executes_the_ensemble():
    env = ChunkedActions(AlohaStateEnv(), 2, decay=0.0)
    assert env.action_space.shape == (28,)
    obs, _ = env.reset(seed=0)
    hold = np.concatenate([obs[:14], obs[:14]])
    env.step(hold)
    assert np.allclose(env.ensemble.chunks[-1], hold.reshape(2, 14))
    with pytest.raises(ValueError, match="action shape"):
        env.step(np.zeros(14))


# ----------------------------------------------------------------------------- imitation
def test_chunk_l1_broadcasts_candidates():
    loss = ChunkL1(torch.tensor([1.0, 2.0]), chunk=2)
    targets = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    candidates = targets[:, None] + torch.tensor([[[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    torch.testing.assert_close(loss(candidates, targets[:, None]), torch.tensor([[0.5, 0.0]]))


@pytest.mark.parametrize("method", ["bp", "ovlr"])
def test_behavior_cloning_lowers_the_chunk_loss(demos, method):
    policy, history = behavior_clone(demos, method, chunk=2, hidden=(64,), epochs=8, batch_size=64, lr=3e-3,
                                     samples=8, sigma=0.05, progress=False)  # fmt: skip
    assert len(history) == 8 and not policy.training
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]


def test_behavior_cloning_an_ensemble_fits_each_member_as_alone(demos):
    options = {"chunk": 2, "hidden": (16,), "epochs": 2, "batch_size": 64, "progress": False}
    ensemble, history = behavior_clone(demos, "bp", seed=1, members=2, **options)
    fits = [behavior_clone(demos, "bp", seed=1 * 2 + j, **options) for j in range(2)]  # own init, own data order
    for net, (single, _) in zip(ensemble.member_networks(), fits, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), single.net.parameters(), strict=True))
    assert not ensemble.training and len(history) == 2
    for epoch, record in enumerate(history):
        losses = [member_history[epoch]["train_loss"] for _, member_history in fits]
        assert record["member_losses"] == losses and record["train_loss"] == pytest.approx(sum(losses) / 2)
    obs = torch.as_tensor(demos.observations[:4])
    torch.testing.assert_close(ensemble(obs), (fits[0][0](obs) + fits[1][0](obs)) / 2)
    with pytest.raises(ValueError, match="Invalid members: 0"):
        behavior_clone(demos, members=0, **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"method": "adam"}, "method"),
        ({"method": "ovlr", "sigma": 0.0}, r"Invalid sigma: 0\.0 \(expected a finite float > 0"),
        ({"method": "ovlr", "sigma": float("nan")}, r"Invalid sigma: nan"),
        ({"lr": -1.0}, r"Invalid lr: -1\.0"),
        ({"lr": float("inf")}, r"Invalid lr: inf"),
    ],
)
def test_behavior_cloning_refuses_bad_settings_as_given(demos, options, message):
    with pytest.raises(ValueError, match=message):  # a sigma not first scaled to a tensor of every dimension
        behavior_clone(demos, epochs=1, progress=False, **options)


# ----------------------------------------------------------------------------- fine-tuning
def test_stage_shaping_return_is_the_episode_value():
    env = make_finetune_env("transfer_cube", chunk=1)
    assert isinstance(env, StageShaping)
    obs, info = env.reset(seed=0)
    scripted = SCRIPTED["transfer_cube"](env.unwrapped.physics.model.ptr)
    scripted.reset(obs)
    total, values, done = info["value"], [info["value"]], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(scripted(obs))
        total += reward
        values.append(info["value"])
        done = terminated or truncated
    assert info["is_success"] and total == pytest.approx(4.5) and values[-1] == pytest.approx(4.5)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))  # never decreases
    assert 0 < values[0] < 0.5  # start: progress toward the cube, no stage


def test_finetune_runs_and_changes_the_policy(demos):
    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    before = [p.detach().clone() for p in policy.parameters()]
    policy, history, selection = finetune(policy, "transfer_cube", method="ovlr", env_steps=600, population=2,
                                          validate_every=0, progress=False)  # fmt: skip
    assert history and history[-1]["env_steps"] >= 600 and selection["validation_steps"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))
    with pytest.raises(ValueError, match="method"):
        finetune(policy, "transfer_cube", method="sgd")
    with pytest.raises(ValueError, match="Invalid validate_every: -1"):
        finetune(policy, "transfer_cube", validate_every=-1)
    with pytest.raises(ValueError, match="Invalid confirmation_episodes: -1"):
        finetune(policy, "transfer_cube", confirmation_episodes=-1)
    with pytest.raises(ValueError, match="env_steps"):
        finetune(policy, "transfer_cube", env_steps=0)
    with pytest.raises(ValueError, match="both 'episodes' and its new name 'population'"):
        finetune(policy, "transfer_cube", episodes=2, population=2)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['epsiodes'\]"):
        finetune(policy, "transfer_cube", epsiodes=2)
    with pytest.warns(FutureWarning, match="'episodes' is deprecated: use 'population'"):
        _, old, _ = finetune(policy, "transfer_cube", env_steps=300, episodes=2, validate_every=0, progress=False)
    assert old[-1]["env_steps"] == 2 * 300  # one update of 2 episodes of 300 steps


def test_finetune_defaults_to_ar1_noise_where_the_solver_takes_it(demos):
    """The setting of the 10-demo results: AR(1) noise (0.95) for OVLR and ES; CEM, whose sigma
    learns, refuses AR(1) and gets independent noise by default (and refuses it when asked). A run
    asking for sample reuse keeps the AR(1) noise (the passes weight each step's AR(1) factor)."""
    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    assert finetune_solver(policy, "ovlr").correlation == finetune_solver(policy, "es").correlation == CORRELATION
    assert finetune_solver(policy, "cem").correlation == 0.0
    assert finetune_solver(policy, "ovlr", correlation=0.0).correlation == 0.0
    with pytest.raises(ValueError, match="Invalid correlation"):
        finetune_solver(policy, "cem", correlation=0.5)
    reused = finetune_solver(policy, "ovlr", reuse=2)
    assert (reused.correlation, reused.reuse) == (CORRELATION, 2)
    assert finetune_solver(policy, "ovlr", correlation=0.0, reuse=2).correlation == 0.0
    both = finetune_solver(policy, "ovlr", correlation=0.5, reuse=2)
    assert (both.correlation, both.reuse) == (0.5, 2)
    with pytest.raises(ValueError, match="Invalid reuse"):  # the other refusals still reach the caller
        finetune_solver(policy, "cem", reuse=2)


def test_finetune_defaults_to_reuse_with_the_kl_adaptive_step_where_the_solver_takes_it(demos, monkeypatch):
    """The setting of the 10-demo reuse results: OVLR and ES take `REUSE` passes per population,
    and then the KL-adaptive step aimed at `LR_KL`; CEM (its sigma learns) and noise shared over
    the chunk get one pass and a constant step. What is given is kept, and the Trainer's refusals
    reach the caller."""
    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    assert finetune_solver(policy, "ovlr").reuse == finetune_solver(policy, "es").reuse == REUSE > 1
    assert finetune_solver(policy, "cem").reuse == finetune_solver(policy, "ovlr", chunk_noise="shared").reuse == 1
    assert finetune_solver(policy, "ovlr", reuse=1).reuse == 1
    assert finetune_solver(policy, "es", reuse=3).reuse == 3
    # the line search bounds every update's KL with reuse, at twice the adaptive step's target
    assert finetune_solver(policy, "ovlr").max_kl == finetune_solver(policy, "es").max_kl == MAX_KL == 2 * LR_KL
    assert finetune_solver(policy, "cem").max_kl is finetune_solver(policy, "ovlr", reuse=1).max_kl is None
    assert finetune_solver(policy, "ovlr", max_kl=0.5).max_kl == 0.5
    assert finetune_solver(policy, "ovlr", max_kl=0).max_kl is None  # 0: no search
    with pytest.raises(ValueError, match=r"Invalid max_kl: .*cannot reuse: .*learns=True"):
        finetune_solver(policy, "cem", max_kl=0.5)  # not "add reuse=2", which CEM cannot take
    with pytest.raises(ValueError, match=r"Invalid max_kl: .*cannot reuse: .*got Tiled"):
        finetune_solver(policy, "ovlr", chunk_noise="shared", max_kl=0.5)
    with pytest.raises(ValueError, match=r"Invalid max_kl: it bounds the update of reuse.*add reuse=2"):
        finetune_solver(policy, "ovlr", reuse=1, max_kl=0.5)  # here adding reuse is the remedy
    with pytest.raises(ValueError, match="Invalid max_kl"):
        finetune_solver(policy, "ovlr", max_kl=float("nan"))
    assert finetune_lr_schedule(REUSE) == ("kl", LR_KL) and LR_KL != LR_KL_TRAIN
    assert finetune_lr_schedule(1) == ("constant", None)
    assert finetune_lr_schedule(3, lr_kl=0.5) == ("kl", 0.5)
    assert finetune_lr_schedule(3, "constant") == ("constant", None)
    assert finetune_lr_schedule(3, "linear") == ("linear", None)
    with pytest.raises(ValueError, match="Invalid lr_schedule: 'kl' adapts the step"):
        finetune_lr_schedule(1, "kl")
    with pytest.raises(ValueError, match="Invalid lr_kl: it is the KL the adaptive step aims at"):
        finetune_lr_schedule(1, lr_kl=0.1)  # no reuse: a constant step, which aims at nothing
    with pytest.raises(ValueError, match="Invalid lr_kl"):
        finetune_lr_schedule(REUSE, lr_kl=float("nan"))
    # a run: the passes, and the Trainer gets the adaptive step with finetune's KL target
    trainers = []

    class Recorded(finetune_module.Trainer):
        def __init__(self, *args, **options):
            trainers.append(options)
            super().__init__(*args, **options)

    monkeypatch.setattr(finetune_module, "Trainer", Recorded)
    _, history, _ = finetune(policy, "transfer_cube", env_steps=300, population=2, validate_every=0, progress=False)
    assert [record.get("reuse_passes") for record in history] == [REUSE]
    assert 0 <= history[0]["step_scale"] <= 1 and history[0]["update_kl"] >= 0  # the search ran
    assert (trainers[-1]["lr_schedule"], trainers[-1]["lr_kl"]) == ("kl", LR_KL)
    finetune(policy, "transfer_cube", env_steps=300, population=2, reuse=1, validate_every=0, progress=False)
    assert (trainers[-1]["lr_schedule"], trainers[-1]["lr_kl"]) == ("constant", None)


def test_finetune_with_noise_shared_over_the_chunk(demos):
    """chunk_noise="shared": one draw per step repeated over the chunk (`Tiled`), with AR(1) noise by
    default; a run moves the policy; CEM (its sigma learns), reuse and unknown names are refused."""
    policy = make_chunk_policy(demos, chunk=3, hidden=(16,))
    for method in ("ovlr", "es"):
        solver = finetune_solver(policy, method, chunk_noise="shared")
        assert isinstance(solver.noise, Tiled) and solver.noise.repeats == 3 and solver.correlation == CORRELATION
    assert not isinstance(finetune_solver(policy, "ovlr").noise, Tiled)
    with pytest.raises(ValueError, match="Invalid chunk_noise: 'shared' keeps sigma fixed, and cem learns its sigma"):
        finetune_solver(policy, "cem", chunk_noise="shared")
    with pytest.raises(ValueError, match="Invalid chunk_noise: 'shared' with reuse 2"):
        finetune_solver(policy, "ovlr", chunk_noise="shared", reuse=2)
    with pytest.raises(ValueError, match=r"Invalid chunk_noise: 'whole' \(expected one of"):
        finetune(policy, "transfer_cube", chunk_noise="whole", progress=False)
    before = [p.detach().clone() for p in policy.parameters()]
    policy, history, _ = finetune(policy, "transfer_cube", env_steps=600, population=2, chunk_noise="shared",
                                  validate_every=0, progress=False)  # fmt: skip
    assert [record["env_steps"] for record in history] == [600]
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("sigma", -1.0, r"Invalid sigma: -1.0 \(expected a finite float > 0"),
        ("sigma", float("nan"), r"Invalid sigma: nan"),
        ("lr", 0.0, r"Invalid lr: 0.0 \(expected a finite float > 0"),
        ("lr", float("inf"), r"Invalid lr: inf"),
    ],
)
def test_finetune_solver_refuses_a_bad_sigma_or_lr_by_its_given_value(demos, option, value, message):
    """Refused as given, before sigma is scaled by each action's std (which printed a tensor of
    every dimension) and before an Adam step of 0 ran a whole fine-tuning that moved nothing, or
    one of inf ended in 'Invalid action'."""
    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    with pytest.raises(ValueError, match=message):
        finetune_solver(policy, "ovlr", **{option: value})


def test_finetune_mixes_the_demos_imitation_loss_with_a_critic_and_correlated_noise(demos):
    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    policy, history, _ = finetune(policy, "transfer_cube", env_steps=600, population=2, credit="to_go",
                                  critic="state_value", correlation=0.5, demos=demos, imitation_weight=0.5,
                                  imitation_decay=0.9, validate_every=0, progress=False)  # fmt: skip
    assert [record["env_steps"] for record in history] == [600]
    assert history[-1]["imitation_loss"] > 0  # the chunk L1 of a minibatch of the demos
    with pytest.raises(ValueError, match="they show 'transfer_cube', the fine-tuning task is 'insertion'"):
        finetune(policy, "insertion", demos=demos, progress=False)
    with pytest.raises(ValueError, match="Invalid critic: 'yes'"):
        finetune(policy, "transfer_cube", critic="yes")


def test_finetune_runs_the_locomotion_recipe_in_segments(demos):
    """``bbopt train``'s per-step recipe reaches fine-tuning: GAE with a discount, updates of
    ``horizon`` steps per env slot whatever episode each is in (ALOHA's are 300 steps),
    clipped-ratio reuse, a critic warm-up; the options the Trainer refuses are refused here,
    before any step."""
    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    start = copy.deepcopy(policy.state_dict())
    _, history, _ = finetune(policy, "transfer_cube", env_steps=3 * 2 * 50, population=2, credit="to_go",
                             critic="state_value", discount=0.99, gae_lambda=0.95, horizon=50, reuse=3,
                             critic_warmup=100, lr_schedule="kl", lr_kl=1e-9, validate_every=0,
                             progress=False)  # fmt: skip
    assert [record["env_steps"] for record in history] == [100, 200, 300]  # updates of 50 steps in 2 slots
    assert [record.get("critic_warmup", False) for record in history] == [True, False, False]
    assert [record.get("reuse_passes") for record in history] == [None, 3, 3]
    assert any(not torch.equal(policy.state_dict()[k], start[k]) for k in start)
    # the KL-adaptive step: the warm-up measured no KL, the first real update moved past 2e-9
    assert [record["lr"] for record in history] == pytest.approx([LR, LR, LR / 1.5])
    with pytest.raises(ValueError, match="Invalid lr_schedule: 'kl' adapts the step to the KL the reuse passes"):
        finetune(policy, "transfer_cube", reuse=1, lr_schedule="kl", progress=False)
    with pytest.raises(ValueError, match="Invalid lr_kl: it is the KL the adaptive step aims at"):
        finetune(policy, "transfer_cube", reuse=3, lr_schedule="constant", lr_kl=0.01, progress=False)
    with pytest.raises(ValueError, match="Invalid critic_warmup: it trains the critic before the policy moves"):
        finetune(policy, "transfer_cube", credit="to_go", critic_warmup=100, progress=False)
    with pytest.raises(ValueError, match="Invalid critic_warmup: 300 env steps of warm-up in a run of 300"):
        finetune(policy, "transfer_cube", env_steps=300, credit="to_go", critic="state_value", critic_warmup=300,
                 progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="Invalid gae_lambda: GAE needs a critic"):
        finetune(policy, "transfer_cube", gae_lambda=0.9, progress=False)
    with pytest.raises(ValueError, match=r"Invalid gae_lambda: 1\.5"):
        finetune(policy, "transfer_cube", credit="to_go", critic="state_value", gae_lambda=1.5, progress=False)
    with pytest.raises(ValueError, match="Invalid horizon: segments of episodes need a critic"):
        finetune(policy, "transfer_cube", credit="to_go", horizon=50, progress=False)
    with pytest.raises(ValueError, match="Invalid discount: it discounts per-step credit"):
        finetune(policy, "transfer_cube", discount=0.99, progress=False)


@pytest.mark.parametrize("confirmation_episodes", [0, 4])
def test_finetune_keeps_the_best_validated_weights(demos, monkeypatch, confirmation_episodes):
    """Screened after every update; without a confirmation the first of the two best screens
    (update 1) is kept; with one, the start and the shortlist (updates 1, 3, 2) run on fresh
    placements and update 3, best there, is kept. Not the last weights either way."""
    from bbopt.envs.aloha import finetune as module
    from bbopt.envs.aloha.selection import CONFIRMATION_SEED, VALIDATION_SEED

    policy = make_chunk_policy(demos, chunk=2, hidden=(16,))
    screens, confirmations, seen = iter([0.5, 0.7, 0.6, 0.7]), iter([0.5, 0.4, 0.75, 0.5]), []

    def fake_validation(task, agent, episodes, *, seed, progress):
        assert (seed, episodes) in ((VALIDATION_SEED, 3), (CONFIRMATION_SEED, confirmation_episodes))
        seen.append(copy.deepcopy(agent.policy.state_dict()))
        success = next(screens if seed == VALIDATION_SEED else confirmations)
        return {"success_rate": success, "mean_stage": 1.0, "records": [{"steps": 10}] * episodes}

    monkeypatch.setattr(module, "evaluate_success", fake_validation)
    logged = []
    tracker = type("Tracker", (), {"log": lambda self, scalars, step: logged.append((step, dict(scalars))),
                                   "close": lambda self: None})()  # fmt: skip
    policy, history, selection = finetune(policy, "transfer_cube", env_steps=3 * 2 * 300 - 1, population=2, lr=0.01,
                                          validate_every=1, validation_episodes=3,
                                          confirmation_episodes=confirmation_episodes, progress=False,
                                          tracker=tracker)  # fmt: skip
    assert len(history) == 3 and len(seen) == 4 + 4 * bool(confirmation_episodes)
    validations = [(step, s["validation_success"]) for step, s in logged if "validation_success" in s]
    assert validations == [(0, 0.5)] + [(r["env_steps"], v) for r, v in zip(history, [0.7, 0.6, 0.7], strict=True)]
    assert [step for step, s in logged if "return_mean" in s] == [r["env_steps"] for r in history]
    curve = [[step, success, 1.0] for step, success in validations]
    expected = {"update": 1, "validation_success": 0.7, "start_validation_success": 0.5, "validation_steps": 120,
                "validation_curve": curve}  # fmt: skip
    if confirmation_episodes:
        expected |= {"update": 3, "validation_steps": 120 + 4 * 40, "confirmation_success": 0.75,
                     "confirmation": [[0, 0.5, 1.0], [1, 0.4, 1.0], [3, 0.75, 1.0], [2, 0.5, 1.0]]}  # fmt: skip
        for name, value in seen[0].items():  # the start's weights were confirmed first
            torch.testing.assert_close(value, seen[4][name])
    assert selection == expected
    for name, value in policy.state_dict().items():
        torch.testing.assert_close(value, seen[expected["update"]][name])
    assert any(not torch.equal(seen[1][k], seen[3][k]) for k in seen[1])


# ----------------------------------------------------------------------------- CLI
def test_cli_pipeline(tmp_path, capsys):
    demos_file, bc, tuned = tmp_path / "demos.npz", tmp_path / "bc.pt", tmp_path / "ft.pt"
    assert main(["aloha", "demos", "--episodes", "2", "--out", str(demos_file), "--no-progress"]) == 0
    assert "2/2 successful (100.0%)" in capsys.readouterr().out
    assert main(["aloha", "train", "--demos", str(demos_file), "--method", "ovlr", "--epochs", "1", "--hidden", "16",
                 "--samples", "4", "--eval-episodes", "1", "--members", "2", "--out", str(bc),
                 "--no-progress"]) == 0  # fmt: skip
    assert "BC-OVLR: success" in capsys.readouterr().out
    assert load_chunk_policy(bc)[0].members == 2 and load_chunk_policy(bc)[1]["members"] == 2
    assert main(["aloha", "finetune", "--policy", str(bc), "--env-steps", "600", "--population", "2",
                 "--eval-episodes", "1", "--out", str(tuned), "--no-progress", "--demos", str(demos_file),
                 "--credit", "to_go", "--critic", "state_value", "--validation-episodes", "1",
                 "--confirmation-episodes", "2"]) == 0  # the default AR(1) noise  # fmt: skip
    out = capsys.readouterr().out
    assert "after fine-tuning: success" in out and tuned.with_suffix(".csv").is_file()
    refused = tmp_path / "refused.pt"  # a solver's refusal comes before the start's evaluation
    assert main(["aloha", "finetune", "--policy", str(bc), "--method", "cem", "--chunk-noise", "shared",
                 "--out", str(refused), "--no-progress"]) == 2  # fmt: skip
    captured = capsys.readouterr()
    assert "cem learns its sigma" in captured.err and "before fine-tuning" not in captured.out
    assert not refused.exists()
    assert "on 2 fresh placements" in out and len(load_chunk_policy(tuned)[1]["selection"]["confirmation"]) == 2
    report = tmp_path / "eval.json"
    assert main(["aloha", "evaluate", "--policy", str(tuned), "--episodes", "1", "--json", str(report),
                 "--no-progress"]) == 0  # fmt: skip
    assert "bc-ovlr+finetune-ovlr" in capsys.readouterr().out
    assert json.loads(report.read_text())["episodes"] == 1
    assert main(["aloha", "evaluate", "--scripted", "insertion", "--episodes", "1", "--no-progress"]) == 0
    assert "scripted insertion: success 100.0%" in capsys.readouterr().out


def test_cli_errors_are_messages(tmp_path, capsys):
    def refused(arguments, message):
        assert main(arguments) == 2
        assert message in capsys.readouterr().err

    refused(["aloha", "train", "--demos", str(tmp_path / "none.npz"), "--out", str(tmp_path / "p.pt")],
            "bbopt aloha train: No demonstrations file")  # fmt: skip
    refused(["aloha", "train", "--demos", str(tmp_path / "none.npz"), "--out", str(tmp_path / "none.npz")],
            "would overwrite the demos file")  # fmt: skip
    refused(["aloha", "finetune", "--policy", str(tmp_path / "none.pt"), "--imitation-weight", "0.5", "--out",
             str(tmp_path / "f.pt")], "add --demos FILE")  # fmt: skip
    refused(["aloha", "finetune", "--policy", str(tmp_path / "none.pt"), "--credit", "to_go", "--horizon", "100",
             "--out", str(tmp_path / "f.pt")], "Invalid horizon: segments of episodes need a critic")  # fmt: skip
    refused(["aloha", "finetune", "--policy", str(tmp_path / "none.pt"), "--credit", "to_go", "--critic-warmup",
             "1e4", "--out", str(tmp_path / "f.pt")], "Invalid critic_warmup: it trains the critic")  # fmt: skip
    refused(["aloha", "finetune", "--policy", str(tmp_path / "none.pt"), "--reuse", "1", "--lr-schedule", "kl",
             "--out", str(tmp_path / "f.pt")], "Invalid lr_schedule: 'kl' adapts the step")  # fmt: skip
    with pytest.raises(SystemExit):  # argparse
        main(["aloha", "demos", "--episodes", "0", "--out", str(tmp_path / "d.npz")])
    (tmp_path / "junk.pt").write_text("not a policy")
    refused(["aloha", "evaluate", "--policy", str(tmp_path / "junk.pt")], "junk.pt: not a checkpoint")
    refused(["aloha", "finetune", "--policy", str(tmp_path / "none.pt"), "--out", str(tmp_path / "f.pt")],
            "bbopt aloha finetune: No policy file")  # fmt: skip
    (tmp_path / "bc.pt").write_text("the start policy")  # refused before it is read: it stays as it was
    refused(["aloha", "finetune", "--policy", str(tmp_path / "bc.pt"), "--out", str(tmp_path / "." / "bc.pt")],
            "would overwrite the start policy's file")  # fmt: skip
    (tmp_path / "bc.csv").write_text("a policy named .csv")  # the curve's name (--out with .csv) is checked too
    refused(["aloha", "finetune", "--policy", str(tmp_path / "bc.csv"), "--out", str(tmp_path / "bc.pt")],
            "with the curve")  # fmt: skip
    refused(["aloha", "finetune", "--policy", str(tmp_path / "bc.pt"), "--demos", str(tmp_path / "d.npz"), "--out",
             str(tmp_path / "d.npz")], "would overwrite the demos file")  # fmt: skip
    assert (tmp_path / "bc.pt").read_text() == "the start policy"
    assert (tmp_path / "bc.csv").read_text() == "a policy named .csv"


def test_video_of_an_evaluation(tmp_path):
    env = AlohaStateEnv(render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    try:
        frame = env.render()
    except Exception as error:
        pytest.skip(f"no MuJoCo renderer here ({type(error).__name__}: {error}); set MUJOCO_GL=egl or osmesa")
    assert frame.shape == (48, 64, 3)
    agent = SCRIPTED["transfer_cube"](env.physics.model.ptr)  # succeeds at step ~173: a short video
    result = evaluate_success("transfer_cube", agent, 1, video=tmp_path / "v.gif", video_size=(64, 48), progress=False)
    assert (tmp_path / "v.gif").stat().st_size > 0 and result["video"].endswith("v.gif")


def test_video_without_a_renderer_keeps_the_success_rates(tmp_path, monkeypatch):
    def no_gl(self):
        raise RuntimeError("No OpenGL rendering backend is available.")

    monkeypatch.setattr(AlohaStateEnv, "render", no_gl)
    agent = SCRIPTED["transfer_cube"](AlohaStateEnv().physics.model.ptr)
    result = evaluate_success("transfer_cube", agent, 1, video=tmp_path / "v.mp4", progress=False)
    assert result["success_rate"] == 1.0 and result["video"].startswith("not recorded: rendering failed")
    assert not (tmp_path / "v.mp4").exists()
