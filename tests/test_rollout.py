"""Training through simulators: env pools (serial, processes, Ray) with fault tolerance, the
rollout driver's bookkeeping, observation normalization, checkpoints, parameter-space ES."""

import contextlib
import copy
import csv
import itertools
import json
import math
import os
import signal
from dataclasses import asdict

import gymnasium
import numpy as np
import pytest
import torch

import bbopt
from bbopt.baselines import ParameterES
from bbopt.rollout import (
    EnvFactory,
    ObservationNormalizer,
    Trainer,
    control_policy,
    load_checkpoint,
    make_pool,
    save_checkpoint,
)
from tests.toy_envs import PointMass, point_mass

FACTORY = EnvFactory(point_mass)
SPACE = PointMass()


def make_solver(name="ovlr", episodes=8, seed=0, **options):
    policy = control_policy(SPACE.observation_space, SPACE.action_space, hidden=(16,), seed=seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    if name == "param_es":
        return ParameterES(policy, optimizer, sigma=0.1, episodes=episodes, seed=seed)
    return bbopt.make_solver(name, policy, optimizer, sigma=0.3, episodes=episodes, seed=seed, **options)


def flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def straight_and_resumed(make_trainer, updates: int = 4):
    """Trainers from ``make_trainer()`` run ``updates`` updates straight, and half of them, saved
    and resumed in a fresh trainer for the rest: (straight, resumed, the halfway state), closed."""
    with make_trainer() as straight:
        for _ in range(updates):
            straight.update()
    with make_trainer() as first:
        for _ in range(updates // 2):
            first.update()
        state = first.state_dict()
    with make_trainer() as resumed:
        resumed.load_state_dict(state)
        for _ in range(updates - updates // 2):
            resumed.update()
    return straight, resumed, state


def scripted_rollout(pool, seeds, steps=40, before_step=None):
    """Reset with seeds and step every live episode with fixed actions (calling
    ``before_step(t)`` first); returns per-episode (rewards list, final observation)."""
    rng = np.random.default_rng(0)
    observations = pool.reset(seeds)
    live = np.ones(len(seeds), dtype=bool)
    rewards = [[] for _ in seeds]
    for t in range(steps):
        if before_step is not None:
            before_step(t)
        ids = np.flatnonzero(live)
        if not ids.size:
            break
        result = pool.step(ids, rng.uniform(-1, 1, size=(ids.size, 2)))
        for k, episode in enumerate(ids):
            rewards[episode].append(result.rewards[k])
        observations[ids] = result.observations
        live[ids[result.done]] = False
    return rewards, observations


# ------------------------------------------------------------------ pools


def test_process_pool_matches_serial_and_returns_results_in_the_order_asked():
    seeds = np.arange(6) + 10
    with make_pool("serial", FACTORY, 6) as serial, make_pool("process", FACTORY, 6, 2) as processes:
        expected = scripted_rollout(serial, seeds)
        got = scripted_rollout(processes, seeds)
        assert expected[0] == got[0] and np.array_equal(expected[1], got[1])
        processes.reset(seeds)
        serial.reset(seeds)
        order = np.array([5, 0, 3, 1])  # ids out of order, across both workers
        actions = np.linspace(-1, 1, 8).reshape(4, 2)
        a, b = serial.step(order, actions), processes.step(order, actions)
        assert np.array_equal(a.observations, b.observations) and np.array_equal(a.rewards, b.rewards)


def test_episodes_have_their_own_lengths():
    with make_pool("serial", FACTORY, 5) as pool:
        rewards, _ = scripted_rollout(pool, np.arange(5), steps=100)
    lengths = [len(r) for r in rewards]
    assert len(set(lengths)) > 1 and max(lengths) <= 30


def test_a_killed_worker_is_replaced_and_its_episodes_replayed():
    seeds = np.arange(6)
    with make_pool("serial", FACTORY, 6) as serial:
        expected = scripted_rollout(serial, seeds)
    with make_pool("process", FACTORY, 6, 2) as pool:

        def kill_at_four(t):
            if t == 4:
                os.kill(pool.pid(1), signal.SIGKILL)

        with pytest.warns(RuntimeWarning, match=r"worker 1 \(pid \d+\) died; replaced, its 3 live episodes replayed"):
            rewards, observations = scripted_rollout(pool, seeds, before_step=kill_at_four)
        assert pool.restarts == 1
    assert rewards == expected[0] and np.array_equal(observations, expected[1])


def test_an_env_that_raises_fails_that_episode_only():
    factory = EnvFactory(point_mass, kwargs=(("fail_seed", 2),))
    with make_pool("process", factory, 4, 2) as pool:
        pool.reset([1, 2, 3, 4])
        for _ in range(3):
            pool.step(np.arange(4), np.zeros((4, 2)))
        result = pool.step(np.arange(4), np.zeros((4, 2)))
    assert "simulated simulator crash" in result.errors[1] and "Traceback" in result.errors[1]
    assert result.done[1] and result.errors[0] is None and result.errors[2] is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_pool("threads", FACTORY, 4), r"Invalid pool: 'threads'"),
        (lambda: make_pool("serial", FACTORY, 0), r"Invalid num_envs: 0"),
        (lambda: make_pool("process", FACTORY, 4, 0), r"Invalid workers: 0"),
    ],
)
def test_bad_pool_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_stepping_a_finished_episode_is_refused():
    with make_pool("serial", FACTORY, 2) as pool:
        pool.reset([0, 1])
        with pytest.raises(ValueError, match="Invalid actions: 1 actions for 2 episodes"):
            pool.step([0, 1], np.zeros((1, 2)))
        pool.live[1] = False
        with pytest.raises(ValueError, match=r"Invalid ids: episodes \[1\] are not running"):
            pool.step([0, 1], np.zeros((2, 2)))


# ------------------------------------------------------------------ the driver


@pytest.mark.parametrize("name", ["ovlr", "es", "cem", "param_es"])
def test_update_bookkeeping_matches_a_plain_rollout(name):
    """The driver's returns and env-step count equal those of replaying, by hand, the actions
    the solver handed out (episodes of different lengths; pairs share their seed)."""
    solver = make_solver(name)
    handed = []
    original = solver.ask

    def recording_ask(inputs, episode_ids):
        actions = original(inputs, episode_ids=episode_ids)
        handed.append((episode_ids.clone(), actions.clone()))
        return actions

    solver.ask = recording_ask
    with Trainer(FACTORY, solver, eval_every=0) as trainer:
        seeds = trainer.episode_seeds(0)
        assert np.array_equal(seeds[:4], seeds[4:])  # antithetic partners share their start
        record = trainer.update()
    returns, steps = np.zeros(8), 0
    for episode in range(8):
        env = PointMass()
        env.reset(seed=int(seeds[episode]))
        for ids, actions in handed:
            hits = (ids == episode).nonzero().flatten()
            if hits.numel():
                _, reward, _, _, _ = env.step(np.clip(actions[hits[0]].numpy(), -1, 1))
                returns[episode] += reward
                steps += 1
    assert record["env_steps"] == steps
    assert record["return_mean"] == pytest.approx(returns.mean())
    assert record["return_max"] == pytest.approx(returns.max())


