"""Stable-Baselines3 PPO and sb3-contrib ARS as peers of `benchmarks.locomotion`, on its budget and evaluation.

Hyper-parameters are RL Baselines3 Zoo's tuned ones for each MuJoCo env (hyperparams/ppo.yml and
ars.yml, written for the -v3 envs and used unchanged on -v5): ``ppo`` takes the zoo's row of the env,
``ppo-default`` SB3's defaults (with the zoo's observation / reward normalization), ``ars`` the zoo's
ARS row (linear policy, observations normalized, alive bonus cancelled on Hopper and Walker2d). Each
run learns in chunks of ``eval_every`` steps and is evaluated between chunks (never mid-update: ARS
loads its candidates' weights into the policy while it evaluates them) with the deterministic action
and frozen normalization statistics, on the same episode seeds as the bbopt methods. With a
`benchmarks._run_state.RunState` a run keeps its state after each evaluation (`snapshot`) and a
rerun goes on from there as if never stopped (`restore`: the same returns to the bit).
"""

from __future__ import annotations

import numpy as np
import torch

from bbopt.seeding import TEST_EPISODES, VALIDATION_EPISODES
from benchmarks import _report

# Zoo rows (hyperparams/ppo.yml, "Tuned" MuJoCo section). Walker2d has no policy_kwargs there: SB3's default net.
_PPO_ZOO_NET = {"log_std_init": -2, "ortho_init": False, "activation_fn": "relu",
                "net_arch": {"pi": [256, 256], "vf": [256, 256]}}  # fmt: skip
PPO_ZOO = {
    "HalfCheetah": {"batch_size": 64, "n_steps": 512, "gamma": 0.98, "learning_rate": 2.0633e-05,
                    "ent_coef": 0.000401762, "clip_range": 0.1, "n_epochs": 20, "gae_lambda": 0.92,
                    "max_grad_norm": 0.8, "vf_coef": 0.58096, "policy_kwargs": _PPO_ZOO_NET},
    "Hopper": {"batch_size": 32, "n_steps": 512, "gamma": 0.999, "learning_rate": 9.80828e-05,
               "ent_coef": 0.00229519, "clip_range": 0.2, "n_epochs": 5, "gae_lambda": 0.99,
               "max_grad_norm": 0.7, "vf_coef": 0.835671, "policy_kwargs": _PPO_ZOO_NET},
    "Walker2d": {"batch_size": 32, "n_steps": 512, "gamma": 0.99, "learning_rate": 5.05041e-05,
                 "ent_coef": 0.000585045, "clip_range": 0.1, "n_epochs": 20, "gae_lambda": 0.95,
                 "max_grad_norm": 1, "vf_coef": 0.871923},
}  # fmt: skip
# Zoo rows (hyperparams/ars.yml, MuJoCo section): all LinearPolicy, norm_obs=True, norm_reward=False.
ARS_ZOO = {
    "HalfCheetah": {"learning_rate": 0.02, "delta_std": 0.03, "n_delta": 32, "n_top": 4, "alive_bonus_offset": 0},
    "Hopper": {"learning_rate": 0.01, "delta_std": 0.025, "n_delta": 8, "n_top": 4, "alive_bonus_offset": -1},
    "Walker2d": {"learning_rate": 0.03, "delta_std": 0.025, "n_delta": 40, "n_top": 30, "alive_bonus_offset": -1},
}
METHODS = ("ppo", "ppo-default", "ars")


def zoo_row(table: dict, env: str) -> dict:
    """The zoo's row for a gymnasium id such as 'Hopper-v5'; a clear error for an env the zoo has no row for."""
    family = env.split("-")[0]
    if family not in table:
        raise ValueError(f"no RL-zoo hyper-parameters for {env!r} here; known: {', '.join(sorted(table))}")
    return dict(table[family])