def test_a_failed_episode_gets_the_worst_loss_and_a_warning():
    factory = EnvFactory(point_mass, kwargs=(("fail_seed", None),))
    solver = make_solver("ovlr")
    told = []
    original_tell = solver.tell
    solver.tell = lambda losses: told.append(losses.clone()) or original_tell(losses)
    with Trainer(factory, solver, eval_every=0) as trainer:
        fail_seed = int(trainer.episode_seeds(0)[1])
        trainer.pool.factory = EnvFactory(point_mass, kwargs=(("fail_seed", fail_seed),))
        trainer.pool.episodes.factory = trainer.pool.factory
        with pytest.warns(RuntimeWarning) as caught:
            record = trainer.update()
    failed = sorted(str(warning.message).split(" failed")[0] for warning in caught)
    assert failed == ["episode 1", "episode 5"]  # one warning each, with the worker's traceback
    assert all("simulated simulator crash" in str(warning.message) for warning in caught)
    losses = told[0]
    assert record["failed"] == 2  # episode 1 and its antithetic partner 5 share the seed
    others = torch.cat([losses[:1], losses[2:5], losses[6:]])
    assert losses[1] == others.max() and losses[5] == others.max()


def kill_worker_at(trainer, step):
    def on_step(t):
        if t == step:
            if hasattr(trainer.pool, "pid"):
                os.kill(trainer.pool.pid(1), signal.SIGKILL)
            else:
                trainer.pool.ray.kill(trainer.pool.actors[1])

    return on_step


def test_update_with_a_killed_process_worker_equals_the_update_without():
    results = []
    for kill in (False, True):
        solver = make_solver("ovlr")
        with Trainer(FACTORY, solver, pool="process", workers=2, eval_every=0) as trainer:
            with pytest.warns(RuntimeWarning, match="died; replaced") if kill else contextlib.nullcontext():
                record = trainer.update(on_step=kill_worker_at(trainer, 3) if kill else None)
            results.append((flat(solver.policy), record, trainer.pool.restarts))
    (clean, clean_record, _), (faulted, faulted_record, restarts) = results
    assert restarts == 1 and torch.equal(clean, faulted)
    assert clean_record["return_mean"] == faulted_record["return_mean"]
    assert clean_record["env_steps"] == faulted_record["env_steps"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bbopt[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_pool_on_a_local_two_cpu_cluster_survives_a_killed_actor(ray_cluster):
    results = []
    for pool in ("serial", "ray", "ray-kill"):
        solver = make_solver("ovlr")
        kind = "serial" if pool == "serial" else "ray"
        with Trainer(FACTORY, solver, pool=kind, workers=2, eval_every=0) as trainer:
            killing = pool == "ray-kill"
            with pytest.warns(RuntimeWarning, match="died; replaced") if killing else contextlib.nullcontext():
                record = trainer.update(on_step=kill_worker_at(trainer, 3) if killing else None)
            results.append((flat(solver.policy), record, trainer.pool.restarts))
    assert results[2][2] == 1
    for params, record, _ in results[1:]:
        assert torch.equal(params, results[0][0])
        assert record["env_steps"] == results[0][1]["env_steps"]


def test_checkpoint_resume_continues_the_identical_run(tmp_path):
    def trainer(path):
        return Trainer(FACTORY, make_solver("ovlr"), eval_every=2, eval_episodes=2, checkpoint=path, checkpoint_every=2)

    with trainer(tmp_path / "a.pt") as straight:
        straight.train(env_steps=700, progress=False)  # a few updates of at most 8 x 30 steps
        target = straight.env_steps
    with trainer(tmp_path / "b.pt") as first:
        while first.updates < 2:
            first.history.append(first.update())
        save_checkpoint(first.state_dict(), tmp_path / "b.pt")
    with trainer(tmp_path / "b.pt") as resumed:
        resumed.resume(tmp_path / "b.pt")
        resumed.train(env_steps=target, progress=False)
        assert resumed.updates == straight.updates
        assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
        assert [r["return_mean"] for r in resumed.history] == [r["return_mean"] for r in straight.history]
        normalizer = resumed.normalizer
        assert torch.equal(normalizer.mean, straight.normalizer.mean) and normalizer.count > 0


def test_trainer_counts_the_cpu_seconds_of_its_updates_across_a_resume(tmp_path):
    with Trainer(FACTORY, make_solver("ovlr"), eval_every=0) as first:
        assert first.cpu_seconds == 0.0
        first.history.append(first.update())
        spent = first.cpu_seconds
        assert 0.0 < spent < 60.0
        state = first.state_dict()
    assert state["cpu_seconds"] == spent
    with Trainer(FACTORY, make_solver("ovlr"), eval_every=0) as resumed:
        resumed.load_state_dict(state)
        assert resumed.cpu_seconds == spent
        resumed.history.append(resumed.update())
        assert resumed.cpu_seconds > spent
    with Trainer(FACTORY, make_solver("ovlr"), eval_every=0) as older:  # a checkpoint from before the count
        older.load_state_dict({k: v for k, v in state.items() if k != "cpu_seconds"})
        assert math.isnan(older.cpu_seconds)  # unknown, not zero
    with Trainer(FACTORY, make_solver("ovlr"), eval_every=0) as fresh:  # a hostile count: refused before any load
        before = flat(fresh.solver.policy).clone()
        for bad in ("12", -1.0, True, [1.0]):
            with pytest.raises(ValueError, match=r"Invalid checkpoint: cpu_seconds"):
                fresh.load_state_dict(state | {"cpu_seconds": bad})
        assert torch.equal(flat(fresh.solver.policy), before) and fresh.updates == 0


def test_checkpoints_are_written_atomically_and_load_weights_only(tmp_path):
    path = save_checkpoint({"a": torch.ones(2), "n": 3}, tmp_path / "c.pt")
    assert load_checkpoint(path)["n"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match=r"(?i)weights_only"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------ normalization, policies


def test_normalizer_moments_are_exact_and_only_change_at_commit():
    normalizer = ObservationNormalizer(3)
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, size=(n, 3)) for n in (5, 17, 1, 40)]
    for batch in batches:
        normalizer.observe(torch.as_tensor(batch, dtype=torch.float32))
        assert normalizer.count == 0
    before = normalizer.mean.clone()
    assert torch.equal(before, torch.zeros(3))  # nothing committed yet
    normalizer.commit()
    everything = np.concatenate(batches).astype(np.float32).astype(np.float64)
    assert normalizer.count == len(everything)
    np.testing.assert_allclose(normalizer.mean.numpy(), everything.mean(0), rtol=1e-6)
    np.testing.assert_allclose(normalizer.var.numpy(), everything.var(0), rtol=1e-5)
    more = rng.normal(size=(7, 3))
    normalizer.observe(torch.as_tensor(more))
    normalizer.commit()
    everything = np.concatenate([everything, more])
    np.testing.assert_allclose(normalizer.var.numpy(), everything.var(0), rtol=1e-5)
    normalizer.frozen = True
    normalizer.observe(torch.ones(4, 3))
    normalizer.commit()
    assert normalizer.count == len(everything)
    assert set(normalizer.state_dict()) == {"count", "mean", "var"}


def test_control_policy_keeps_actions_in_the_box_and_refuses_other_spaces():
    import gymnasium as gym

    policy = control_policy(SPACE.observation_space, gym.spaces.Box(-2.0, 0.5, shape=(2,)), hidden=(8,))
    out = policy(torch.randn(100, 2) * 100)
    assert out.min() >= -2 and out.max() <= 0.5
    with pytest.raises(ValueError, match="Invalid spaces: Box -> Discrete"):
        control_policy(SPACE.observation_space, gym.spaces.Discrete(3))


def test_parameter_es_episode_mode_pairs_networks_and_round_trips_its_state():
    solver = make_solver("param_es")
    observations = torch.ones(8, 2)
    theta = flat(solver.policy)
    actions = solver.ask(observations, episode_ids=torch.arange(8))
    assert actions.shape == (8, 2)
    assert not torch.allclose(actions[0], actions[4])  # partners act with theta +- sigma eps
    solver.tell(torch.arange(8.0))
    assert not torch.equal(theta, flat(solver.policy))
    state = solver.state_dict()
    twin = make_solver("param_es", seed=5)
    twin.load_state_dict(state)
    a = solver.ask(observations, episode_ids=torch.arange(8))
    b = twin.ask(observations, episode_ids=torch.arange(8))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"episodes \[.*\] took no step"):
        fresh = make_solver("param_es")
        fresh.ask(observations[:2], episode_ids=torch.tensor([0, 1]))
        fresh.tell(torch.zeros(8))
    with pytest.raises(ValueError, match="Invalid episodes: 3"):
        ParameterES(solver.policy, solver.optimizer, episodes=3)