def zoo_settings(method: str, env: str) -> dict:
    """The zoo's row a peer method takes on ``env`` ({} for ``ppo-default``); a clear error for an
    env the zoo has no row for."""
    if method not in METHODS:
        raise ValueError(f"unknown peer method {method!r}; known: {', '.join(METHODS)}")
    return zoo_row(ARS_ZOO if method == "ars" else PPO_ZOO, env) if method != "ppo-default" else {}


def build(method: str, env: str, seed: int):
    """(model, VecNormalize, settings) for one peer method."""
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    settings = zoo_settings(method, env)
    venv = DummyVecEnv([lambda: gym.make(env)])
    if method == "ars":
        from sb3_contrib import ARS

        vec = VecNormalize(venv, norm_obs=True, norm_reward=False)
        model = ARS("LinearPolicy", vec, seed=seed, verbose=0, **settings)
        return model, vec, {**settings, "policy": "linear", "norm_obs": True, "norm_reward": False}
    # the zoo's `normalize: true`, discounting rewards with the algorithm's gamma as the zoo does
    vec = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=settings.get("gamma", 0.99))
    kwargs = dict(settings)
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = {**kwargs["policy_kwargs"], "activation_fn": torch.nn.ReLU}
    model = PPO("MlpPolicy", vec, seed=seed, verbose=0, device="cpu", **kwargs)
    return model, vec, {**settings, "norm_obs": True, "norm_reward": True, "zoo": method == "ppo"}


def evaluate(model, vec, env: str, episodes: int, first_seed: int) -> float:
    """Mean return of the deterministic policy over `episodes` episodes seeded first_seed, first_seed + 1, ..."""
    import gymnasium as gym

    eval_env, returns = gym.make(env), []
    for k in range(episodes):
        observation, _ = eval_env.reset(seed=first_seed + k)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(vec.normalize_obs(observation[None]), deterministic=True)
            observation, reward, terminated, truncated, _ = eval_env.step(action[0])
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    eval_env.close()
    return float(np.mean(returns))


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))


def _wrapper_flags(env) -> list[dict]:
    """Each gymnasium wrapper's own state (TimeLimit's steps, OrderEnforcing's and the env checker's flags)."""
    flags = []
    while hasattr(env, "env"):
        flags.append({name: getattr(env, name) for name in _WRAPPER_STATE if hasattr(env, name)})
        env = env.env
    return flags


# TimeLimit's steps, OrderEnforcing's flag, the env checker's flags (its checks run in the first steps only)
_WRAPPER_STATE = (
    "_elapsed_steps",
    "_has_reset",
    "checked_reset",
    "checked_step",
    "checked_data_reuse",
    "checked_render",
)
_MUJOCO_STATE = "mjSTATE_INTEGRATION"  # time, positions, velocities, controls, the solver's warm start


def snapshot(model, vec) -> dict:
    """Everything a peer run carries from one chunk of learning to the next, as tensors and plain
    containers: the policy (PPO's optimizer, ARS's weights), the counters, the observation in
    flight, torch's / numpy's / Python's global generators (PPO samples with them), VecNormalize's
    statistics and discounted returns, and each environment: MuJoCo's integration state, its
    generator and its wrappers' state."""
    import random

    import mujoco

    kind = getattr(mujoco.mjtState, _MUJOCO_STATE)
    envs = []
    for env in vec.venv.envs:
        model_, data = env.unwrapped.model, env.unwrapped.data
        physics = np.empty(mujoco.mj_stateSize(model_, kind))
        mujoco.mj_getState(model_, data, physics, kind)
        envs.append({"physics": _tensor(physics), "generator": env.unwrapped.np_random.bit_generator.state,
                     "wrappers": _wrapper_flags(env)})  # fmt: skip
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"policy": model.policy.state_dict(), "num_timesteps": int(model.num_timesteps),
             "n_updates": int(model._n_updates), "episode_num": int(model._episode_num),
             "torch_rng": torch.get_rng_state(), "numpy_rng": [name, _tensor(keys), position, has_gauss, cached],
             "python_rng": random.getstate(), "envs": envs, "reset_seeds": list(vec.venv._seeds),
             "obs_rms": [_tensor(vec.obs_rms.mean), _tensor(vec.obs_rms.var), float(vec.obs_rms.count)],
             "ret_rms": [_tensor(vec.ret_rms.mean), _tensor(vec.ret_rms.var), float(vec.ret_rms.count)],
             "returns": _tensor(vec.returns)}  # fmt: skip
    if getattr(model.policy, "optimizer", None) is not None:
        state["optimizer"] = model.policy.optimizer.state_dict()
    if getattr(model, "weights", None) is not None:  # ARS's current weights (the policy holds a candidate's mid-update)
        state["weights"] = model.weights.clone()
    if model._last_obs is not None:
        state["last_obs"] = _tensor(model._last_obs)
        state["last_episode_starts"] = _tensor(model._last_episode_starts)
    return state