def test_trainer_refuses_a_solver_without_episode_mode():
    policy = control_policy(SPACE.observation_space, SPACE.action_space, hidden=(4,))
    solver = bbopt.OVLR(policy, torch.optim.Adam(policy.parameters()), samples=4)
    with pytest.raises(ValueError, match="needs an episode-mode solver"):
        Trainer(FACTORY, solver)


def test_training_improves_the_noiseless_point_mass_policy():
    solver = make_solver("ovlr", episodes=16)
    with Trainer(FACTORY, solver, eval_every=0) as trainer:
        before = trainer.evaluate(10)
        trainer.train(env_steps=16 * 15 * 25, progress=False)
        after = trainer.evaluate(10)
    assert after > before + 0.5 * abs(before), (before, after)


def test_the_tell_sees_the_same_normalization_as_the_asks():
    """At tell, the solver re-runs the policy on the recorded observations: those outputs plus
    the recorded noise must give back exactly the actions handed out, so the observation
    statistics may only change after the tell."""
    solver = make_solver("ovlr")
    handed, seen = [], {}
    original_ask, original_update = solver.ask, solver._update

    def recording_ask(inputs, episode_ids):
        actions = original_ask(inputs, episode_ids=episode_ids)
        handed.append(actions.clone())
        return actions

    def recording_update(**kwargs):
        seen.update(kwargs)
        return original_update(**kwargs)

    solver.ask, solver._update = recording_ask, recording_update
    with Trainer(FACTORY, solver, eval_every=0) as trainer:
        trainer.update()  # statistics committed after this one
        handed.clear()
        trainer.update()  # the policy's normalization now differs from the identity
    rebuilt = seen["mu"].detach() + 0.3 * seen["noise"]
    torch.testing.assert_close(rebuilt, torch.cat(handed), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ CLI and MuJoCo


def bbopt_cli(*arguments, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bbopt.cli", *map(str, arguments)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})  # fmt: skip


def test_cli_train_resume_and_evaluate_on_hopper(tmp_path):
    pytest.importorskip("mujoco", reason="MuJoCo is not installed (pip install 'bbopt[mujoco]')")
    out = tmp_path / "run"
    common = ["--population", 4, "--eval-every", 1, "--eval-episodes", 1, "--checkpoint-every", 1, "--no-progress",
              "--horizon", 50]  # fmt: skip
    done = bbopt_cli("train", "--env", "Hopper-v5", "--env-steps", 300, "--out", out, *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Hopper-v5 ovlr" in done.stdout
    for name in ("config.json", "checkpoint.pt", "curve.csv", "curve.png", "policy.pt", "summary.json"):
        assert (out / name).exists(), name
    spent = json.loads((out / "summary.json").read_text())["train_cpu_seconds"]
    assert spent > 0
    config = json.loads((out / "config.json").read_text())  # the defaults: per-step credit with critic and reuse
    assert (config["credit"], config["critic"], config["gae_lambda"], config["reuse"]) == ("to_go", "state_value",
                                                                                           0.98, 20)  # fmt: skip
    assert [line.split(",")[1] for line in (out / "curve.csv").read_text().splitlines()[1:]] == ["200", "400"]
    curve = list(csv.DictReader((out / "curve.csv").open()))  # the step each update took, and its reuse KL
    assert float(curve[0]["lr"]) == 0.001 and float(curve[1]["lr"]) <= 0.001  # the KL-adaptive step, never past --lr
    assert all(float(row["reuse_kl"]) > 0 for row in curve)
    first = (out / "curve.csv").read_text().splitlines()
    done = bbopt_cli("train", "--resume", out, "--env-steps", 600, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = (out / "curve.csv").read_text().splitlines()
    assert rows[: len(first)] == first and len(rows) > len(first)  # continued, nothing repeated
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, len(rows))) and rows[-1].split(",")[1] == "600"
    assert json.loads((out / "summary.json").read_text())["train_cpu_seconds"] > spent  # both sessions counted
    done = bbopt_cli("train", "--env", "Hopper-v5", "--env-steps", 300, "--out", out, *common, cwd=tmp_path)
    assert done.returncode == 2 and "already holds a run" in done.stderr
    done = bbopt_cli("evaluate", out, "--episodes", 2, cwd=tmp_path)
    assert done.returncode == 0 and "over 2 episodes" in done.stdout, done.stderr
    done = bbopt_cli("evaluate", tmp_path / "nothing", cwd=tmp_path)
    assert done.returncode == 2 and "config.json missing" in done.stderr


def test_cli_train_refuses_bad_arguments(tmp_path):
    done = bbopt_cli("train", "--env-steps", "abc", "--out", tmp_path / "x", cwd=tmp_path)
    assert done.returncode == 2 and "--env-steps" in done.stderr
    done = bbopt_cli("train", "--population", 3, "--out", tmp_path / "x", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "Invalid population: 3" in done.stderr
    done = bbopt_cli("train", "--resume", tmp_path / "none", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "No run to resume" in done.stderr


def test_linear_lr_schedule_decays_with_env_steps():
    """After each update the schedule sets the next update's step: 0.05 (1 - env steps / 600)."""
    solver = make_solver("ovlr")
    seen = []
    with Trainer(FACTORY, solver, eval_every=0, lr_schedule="linear") as trainer:
        trainer.train(
            env_steps=600,
            progress=False,
            callback=lambda r: seen.append((r["env_steps"], trainer.solver.optimizer.param_groups[0]["lr"])),
        )
    assert len(seen) >= 3
    assert [lr for _, lr in seen] == pytest.approx([0.05 * max(0.0, 1 - steps / 600) for steps, _ in seen])


def test_linear_lr_schedule_can_hold_the_step_for_a_number_of_env_steps_first():
    """``lr_decay_after=A``: the full step until A env steps, then linear to 0 at the run's total,
    ``1 - (steps - A) / (total - A)``; a run that ends before A never decays."""
    seen = []
    with Trainer(FACTORY, make_solver("ovlr"), eval_every=0, lr_schedule="linear", lr_decay_after=300) as trainer:
        trainer.train(
            env_steps=900,
            progress=False,
            callback=lambda r: seen.append((r["env_steps"], trainer.solver.optimizer.param_groups[0]["lr"])),
        )
    assert any(steps <= 300 for steps, _ in seen) and any(300 < steps < 900 for steps, _ in seen)
    expected = [0.05 * min(1.0, max(0.0, 1 - (steps - 300) / 600)) for steps, _ in seen]
    assert [lr for _, lr in seen] == pytest.approx(expected)
    with Trainer(FACTORY, make_solver("ovlr"), eval_every=0, lr_schedule="linear", lr_decay_after=10_000) as short:
        short.train(env_steps=400, progress=False)
        assert short.solver.optimizer.param_groups[0]["lr"] == 0.05
    for bad in (-1, 1.5, "300", True):
        with pytest.raises(ValueError, match="Invalid lr_decay_after"):
            Trainer(FACTORY, make_solver("ovlr"), lr_schedule="linear", lr_decay_after=bad)
    with pytest.raises(ValueError, match="Invalid lr_decay_after: it delays the linear schedule"):
        Trainer(FACTORY, make_solver("ovlr"), lr_decay_after=300)


@pytest.mark.parametrize(("schedule", "options"), [("linear", {}), ("kl", {"reuse": 3})])
def test_lr_schedules_resume_bit_for_bit(tmp_path, schedule, options):
    def trainer(path):
        return Trainer(FACTORY, make_solver("ovlr", **options), eval_every=0, checkpoint=path, checkpoint_every=2,
                       lr_schedule=schedule)  # fmt: skip

    def stop_after_two(record):
        if record["update"] == 2:
            raise KeyboardInterrupt

    with trainer(tmp_path / "a.pt") as straight:
        straight.train(env_steps=700, progress=False)
    with trainer(tmp_path / "b.pt") as first, pytest.raises(KeyboardInterrupt):
        first.train(env_steps=700, progress=False, callback=stop_after_two)
    with trainer(tmp_path / "b.pt") as resumed:
        resumed.resume(tmp_path / "b.pt")
        resumed.train(env_steps=700, progress=False)
        assert resumed.updates == straight.updates > 2
        assert torch.equal(flat(resumed.solver.policy), flat(straight.solver.policy))
        lrs = [t.solver.optimizer.param_groups[0]["lr"] for t in (resumed, straight)]
        assert lrs[0] == lrs[1]
        assert [r["lr"] for r in resumed.history] == [r["lr"] for r in straight.history]
        assert len({r["lr"] for r in straight.history}) > 1  # the schedule moved the step
    with pytest.raises(ValueError, match="Invalid lr_schedule: 'cosine'"):
        Trainer(FACTORY, make_solver("ovlr"), lr_schedule="cosine")


def test_kl_lr_schedule_sets_each_step_from_the_kl_the_update_before_measured():
    """``lr_schedule="kl"``: after an update whose last reuse pass measured a mean KL above
    ``2 * lr_kl`` the step is divided by 1.5, below ``lr_kl / 2`` multiplied by 1.5, within
    0.01-1 times the initial step (`bbopt.schedules.KLAdaptiveLR`)."""
    for target in (1e-4, 10.0):  # the policy moving more than the target, then less
        with Trainer(FACTORY, make_solver("ovlr", reuse=3), eval_every=0, lr_schedule="kl", lr_kl=target) as trainer:
            trainer.train(env_steps=1_000, progress=False)
        history = trainer.history
        assert len(history) >= 4 and history[0]["lr"] == 0.05
        for before, after in itertools.pairwise(history):
            kl = before["reuse_kl"]
            change = 1 / 1.5 if kl > 2 * target else 1.5 if kl < target / 2 else 1.0
            assert after["lr"] == pytest.approx(min(max(before["lr"] * change, 0.0005), 0.05))
        if target == 10.0:  # never past the step given
            assert {r["lr"] for r in history} == {0.05}
        else:
            assert history[-1]["lr"] < 0.05


def test_a_checkpoint_from_another_step_schedule_is_refused_by_name_before_anything_loads():
    """A Trainer checkpoint saved at a constant step and resumed under a schedule (or the reverse)
    is refused with the schedule named (not "another kind of optimizer"), before the critic or
    anything else is loaded: e.g. a `finetune` run begun before its default became "kl"."""
    from bbopt.rollout.critic import StateValue

    def trainer(schedule: str, critic_seed: int) -> Trainer:
        return Trainer(FACTORY, make_solver("ovlr", reuse=3), eval_every=0, lr_schedule=schedule, credit="to_go",
                       critic=StateValue(seed=critic_seed))  # fmt: skip

    for saved, resumed in (("constant", "kl"), ("kl", "constant"), ("linear", "constant")):
        with trainer(saved, 1) as run:
            run.train(env_steps=200, progress=False)
            state = run.state_dict()
        with trainer(resumed, 2) as fresh:
            critic = copy.deepcopy(fresh.critic.state_dict())
            saved_with = "with" if saved != "constant" else "without"
            with pytest.raises(ValueError, match=f"the optimizer was saved {saved_with} a step schedule"):
                fresh.load_state_dict(state)
            assert fresh.updates == 0
            assert all(torch.equal(v, critic["network"][k]) for k, v in fresh.critic.state_dict()["network"].items())


def test_a_checkpoint_refused_after_its_critic_loaded_leaves_the_trainer_as_it_was():
    """The critic loads before the imitation stream is checked: a refused imitation state puts the
    critic (network, Adam, target statistics, minibatch stream) back as it was."""
    from bbopt.rollout.critic import StateValue
    from bbopt.rollout.imitation import ImitationLoss

    def trainer(imitation_seed: int, critic_seed: int) -> Trainer:
        generator = torch.Generator().manual_seed(0)
        demos = torch.randn(20, 2, generator=generator), torch.randn(20, 2, generator=generator)
        imitation = ImitationLoss(*demos, lambda outputs, targets: ((outputs - targets) ** 2).sum(-1), weight=0.5,
                                  seed=imitation_seed)  # fmt: skip
        return Trainer(FACTORY, make_solver("ovlr"), eval_every=0, credit="to_go",
                       critic=StateValue(seed=critic_seed), imitation=imitation)  # fmt: skip

    with trainer(1, 1) as run:
        run.train(env_steps=200, progress=False)
        state = run.state_dict()
    with trainer(2, 2) as fresh:
        critic = copy.deepcopy(fresh.critic.state_dict())
        with pytest.raises(ValueError, match="Invalid imitation state: seed 1"):
            fresh.load_state_dict(state)
        assert fresh.updates == 0 and (fresh.critic.offset, fresh.critic.scale) == (critic["offset"], critic["scale"])
        assert all(torch.equal(v, critic["network"][k]) for k, v in fresh.critic.state_dict()["network"].items())
        assert torch.equal(fresh.critic.generator.get_state(), critic["generator"])


@pytest.mark.parametrize(("options", "message"), [
    ({"lr_kl": 0.02}, "Invalid lr_kl: it is the KL the adaptive step aims at"),
    ({"lr_schedule": "linear", "lr_kl": 0.02}, "Invalid lr_kl: it is the KL the adaptive step aims at"),
    ({"lr_schedule": "kl", "lr_kl": 0.0}, "Invalid lr_kl"), ({"lr_schedule": "kl", "lr_kl": -1.0}, "Invalid lr_kl"),
    ({"lr_schedule": "kl", "lr_kl": float("nan")}, "Invalid lr_kl"),
])  # fmt: skip
def test_kl_lr_schedule_refuses_bad_settings(options, message):
    with pytest.raises(ValueError, match=message):
        Trainer(FACTORY, make_solver("ovlr", reuse=3), **options)
    with pytest.raises(ValueError, match="Invalid lr_schedule: 'kl' adapts the step to the KL the reuse passes"):
        Trainer(FACTORY, make_solver("ovlr"), lr_schedule="kl")


def test_to_go_credit_hands_the_solver_each_steps_remaining_cost():
    solver = make_solver("ovlr")
    told = {}
    original_tell = solver.tell

    def recording_tell(losses, step_losses=None):
        told["losses"], told["steps"] = losses.clone(), [s.clone() for s in step_losses]
        return original_tell(losses, step_losses=step_losses)

    solver.tell = recording_tell
    with Trainer(FACTORY, solver, eval_every=0, credit="to_go") as trainer:
        trainer.update()
    first = told["steps"][0]  # every episode is asked at the first step: its cost-to-go is its loss
    torch.testing.assert_close(first.double(), told["losses"].double())
    assert all(later.numel() <= earlier.numel() for earlier, later in itertools.pairwise(told["steps"]))
    assert min(float(s.min()) for s in told["steps"]) >= 0  # costs -||x||^2 <= 0 rewards: to-go >= 0
    with pytest.raises(ValueError, match="CEM has no per-step credit"):
        Trainer(FACTORY, make_solver("cem"), credit="to_go")
    with pytest.raises(ValueError, match="Invalid credit: 'reward'"):
        Trainer(FACTORY, make_solver("ovlr"), credit="reward")


def _told_in_one_update(offset: float, **options) -> tuple[dict, dict]:
    """What the solver is told in a Trainer's first update (losses, per-step losses, the episodes
    asked at each call) and the update's record."""
    solver, told = make_solver("ovlr"), {"asked": []}
    original_ask, original_tell = solver.ask, solver.tell

    def recording_ask(inputs, episode_ids=None):
        told["asked"].append(episode_ids.clone())
        return original_ask(inputs, episode_ids=episode_ids)

    def recording_tell(losses, step_losses=None):
        told["losses"], told["steps"] = losses.clone(), [s.clone() for s in step_losses]
        return original_tell(losses, step_losses=step_losses)

    solver.ask, solver.tell = recording_ask, recording_tell
    with Trainer(FACTORY, solver, eval_every=0, credit="to_go", reward_offset=offset, **options) as trainer:
        record = trainer.update()
    return told, record


@pytest.mark.parametrize("offset", [-1.0, 2.5])
def test_reward_offset_shifts_what_the_solver_is_told_and_not_the_logged_returns(offset):
    from bbopt.rollout.critic import StateValue

    plain, plain_record = _told_in_one_update(0.0)
    shifted, record = _told_in_one_update(offset)  # the same asks: the first update's actions do not see the offset
    assert all(torch.equal(a, b) for a, b in zip(shifted["asked"], plain["asked"], strict=True))
    lengths = torch.zeros(8, dtype=torch.float64)  # each episode is asked once per step until it ends
    for ids in plain["asked"]:
        lengths[ids] += 1
    assert lengths.min() < lengths.max()  # episodes of different lengths: the shift is per step, not per episode
    torch.testing.assert_close(shifted["losses"].double(), plain["losses"].double() - offset * lengths)
    for k, ids in enumerate(plain["asked"]):  # each step's cost-to-go: offset times the steps still to come
        torch.testing.assert_close(shifted["steps"][k].double(),
                                   plain["steps"][k].double() - offset * (lengths[ids] - k))  # fmt: skip
    assert record["return_mean"] == plain_record["return_mean"]  # the env's returns are logged
    # segments against a critic: every step's cost shifted, the episode totals told by N x T steps
    plain, plain_record = _told_in_one_update(0.0, critic=StateValue(gae_lambda=0.95, seed=1), horizon=8)
    shifted, record = _told_in_one_update(offset, critic=StateValue(gae_lambda=0.95, seed=1), horizon=8)
    torch.testing.assert_close(shifted["losses"].double(), plain["losses"].double() - offset * 8)
    assert not torch.allclose(shifted["steps"][0], plain["steps"][0])
    assert record["return_mean"] == plain_record["return_mean"]


@pytest.mark.parametrize("offset", [float("nan"), float("inf"), "1", True])
def test_reward_offset_refuses_what_is_not_a_finite_number(offset):
    from bbopt.rollout.runs import RunConfig

    with pytest.raises(ValueError, match="Invalid reward_offset"):
        Trainer(FACTORY, make_solver("ovlr"), reward_offset=offset)
    with pytest.raises(ValueError, match="Invalid reward_offset"):
        RunConfig(env="Hopper-v5", reward_offset=offset)


def test_every_run_config_field_is_a_train_option_and_a_resume_refuses_all_but_env_steps(tmp_path, capsys):
    """The `bbopt train` parser is built from RunConfig's fields: one option each, with the
    field's help, type and choices; a resume refuses every one of them but --env-steps."""
    import argparse
    from dataclasses import fields

    from bbopt import cli
    from bbopt.rollout.runs import RunConfig

    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    options = {action.dest: action for action in train._actions if action.help != argparse.SUPPRESS}
    for field in fields(RunConfig):
        action = options[field.name]
        assert action.option_strings == ["--" + field.name.replace("_", "-")] and action.default is None
        assert action.help == field.metadata["help"] and action.type is field.metadata["type"]
    args = train.parse_args(["--hidden", "", "--env-steps", "3e3", "--lr-schedule", "linear", "--lr-decay-after",
                             "1e3", "--critic-warmup", "5e2", "--out", "x"])  # fmt: skip
    assert args.hidden == [] and args.env_steps == 3000 and args.lr_schedule == "linear"
    assert args.lr_decay_after == 1000 and args.critic_warmup == 500
    adaptive = train.parse_args(["--lr-schedule", "kl", "--lr-kl", "0.01", "--out", "x"])
    assert (adaptive.lr_schedule, adaptive.lr_kl) == ("kl", 0.01)
    off = train.parse_args(["--lr-decay-after", "0", "--critic-warmup", "0", "--out", "x"])  # written out as off
    assert (off.lr_decay_after, off.critic_warmup) == (0, 0)
    for bad in ("-1", "1.5", "nan", "inf"):
        with pytest.raises(SystemExit):
            train.parse_args(["--critic-warmup", bad, "--out", "x"])
    capsys.readouterr()
    (tmp_path / "run").mkdir()
    code = cli.main(["train", "--resume", str(tmp_path / "run"), "--sigma", "0.5", "--seed", "1", "--env-steps", "9"])
    assert code == 2
    assert "--sigma, --seed cannot change" in capsys.readouterr().err


def test_train_defaults_follow_the_solver_and_the_credit_and_old_runs_keep_theirs(tmp_path):
    """OVLR and ES default to per-step credit with its recipe (critic, GAE 0.98, gamma 0.995,
    population 16, reuse 20, segments of 256 steps); CEM, param_es and --credit episode to the
    episode recipe; what is given explicitly stands, and the defaults bend to it (no GAE and no
    segments without a critic, no reuse with correlated noise). A config.json saved before an
    option existed loads with that option off."""
    from bbopt.rollout.runs import RunConfig, build_solver, load_config

    def recipe(**given):
        c = RunConfig(env="Pendulum-v1", **given)
        return c.credit, c.population, c.discount, c.critic, c.gae_lambda, c.reuse, c.horizon, c.correlation

    per_step = ("to_go", 16, 0.995, "state_value", 0.98, 20, 256, 0.5)
    per_episode = ("episode", 64, 1.0, "none", 1.0, 1, 0, 0.0)
    assert recipe() == recipe(solver="es") == per_step
    assert recipe(solver="cem") == recipe(solver="param_es") == recipe(credit="episode") == per_episode

    def policy(**given):
        c = RunConfig(env="Pendulum-v1", **given)
        return c.hidden, c.lr

    assert policy() == policy(solver="es") == ([256, 256], 0.001)  # per-step credit: a wider policy, a smaller step
    assert policy(credit="episode") == ([64, 64], 0.003) and policy(solver="es", credit="episode") == ([64, 64], 0.003)
    assert policy(solver="cem") == ([64, 64], 0.01) and policy(solver="param_es") == ([64, 64], 0.03)  # presets' steps
    assert policy(hidden=[32], lr=0.01) == ([32], 0.01) and policy(hidden=[]) == ([], 0.001)  # given: kept

    def schedule(**given):
        c = RunConfig(env="Pendulum-v1", **given)
        return c.lr_schedule, c.lr_kl

    assert schedule() == schedule(solver="es") == schedule(reuse=3) == ("kl", 0.02)  # with reuse: the adaptive step
    assert schedule(lr_kl=0.01) == ("kl", 0.01)
    assert schedule(correlation=0.8) == schedule(correlation=0.0) == ("kl", 0.02)  # reuse whatever the noise
    for without_reuse in ({"solver": "cem"}, {"solver": "param_es"}, {"credit": "episode"}, {"reuse": 1}):
        assert schedule(**without_reuse) == ("constant", None)
    assert schedule(lr_schedule="constant") == ("constant", None)
    with pytest.raises(ValueError, match="Invalid lr_decay_after: it delays the linear schedule"):
        RunConfig(env="Pendulum-v1", lr_decay_after=1000)  # the default kl does not take it
    assert recipe(critic="none") == ("to_go", 16, 0.995, "none", 1.0, 20, 0, 0.5)
    assert recipe(correlation=0.8)[-3:] == (20, 256, 0.8) and recipe(correlation=0.0, reuse=3)[-3:] == (3, 256, 0.0)
    assert recipe(population=64, discount=1.0, gae_lambda=1.0) == ("to_go", 64, 1.0, "state_value", 1.0, 20, 256, 0.5)
    assert recipe(horizon=0)[-2] == 0 and recipe(horizon=64)[-2] == 64
    assert recipe(credit="episode", correlation=0.5)[-1] == 0.5  # given: kept (ES/OVLR take it in episode mode)
    with pytest.raises(ValueError, match="Invalid horizon: segments of episodes need the critic"):
        RunConfig(env="Pendulum-v1", critic="none", horizon=64)
    with pytest.raises(ValueError, match="Invalid critic"):
        RunConfig(env="Pendulum-v1", solver="cem", critic="state_value")
    with pytest.raises(ValueError, match="GAE needs a critic"):
        RunConfig(env="Pendulum-v1", critic="none", gae_lambda=0.9)
    with pytest.raises(ValueError, match="split the passes of --reuse"):
        RunConfig(env="Pendulum-v1", reuse=1, minibatches=2)
    with pytest.raises(ValueError, match=r"under AR\(1\) noise \(correlation 0.5\) each step's likelihood ratio reads"):
        RunConfig(env="Pendulum-v1", correlation=0.5, reuse=3, minibatches=2)
    with pytest.raises(ValueError, match="--minibatches 1, or --correlation 0 for independent noise"):
        RunConfig(env="Pendulum-v1", minibatches=2)  # the default noise is AR(1)
    correlated = build_solver(RunConfig(env="Pendulum-v1", correlation=0.5, reuse=3), gymnasium.make("Pendulum-v1"))
    assert (correlated.correlation, correlated.reuse) == (0.5, 3)
    assert RunConfig(env="Pendulum-v1").clip == 0.2
    given = RunConfig(env="Pendulum-v1", clip=0.3, minibatches=2, correlation=0.0)
    solver = build_solver(given, gymnasium.make("Pendulum-v1"))
    assert (solver.clip, solver.minibatches) == (0.3, 2)
    assert solver.noise.scale(torch.zeros(1, 1)).item() == pytest.approx(given.sigma)
    assert RunConfig(env="Pendulum-v1").minibatches == 1
    assert RunConfig(env="Pendulum-v1").target_kl == 0.0 and solver.target_kl is None  # 0: every pass
    kl = build_solver(RunConfig(env="Pendulum-v1", target_kl=0.02), gymnasium.make("Pendulum-v1"))
    assert kl.target_kl == 0.02 and kl.reuse == 20
    with pytest.raises(ValueError, match="stops the later passes of --reuse"):
        RunConfig(env="Pendulum-v1", reuse=1, target_kl=0.02)
    assert RunConfig(env="Pendulum-v1").max_kl == 0.0 and solver.max_kl is None  # 0: no line search
    bounded = build_solver(RunConfig(env="Pendulum-v1", max_kl=0.05), gymnasium.make("Pendulum-v1"))
    assert bounded.max_kl == 0.05 and bounded.reuse == 20
    with pytest.raises(ValueError, match="bounds the update of --reuse's passes"):
        RunConfig(env="Pendulum-v1", reuse=1, max_kl=0.05)
    assert RunConfig(env="Pendulum-v1", lr_schedule="linear", lr_decay_after=1000).lr_decay_after == 1000
    with pytest.raises(ValueError, match="Invalid lr_decay_after: it delays the linear schedule"):
        RunConfig(env="Pendulum-v1", lr_decay_after=1000)
    assert RunConfig(env="Pendulum-v1", lr_schedule="kl").lr_kl == 0.02
    assert RunConfig(env="Pendulum-v1", lr_schedule="kl", lr_kl=0.01).lr_kl == 0.01
    for constant in ({"lr_schedule": "constant"}, {"credit": "episode"}):
        with pytest.raises(ValueError, match="Invalid lr_kl: it is the KL the adaptive step aims at"):
            RunConfig(env="Pendulum-v1", lr_kl=0.01, **constant)
    with pytest.raises(ValueError, match="Invalid lr_schedule: kl adapts the step to the KL the passes of --reuse"):
        RunConfig(env="Pendulum-v1", lr_schedule="kl", reuse=1)
    for bad in (0.0, -0.01, float("nan"), float("inf"), "0.01", True):
        with pytest.raises(ValueError, match="Invalid lr_kl"):
            RunConfig(env="Pendulum-v1", lr_schedule="kl", lr_kl=bad)
    assert RunConfig(env="Pendulum-v1", critic_warmup=1000).critic_warmup == 1000
    with pytest.raises(ValueError, match="Invalid critic_warmup: it trains the critic before the policy moves"):
        RunConfig(env="Pendulum-v1", critic="none", critic_warmup=1000)
    with pytest.raises(ValueError, match="Invalid critic_warmup: 2000 env steps of warm-up in a run of 2000"):
        RunConfig(env="Pendulum-v1", env_steps=2000, critic_warmup=2000)
    bad_numbers = [("gae_lambda", 1.5), ("gae_lambda", -0.1), ("gae_lambda", float("nan")), ("gae_lambda", True),
                   ("gae_lambda", "0.9"), ("discount", 0.0), ("discount", float("nan")),
                   ("correlation", 1.0), ("minibatches", 0), ("minibatches", 2.0), ("clip", 0.0),
                   ("clip", float("inf")), ("clip", True), ("target_kl", -0.01), ("target_kl", float("nan")),
                   ("target_kl", "0.01"), ("max_kl", -0.01), ("max_kl", float("nan")), ("max_kl", "0.01"),
                   ("lr_decay_after", -1), ("lr_decay_after", 1.5), ("critic_warmup", -1),
                   ("critic_warmup", 2.5), ("critic_warmup", True)]  # fmt: skip
    for name, bad in bad_numbers:
        with pytest.raises(ValueError, match=f"Invalid {name}"):
            RunConfig(env="Pendulum-v1", **{name: bad})
    old = asdict(RunConfig(env="Pendulum-v1", credit="episode"))  # a run saved before credit and the rest existed
    for name in ("credit", "discount", "critic", "gae_lambda", "correlation", "reuse", "clip", "minibatches",
                 "horizon", "target_kl", "max_kl", "lr_decay_after", "critic_warmup", "lr_schedule",
                 "lr_kl", "critic_hidden", "critic_epochs", "critic_target"):  # fmt: skip
        del old[name]
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = load_config(tmp_path)
    assert (loaded.clip, loaded.minibatches, loaded.sigma) == (0.2, 1, old["sigma"])
    assert (loaded.critic_hidden, loaded.critic_epochs, loaded.critic_target) == (None, None, None)  # no critic
    assert (loaded.credit, loaded.population, loaded.discount, loaded.critic, loaded.gae_lambda, loaded.reuse,
            loaded.horizon, loaded.correlation) == per_episode  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({**old, "credit": "to_go"}))  # to-go credit, before discount
    assert load_config(tmp_path).discount == 1.0 and load_config(tmp_path).critic == "none"
    before_segments = {**old, "credit": "to_go", "critic": "state_value", "gae_lambda": 0.98, "reuse": 20}
    (tmp_path / "config.json").write_text(json.dumps(before_segments))  # the per-step recipe before --horizon
    assert load_config(tmp_path).horizon == 0  # its runs resume with whole episodes
    assert load_config(tmp_path).target_kl == 0.0  # and every pass of reuse
    assert load_config(tmp_path).max_kl == 0.0  # and no line search
    assert load_config(tmp_path).lr_decay_after == 0  # and a linear schedule from the start
    assert load_config(tmp_path).critic_warmup == 0  # and no critic warm-up
    assert load_config(tmp_path).lr_schedule == "constant"  # and a constant step
    assert load_config(tmp_path).correlation == 0.0  # and independent noise (the default since AR(1) is 0.5)
    assert (load_config(tmp_path).critic_hidden, load_config(tmp_path).critic_epochs) == ([64, 64], 5)  # as it ran
    assert load_config(tmp_path).critic_target == "to_go"  # and fitted on the costs-to-go
    assert (load_config(tmp_path).hidden, load_config(tmp_path).lr) == ([64, 64], 0.003)  # saved in every config.json


def test_the_old_evaluator_spelling_still_works_for_one_release(tmp_path):
    """--evaluator is --pool's old name: parsed into pool with a FutureWarning; a run whose
    config.json holds "evaluator" still loads (warned), and both names at once are refused."""
    import json
    from dataclasses import asdict

    from bbopt import cli
    from bbopt.rollout.runs import RunConfig, load_config

    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    with pytest.warns(FutureWarning, match="--evaluator is deprecated: use --pool"):
        args = train.parse_args(["--evaluator", "serial", "--out", "x"])
    assert args.pool == "serial"
    assert "--evaluator" not in train.format_help()
    old = asdict(RunConfig(env="Pendulum-v1", pool="process"))
    old["evaluator"] = old.pop("pool")
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.warns(FutureWarning, match="'evaluator' is deprecated: use 'pool'"):
        assert load_config(tmp_path).pool == "process"
    (tmp_path / "config.json").write_text(json.dumps(old | {"pool": "serial"}))
    with pytest.raises(ValueError, match="both 'evaluator' and its new name 'pool'"):
        load_config(tmp_path)


def test_critic_widths_passes_and_target_are_run_options_that_reach_the_critic(tmp_path):
    """--critic-hidden, --critic-epochs and --critic-target shape the run's StateValue (saved in
    config.json, so a resume keeps them); the per-step recipe's defaults are 256,256, 10 and to_go;
    without a critic they are refused; a run with a critic saved before the options existed loads
    with StateValue's own of then (64-64, 5 passes, the costs-to-go)."""
    from bbopt.rollout.critic import CRITIC_EPOCHS, CRITIC_HIDDEN
    from bbopt.rollout.runs import RunConfig, load_config, make_trainer

    default = RunConfig(env="Pendulum-v1")
    assert (default.critic_hidden, default.critic_epochs, default.critic_target) == ([256, 256], 10, "to_go")
    assert (RunConfig(env="Pendulum-v1", critic="none").critic_hidden, default.critic_epochs) == (None, 10)
    assert RunConfig(env="Pendulum-v1", critic="none").critic_target is None
    before = asdict(default)
    del before["critic_hidden"], before["critic_epochs"], before["critic_target"]
    (tmp_path / "config.json").write_text(json.dumps(before))  # a run with a critic saved before 990a80b
    loaded = load_config(tmp_path)
    assert (loaded.critic_hidden, loaded.critic_epochs) == (list(CRITIC_HIDDEN), CRITIC_EPOCHS) == ([64, 64], 5)
    assert loaded.critic_target == "to_go"
    before["critic"], before["gae_lambda"], before["horizon"] = "none", 1.0, 0
    (tmp_path / "config.json").write_text(json.dumps(before))  # and one without a critic: nothing to shape
    loaded = load_config(tmp_path)
    assert (loaded.critic_hidden, loaded.critic_epochs, loaded.critic_target) == (None, None, None)
    wide = RunConfig(env="Pendulum-v1", critic_hidden=[32, 16, 8], critic_epochs=3, critic_target="lambda_return",
                     pool="serial", eval_every=0)  # fmt: skip
    with make_trainer(wide, tmp_path) as trainer:
        layers = [module for module in trainer.critic.network.modules() if isinstance(module, torch.nn.Linear)]
        widths = [layer.out_features for layer in layers]
        assert widths == [32, 16, 8, 1] and trainer.critic.epochs == 3 and trainer.critic.target == "lambda_return"
    (tmp_path / "config.json").write_text(json.dumps(asdict(wide)))  # as `bbopt train` writes it
    loaded = load_config(tmp_path)
    assert (loaded.critic_hidden, loaded.critic_epochs, loaded.critic_target) == ([32, 16, 8], 3, "lambda_return")
    refused = [({"critic_hidden": [64, 0]}, "Invalid critic_hidden width"),
               ({"critic_epochs": 0}, "Invalid critic_epochs"),
               ({"critic_epochs": 2.5}, "Invalid critic_epochs"),
               ({"critic_target": "td"}, r"Invalid critic_target: 'td' \(expected one of \['lambda_return', 'to_go'\]"),
               ({"critic_target": 1}, "Invalid critic_target: 1"),
               ({"critic": "none", "critic_hidden": [8]}, "Invalid critic_hidden: it shapes the critic"),
               ({"critic": "none", "critic_target": "to_go"}, "Invalid critic_target: it shapes the critic"),
               ({"solver": "cem", "critic_epochs": 3}, "Invalid critic_epochs: it shapes the critic")]  # fmt: skip
    for given, message in refused:
        with pytest.raises(ValueError, match=message):
            RunConfig(env="Pendulum-v1", **given)