def restore(model, vec, state: dict) -> None:
    """Put a `snapshot` back into a freshly `build`-t model of the same method, env and seed."""
    import random

    import mujoco

    kind = getattr(mujoco.mjtState, _MUJOCO_STATE)
    if len(state["envs"]) != len(vec.venv.envs):
        raise ValueError(f"the state holds {len(state['envs'])} environments, this run has {len(vec.venv.envs)}")
    model.policy.load_state_dict(state["policy"])
    if "optimizer" in state:
        model.policy.optimizer.load_state_dict(state["optimizer"])
    if "weights" in state:
        model.weights = state["weights"].clone()
    model.num_timesteps, model._n_updates, model._episode_num = (state["num_timesteps"], state["n_updates"],
                                                                 state["episode_num"])  # fmt: skip
    if "last_obs" in state:
        model._last_obs = state["last_obs"].numpy().copy()
        model._last_episode_starts = state["last_episode_starts"].numpy().copy()
    for env, kept in zip(vec.venv.envs, state["envs"], strict=True):
        mujoco.mj_setState(env.unwrapped.model, env.unwrapped.data, kept["physics"].numpy().copy(), kind)
        env.unwrapped.np_random.bit_generator.state = kept["generator"]
        layer = env
        for flags in kept["wrappers"]:
            for name, value in flags.items():
                setattr(layer, name, value)
            layer = layer.env
    vec.venv._seeds = list(state["reset_seeds"])
    for stats, (mean, var, count) in ((vec.obs_rms, state["obs_rms"]), (vec.ret_rms, state["ret_rms"])):
        stats.mean, stats.var, stats.count = mean.numpy().copy(), var.numpy().copy(), count
    vec.returns = state["returns"].numpy().copy()
    name, keys, position, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((name, keys.numpy().copy(), position, has_gauss, cached))
    random.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])


def run(method: str, env: str, seed: int, budget: int, eval_every: int, state=None) -> dict:
    """Train one peer for `budget` env steps; curve rows (env steps, return, train wall s, train CPU s).
    ``state`` (a `benchmarks._run_state.RunState`): go on from the run's last evaluation, if it
    saved one, and save there after each."""
    clock = _report.TrainingClock()
    model, vec, settings = build(method, env, seed)
    curve = []
    saved = state.load() if state is not None else None
    if saved is not None:
        restore(model, vec, saved["peer"])
        curve = [tuple(point) for point in saved["curve"]]
        clock.restore(saved["clock"])
    while model.num_timesteps < budget:
        with clock.running():
            model.learn(total_timesteps=min(eval_every, budget - model.num_timesteps),
                        reset_num_timesteps=model.num_timesteps == 0)  # fmt: skip
        curve.append((int(model.num_timesteps), evaluate(model, vec, env, 3, VALIDATION_EPISODES), *clock.read()))
        if state is not None:
            state.save(model.num_timesteps, peer=snapshot(model, vec), curve=curve, clock=clock.state())
    final = evaluate(model, vec, env, 10, TEST_EPISODES)
    return {"curve": curve, "final_return": final, "env_steps": int(model.num_timesteps), "train_seconds": clock.wall,
            "cpu_seconds": clock.cpu, "wall_seconds": clock.total(), "settings": settings}  # fmt: skip
