"""MuJoCo locomotion: bbopt OVLR / ES / CEM (output space) vs parameter-space ES vs EvoTorch
PGPE vs Stable-Baselines3 PPO and sb3-contrib ARS, at one env-step budget per run.

HalfCheetah-v5 and Hopper-v5, seeds 0-2. bbopt methods go through `bbopt.rollout.Trainer`
(serial pool, an MLP policy with observation normalization: 256-256 under `bbopt train`'s per-step
defaults, 64-64 under episode credit and the earlier variants; the "episodes" presets,
`bbopt.presets`, and `bbopt train`'s defaults or the spelled-out variants of `VARIANTS`); the
parameter-space baseline is `bbopt.baselines.ParameterES` in the same harness. EvoTorch PGPE uses its GymNE problem with
the settings of EvoTorch's own MuJoCo examples (examples/scripts/rl_clipup.py, the Walker2d
preset: linear policy, ClipUp, max speed 0.015, center lr 0.01125, radius 0.225, stdev lr
0.1, popsize 100, observation normalization, alive bonus removed for Hopper), in-process.
PPO (the RL zoo's tuned rows per env, or SB3's defaults: ``ppo-default``) and ARS (the zoo's rows)
are in `benchmarks._locomotion_peers`. Every run stops once it has used the budget; the noiseless
policy is evaluated every ``--eval-every`` steps on 3 episodes (not counted in the budget; reset
seeds from `bbopt.seeding.VALIDATION_EPISODES`), and finally on 10 (from `TEST_EPISODES`, those of
`bbopt evaluate`). Each run is one process with one torch thread; its training wall-clock and CPU
time (evaluations excluded) are recorded along the curve, so the table gives return per
CPU-minute and each method's return at the CPU time the cheapest method on that env used in all.
Learning curves (against env steps and against CPU minutes) and a final table go to one JSON + PNG.

    python -m benchmarks.locomotion --budget 2e6 --jobs 2        # about 45 minutes here
    python -m benchmarks.locomotion --budget 1e6 --envs HalfCheetah-v5,Hopper-v5,Walker2d-v5 \
        --methods ovlr,ovlr-togo,ppo,ars --jobs 2 --out benchmarks/results/mujoco_peers.json
    python -m benchmarks.locomotion --budget 3e6 --milestones 1e6 --methods ovlr --out 3m.json  # 1M and 3M
    python -m benchmarks.locomotion --rows 3m.json peers_1m.json --until 1e6 --out at_1m.json  # both at 1M
    python -m benchmarks.locomotion --budget 3e6 --envs Walker2d-v5 --methods ppo --state runs/ --out ppo.json
        # stopped (Ctrl-C, a kill, a session's end)? the same command goes on from each run's last evaluation
    python -m benchmarks.locomotion --budget 4e3 --envs Hopper-v5 --seeds 0 --population 8 --pgpe-popsize 4  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

import bbopt
from bbopt.arguments import step_count
from bbopt.rollout.driver import LR_KL
from bbopt.rollout.runs import BEFORE_THE_CRITIC_OPTIONS
from bbopt.seeding import TEST_EPISODES, VALIDATION_EPISODES
from benchmarks import _locomotion_peers, _report
from benchmarks._run_state import RunState

# A bbopt method is a solver with an episodes preset and `bbopt train`'s defaults for it (OVLR and ES: per-step credit
# with the critic, GAE, population 16, reuse 20, 256-step segments, AR(1) noise at 0.5, policy and critic 256-256:
# `bbopt.rollout.runs.RECIPES`), or a solver with a variant: the settings of earlier results, spelled out so that
# their names keep their meaning when the defaults move (the variants from before AR(1) noise became the default say
# correlation 0, those with a critic from before the wider one say its widths, those with per-step credit from before
# the wider policy say its widths and step). Then EvoTorch's PGPE and the SB3 peers.
_INDEPENDENT = {"correlation": 0.0}  # the noise of every default before AR(1) at 0.5
_CRITIC64 = BEFORE_THE_CRITIC_OPTIONS  # the critic of every default before 256-256 x 10 (64-64 x 5)
# the critic of the defaults since 79f8b6e, fitted on the costs-to-go
_CRITIC256 = {"critic_hidden": [256, 256], "critic_epochs": 10, "critic_target": "to_go"}
# the critic and policy of the defaults since 9ad1a4b, spelled out (the defaults may move on)
_POLICY256 = _CRITIC256 | {"hidden": [256, 256], "lr": 0.001}
_POLICY64 = {"hidden": [64, 64], "lr": 0.003}  # the policy and Adam's step of every per-step default before 256-256
_TO_GO = {"credit": "to_go", "population": 64, "discount": 1.0, "critic": "none", "reuse": 1, "sigma": 0.3,
          "horizon": 0} | _INDEPENDENT  # fmt: skip


def _peers_offset(env: str) -> float:
    """The alive-bonus offset of the RL zoo's ARS row for ``env`` (0 where the env has none)."""
    return float(_locomotion_peers.zoo_row(_locomotion_peers.ARS_ZOO, env)["alive_bonus_offset"])


VARIANTS = {
    "episode": {"credit": "episode"},  # the earlier default: episode credit, population 64
    "togo": _TO_GO | _POLICY64,
    "critic": _TO_GO | {"critic": "state_value", "gae_lambda": 1.0} | _CRITIC64 | _POLICY64,
    # the defaults before the KL-adaptive step (a9d4fc0 to 6f18e5f)
    "constant": {"lr_schedule": "constant"} | _INDEPENDENT | _CRITIC64 | _POLICY64,
    # 4,096 steps per update as 32 slots x 128 steps
    "slots32": {"population": 32, "horizon": 128, "lr_schedule": "constant"} | _INDEPENDENT | _CRITIC64 | _POLICY64,
    # the full step for 1M env steps, then linear to 0
    "hold1m": {"lr_schedule": "linear", "lr_decay_after": 1_000_000} | _INDEPENDENT | _CRITIC64 | _POLICY64,
    # hidden layers of 256, a smaller step
    "wide": {"hidden": (256, 256), "lr": 0.001, "lr_schedule": "constant"} | _INDEPENDENT | _CRITIC64,
    # the step adapted to each update's KL with independent noise: the defaults from b3912ec until AR(1) noise
    "kl": {"lr_schedule": "kl", "lr_kl": 0.02} | _INDEPENDENT | _CRITIC64 | _POLICY64,
    # the defaults of then with the reward offset the peers get on this env (the RL zoo's ARS row: -1 on Hopper and
    # Walker2d, 0 on HalfCheetah; EvoTorch's preset likewise): ARS's alive-bonus cancellation, in training only
    "offset": lambda env: {"reward_offset": _peers_offset(env)} | _INDEPENDENT | _CRITIC64 | _POLICY64,
    # the defaults of then with a wide start: sigma 0.6 falling to the defaults' 0.3 over the first 200k env steps
    "anneal": {"sigma": 0.6, "sigma_final": 0.3, "sigma_decay": 200_000} | _INDEPENDENT | _CRITIC64 | _POLICY64,
    # time-correlated noise: AR(1) at 0.8 over each segment's steps, the reuse passes on each step's factor
    # (the density of its action given the segment's earlier ones)
    "ar1": {"correlation": 0.8, "reuse": 20} | _CRITIC64 | _POLICY64,
    # the same at 0.5: the defaults of f33c2eb to 33c0ea9
    "ar1mild": {"correlation": 0.5, "reuse": 20} | _CRITIC64 | _POLICY64,
    # the defaults with each update's KL bounded at twice the adaptive step's target (a line search after the passes)
    "maxkl": {"max_kl": 2 * LR_KL} | _CRITIC64 | _POLICY64,
    # the defaults with PPO's discount and GAE(lambda) (gamma 0.99, lambda 0.95) in place of 0.995 and 0.98
    "ppogae": {"discount": 0.99, "gae_lambda": 0.95} | _CRITIC64 | _POLICY64,
    # PPO's GAE(lambda) alone, at the defaults' discount of then
    "gae95": {"discount": 0.995, "gae_lambda": 0.95} | _CRITIC64 | _POLICY64,
    # the defaults of then with a wider critic fitted longer: value network 256-256 (PPO's on HalfCheetah), 10
    # passes per fit: the defaults from 79f8b6e until the wider policy
    "critic256": _CRITIC256 | _POLICY64,
    # the same with a policy of 256-256 at Adam's step 0.001 (the zoo PPO's policy widths): the defaults since they
    # took it (2026-12-07)
    "policy256": _POLICY256,
    # the README's setting for HalfCheetah-like tasks (a reward for speed, no termination) on those defaults: the zoo
    # PPO's HalfCheetah discount and GAE(lambda) with independent noise
    "zoohc": {"discount": 0.98, "gae_lambda": 0.92} | _POLICY256 | _INDEPENDENT,
    # those defaults with the critic fitted on lambda-returns (each step's GAE advantage plus its value, PPO's target)
    "lambdaret": _POLICY256 | {"critic_target": "lambda_return"},
}
DEFAULT_METHODS = "ovlr,es,cem,param_es,pgpe"
METHODS = (*bbopt.presets.names("episodes"), "pgpe",
           *(f"{solver}-{variant}" for solver in ("ovlr", "es") for variant in VARIANTS),
           *_locomotion_peers.METHODS)  # fmt: skip


def bbopt_settings(method: str, env: str, population: int | None = None) -> dict:
    """The `RunConfig` options of a bbopt method on ``env``: its variant's (some depend on the env)
    and ``--population``."""
    settings = VARIANTS.get(method.partition("-")[2], {})
    return (settings(env) if callable(settings) else settings) | ({"population": population} if population else {})


def check_runs(envs: list[str], methods: list[str]) -> None:
    """Every (env, method) run looked at before any starts: an unknown env id, or an env a method
    has no settings for (the peers' zoo rows, the offset variant's), is refused here, not hours in
    when its run comes up (ValueError naming the run)."""
    import gymnasium as gym

    from bbopt.plugins import load_problems

    load_problems()
    for env in envs:
        if env not in gym.registry:
            raise ValueError(f"{env!r} is not a registered Gymnasium id (e.g. Hopper-v5)")
        for method in methods:
            try:
                if method in _locomotion_peers.METHODS:
                    _locomotion_peers.zoo_settings(method, env)
                elif method != "pgpe":
                    bbopt_settings(method, env)
            except ValueError as error:
                raise ValueError(f"{method} on {env}: {error}") from None


def run_bbopt(env: str, method: str, seed: int, budget: int, eval_every: int, population: int,
              milestones: tuple[int, ...] = (), state=None) -> dict:  # fmt: skip
    """One bbopt run; ``state`` (a `benchmarks._run_state.RunState`): go on from the run's last
    evaluation, if it saved one, and save there after each (`Trainer.state_dict`: the same run)."""
    from bbopt.rollout.runs import make_trainer

    config = bbopt_config(env, method, seed, budget, population)
    curve, clock, reached = [], _report.TrainingClock(), {}
    with make_trainer(config, Path("/nonexistent")) as trainer:
        trainer.checkpoint = None
        saved = state.load() if state is not None else None
        if saved is not None:
            trainer.load_state_dict(saved["trainer"])
            curve, reached = [tuple(point) for point in saved["curve"]], dict(saved["milestones"])
            clock.restore(saved["clock"])

        def evaluate_now(record: dict) -> None:
            evaluated = False
            if record["env_steps"] >= (len(curve) + 1) * eval_every or record["env_steps"] >= budget:
                with clock.paused():
                    curve.append((record["env_steps"], trainer.evaluate(3, seed=VALIDATION_EPISODES), *clock.read()))
                evaluated = True
            for milestone in milestones:  # evaluated as at the end: 10 test episodes
                if record["env_steps"] >= milestone and str(milestone) not in reached:
                    with clock.paused():
                        reached[str(milestone)] = (record["env_steps"], trainer.evaluate(10, seed=TEST_EPISODES),
                                                   *clock.read())  # fmt: skip
                    evaluated = True
            if evaluated and state is not None:
                with clock.paused():
                    state.save(trainer.env_steps, trainer=trainer.state_dict(), curve=curve, milestones=reached,
                               clock=clock.state())  # fmt: skip

        with clock.running():
            trainer.train(budget, progress=False, callback=evaluate_now)
        final = trainer.evaluate(10, seed=TEST_EPISODES)
    return {"curve": curve, "final_return": final, "env_steps": trainer.env_steps, "train_seconds": clock.wall,
            "milestones": reached, "cpu_seconds": clock.cpu, "wall_seconds": clock.total(),
            "settings": recorded_settings(config)}  # fmt: skip


def bbopt_config(env: str, method: str, seed: int, budget: int, population: int | None = None):
    """The `RunConfig` of a bbopt method's run (a serial pool, the benchmark's own evaluations)."""
    from bbopt.rollout.runs import RunConfig

    return RunConfig(env=env, solver=method.partition("-")[0], env_steps=budget, eval_every=0, pool="serial",
                     checkpoint_every=0, seed=seed, **bbopt_settings(method, env, population))  # fmt: skip


def recorded_settings(config) -> dict:
    """The settings a bbopt run's row records."""
    return {"sigma": config.sigma, "lr": config.lr, "lr_schedule": config.lr_schedule,
            "lr_decay_after": config.lr_decay_after, "lr_kl": config.lr_kl,
            "credit": config.credit, "critic": config.critic, "discount": config.discount,
            "gae_lambda": config.gae_lambda, "reuse": config.reuse, "clip": config.clip,
            "minibatches": config.minibatches, "population": config.population, "hidden": config.hidden,
            "horizon": config.horizon, "reward_offset": config.reward_offset, "sigma_final": config.sigma_final,
            "sigma_decay": config.sigma_decay, "correlation": config.correlation, "max_kl": config.max_kl,
            "critic_hidden": config.critic_hidden, "critic_epochs": config.critic_epochs,
            "critic_target": config.critic_target}  # fmt: skip


def run_pgpe(env: str, seed: int, budget: int, eval_every: int, popsize: int = 100) -> dict:
    import gymnasium as gym
    from evotorch.algorithms import PGPE
    from evotorch.neuroevolution import GymNE

    torch.manual_seed(seed)  # EvoTorch draws from torch's global RNG (this process only); GymNE takes no seed
    alive_bonus = 1.0 if env.startswith("Hopper") else None
    problem = GymNE(env=env, network="Linear(obs_length, act_length)", observation_normalization=True,
                    decrease_rewards_by=alive_bonus, num_actors=0)  # fmt: skip
    max_speed = 0.015
    # EvoTorch's Walker2d preset: popsize 100, at least 0.75 * 1000 * popsize interactions per
    # generation (the population grows until then), at most 8 x popsize
    searcher = PGPE(problem, popsize=popsize, center_learning_rate=0.75 * max_speed, stdev_learning_rate=0.1,
                    optimizer="clipup", optimizer_config={"max_speed": max_speed, "momentum": 0.9},
                    radius_init=15 * max_speed, num_interactions=750 * popsize, popsize_max=8 * popsize)  # fmt: skip
    eval_env = gym.make(env)

    def evaluate(episodes: int, first_seed: int) -> float:
        policy = problem.to_policy(searcher.status["center"])  # normalizes observations and clips itself
        returns = []
        for k in range(episodes):
            observation, _ = eval_env.reset(seed=first_seed + k)
            total, done = 0.0, False
            with torch.no_grad():
                while not done:
                    action = policy(torch.as_tensor(observation, dtype=torch.float32)).numpy()
                    observation, reward, terminated, truncated, _ = eval_env.step(action)
                    total += float(reward)
                    done = terminated or truncated
            returns.append(total)
        return float(np.mean(returns))

    curve, next_eval, clock = [], eval_every, _report.TrainingClock()
    used = 0
    while used < budget:
        with clock.running():
            searcher.step()
        used = int(searcher.status["total_interaction_count"])
        if used >= next_eval or used >= budget:
            curve.append((used, evaluate(3, VALIDATION_EPISODES), *clock.read()))
            next_eval += eval_every
    return {"curve": curve, "final_return": evaluate(10, TEST_EPISODES), "env_steps": used,
            "train_seconds": clock.wall, "cpu_seconds": clock.cpu, "wall_seconds": clock.total(),
            "settings": {"popsize": popsize, "popsize_max": 8 * popsize, "num_interactions": 750 * popsize,
                         "max_speed": max_speed,
                         "center_learning_rate": 0.75 * max_speed, "radius_init": 15 * max_speed,
                         "stdev_learning_rate": 0.1, "network": "linear",
                         "decrease_rewards_by": alive_bonus}}  # fmt: skip


def run_one(job: tuple) -> dict:
    env, method, seed, budget, eval_every, population, pgpe_popsize, milestones, state_root = job
    torch.set_num_threads(1)
    began = time.perf_counter()
    with contextlib.ExitStack() as stack:
        state = None
        if state_root is not None:
            identity = {"env": env, "method": method, "seed": seed, "budget": budget, "eval_every": eval_every,
                        "population": population, "milestones": list(milestones)}  # fmt: skip
            name = f"{env}-{method}-seed{seed}"
            state = stack.enter_context(RunState(state_root, name, identity, _report.STARTED_AT))
            row = state.finished_row()
            if row is not None:
                print(f"{env:<15} {method:<5} seed {seed}: ended before, kept in {state.row_path}", flush=True)
                return row
        if method == "pgpe":
            result = run_pgpe(env, seed, budget, eval_every, pgpe_popsize)
        elif method in _locomotion_peers.METHODS:
            result = _locomotion_peers.run(method, env, seed, budget, eval_every, state)
        else:
            result = run_bbopt(env, method, seed, budget, eval_every, population, milestones, state)
        row = {"env": env, "method": method, "seed": seed, "commit": _report.STARTED_AT, **result}
        if state is not None:
            row = state.finish(row)
    resumed = f", resumed at {', '.join(f'{n:,}' for n in row['resumed_at'])}" if "resumed_at" in row else ""
    print(f"{env:<15} {method:<5} seed {seed}: final {row['final_return']:9.1f} after {row['env_steps']:,} steps "
          f"({time.perf_counter() - began:.0f} s{resumed})", flush=True)  # fmt: skip
    return row


def return_at_cpu(curve: list, cpu_seconds: float) -> float:
    """The return of the last policy a run had evaluated once it had used `cpu_seconds` of training CPU
    time (NaN before its first evaluation): what it would hand over if stopped then."""
    seen = [point[1] for point in curve if point[3] <= cpu_seconds]
    return seen[-1] if seen else float("nan")


def milestone_spreads(rows: list[dict]) -> dict:
    """``return_at_<steps>_mean`` / ``_std`` ... for each milestone every one of these runs reached."""
    common = set.intersection(*(set(r.get("milestones", {})) for r in rows))
    spreads = {}
    for milestone in sorted(common, key=int):
        spreads |= _report.spread(f"return_at_{milestone}", [r["milestones"][milestone][1] for r in rows])
    return spreads


def summarize(rows: list[dict], envs: list[str], methods: list[str]) -> list[dict]:
    """Per env and method: final-return spread, mean wall / CPU seconds, steps/s, final return per
    CPU-minute, and the return each method had reached at the CPU time the cheapest method on that env
    used for its whole run ("at equal CPU")."""
    summary = []
    for env in envs:
        here = [r for r in rows if r["env"] == env]
        present = [m for m in methods if any(r["method"] == m for r in here)]
        cheapest = min(np.mean([r["cpu_seconds"] for r in here if r["method"] == m]) for m in present)
        for method in present:
            mine = [r for r in here if r["method"] == method]
            summary.append({"env": env, "method": method,
                            **_report.spread("final_return", [r["final_return"] for r in mine]),
                            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in mine])),
                            "cpu_seconds_mean": float(np.mean([r["cpu_seconds"] for r in mine])),
                            "env_steps_per_second": float(np.mean([r["env_steps"] / r["train_seconds"]
                                                                   for r in mine])),
                            "return_per_cpu_minute": float(np.mean([r["final_return"] / (r["cpu_seconds"] / 60)
                                                                    for r in mine])),
                            **milestone_spreads(mine),
                            "equal_cpu_seconds": float(cheapest),
                            "return_at_equal_cpu": float(np.mean([return_at_cpu(r["curve"], cheapest)
                                                                  for r in mine]))})  # fmt: skip
    return summary


def plot(rows: list[dict], path: Path) -> None:
    """Top row: return vs env steps; bottom row: return vs training CPU minutes (mean, min-max over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    envs = list(dict.fromkeys(r["env"] for r in rows))
    figure, axes = plt.subplots(2, len(envs), figsize=(5.5 * len(envs), 7.4), squeeze=False)
    for column, env in enumerate(envs):
        for index, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
            mine = [r for r in rows if r["env"] == env and r["method"] == method and r["curve"]]
            if not mine:
                continue
            for axis, x_of, scale in ((axes[0][column], 0, 1.0), (axes[1][column], 3, 1 / 60)):
                # only where every seed has been evaluated: no flat extrapolation before a first evaluation
                first, last = max(r["curve"][0][x_of] for r in mine), min(r["curve"][-1][x_of] for r in mine)
                grid = np.linspace(first * scale, last * scale, 40)
                curves = [np.interp(grid, [p[x_of] * scale for p in r["curve"]], [p[1] for p in r["curve"]])
                          for r in mine]  # fmt: skip
                axis.plot(grid, np.mean(curves, axis=0), color=f"C{index}", label=method)
                axis.fill_between(grid, np.min(curves, axis=0), np.max(curves, axis=0), color=f"C{index}", alpha=0.15)
        axes[0][column].set_title(env)
        axes[0][column].set_xlabel("env steps")
        axes[1][column].set_xlabel("training CPU minutes")
        axes[1][column].set_xscale("log")
        # plain numbers on the log axis, and no labels on minor ticks (they overlapped within a decade)
        axes[1][column].xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        axes[1][column].xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes[1][column].xaxis.set_minor_formatter(ticker.NullFormatter())
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("noiseless return (mean, min-max over seeds)")
    axes[1][0].set_ylabel("noiseless return")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="HalfCheetah-v5,Hopper-v5")
    parser.add_argument("--methods", default=None, help=f"from {','.join(METHODS)} (default {DEFAULT_METHODS}); with "
                        "--rows: keep only these methods' runs, in this order (default: every run)")  # fmt: skip
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=step_count, default=2_000_000, help="env steps per run")
    parser.add_argument("--eval-every", type=step_count, default=None, help="env steps between evaluations")
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="episodes per update of every bbopt method (default: each method's own)",
    )
    parser.add_argument("--milestones", type=step_count, nargs="+", default=[],
                        help="env steps below --budget at which each bbopt run is also evaluated as at its end (10 "
                             "test episodes): e.g. --budget 3e6 --milestones 1e6 gives the 1M and 3M returns of one "
                             "run (with a constant lr the first 1M steps are those of a 1M run)")  # fmt: skip
    parser.add_argument("--pgpe-popsize", type=int, default=100, help="EvoTorch's preset: 100")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "mujoco.json")
    parser.add_argument("--state", type=Path, default=None,
                        help="keep each run's state in this directory after each evaluation: the same command run "
                             "again goes on from there (a run stopped by Ctrl-C, a kill or a session's end), and "
                             "reports the runs that had ended without running them again; not for pgpe")  # fmt: skip
    parser.add_argument("--rows", type=Path, nargs="+", help="run nothing: report the runs kept in these files "
                        "(an interrupted run's <out>.partial.jsonl, or earlier JSON results), merged")  # fmt: skip
    parser.add_argument("--until", type=step_count, default=None,
                        help="with --rows: each run as it stood at this many env steps, from its milestone there "
                             "(e.g. 1e6: the 1M returns and curves of --budget 3e6 --milestones 1e6 runs beside 1M "
                             "runs)")  # fmt: skip
    args = parser.parse_args(argv)
    eval_every = args.eval_every or max(args.budget // 20, 1)
    if any(not 0 < milestone < args.budget for milestone in args.milestones):
        parser.error(f"--milestones must lie in (0, --budget {args.budget}): got {args.milestones}")
    if args.until is not None and not args.rows:
        parser.error("--until reports runs kept in files: add --rows")
    if args.state is not None and args.rows:
        parser.error("--state keeps runs that run here; --rows runs nothing")
    if args.rows:
        _report.refuse_overwriting_inputs(args.out, args.rows)
        chosen = args.methods.split(",") if args.methods else None
        rows = read_rows(args.rows, methods=chosen)
        if args.until is not None:
            rows = [as_it_stood(row, args.until) for row in rows]
        envs, methods = list(dict.fromkeys(r["env"] for r in rows)), list(dict.fromkeys(r["method"] for r in rows))
        commits = sorted({r.get("commit", "not recorded") for r in rows})
        config = {"rows_from": [str(path) for path in args.rows], "commits": commits}
        if chosen:
            config["methods"] = chosen
        if args.until is not None:
            config["until"] = args.until
    else:
        envs, methods = args.envs.split(","), (args.methods or DEFAULT_METHODS).split(",")
        unknown = [method for method in methods if method not in METHODS]
        if unknown:
            parser.error(f"unknown methods {unknown} (expected some of {', '.join(METHODS)})")
        try:
            check_runs(envs, methods)
        except ValueError as error:
            parser.error(str(error))
        if args.state is not None and "pgpe" in methods:
            parser.error("--state cannot resume pgpe (EvoTorch's searcher keeps no state here): run it without --state")
        rows = run_all(envs, methods, [int(s) for s in args.seeds.split(",")], args, eval_every)
        config = {"budget": args.budget, "eval_every": eval_every, "population": args.population,
                  "pgpe_popsize": args.pgpe_popsize, "jobs": args.jobs, "milestones": args.milestones,
                  "seeds": args.seeds, "envs": args.envs, "methods": args.methods}  # fmt: skip
    summary = summarize(rows, envs, methods)
    reached = sorted({milestone for r in rows for milestone in r.get("milestones", {})}, key=int)
    print()
    _report.table(summary, [("env", "env", "s"), ("method", "method", "s"), ("final_return_mean", "final", ".1f"),
                            ("final_return_std", "std", ".1f"), ("final_return_min", "min", ".1f"),
                            ("final_return_max", "max", ".1f"), ("train_seconds_mean", "wall s", ".0f"),
                            ("cpu_seconds_mean", "CPU s", ".0f"), ("env_steps_per_second", "steps/s", ",.0f"),
                            ("return_per_cpu_minute", "ret/CPU-min", ".1f"),
                            ("return_at_equal_cpu", "at equal CPU", ".1f"),
                            *((f"return_at_{m}_mean", f"at {int(m):,}", ".1f") for m in reached)])  # fmt: skip
    _report.write(args.out, config, rows, {"table": summary})
    plot(rows, args.out.with_suffix(".png"))
    if not args.rows:
        _report.finished(args.out)
    return rows


def _exit_with_the_benchmark() -> None:
    """A pool worker's initializer: a thread that ends the worker once the benchmark's process is
    gone. A benchmark that is killed (SIGTERM, SIGKILL, the OOM killer) never terminates its pool,
    and a worker in a run would go on to its end, for hours at 3M steps, with nobody to keep what
    it returns. The parent's sentinel (forkserver: the write end of the pipe the worker was started
    through, which the parent holds open) becomes ready when the parent exits."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        mp.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-the-benchmark", daemon=True).start()


def worker_pool(jobs: int):
    """A pool of ``jobs`` processes for the runs (forkserver: no torch or MuJoCo state inherited)
    whose workers exit with the benchmark (`_exit_with_the_benchmark`)."""
    return mp.get_context("forkserver").Pool(jobs, initializer=_exit_with_the_benchmark)


def run_all(envs: list[str], methods: list[str], seeds: list[int], args, eval_every: int) -> list[dict]:
    """Every (seed, env, method) run, seed-major (a benchmark stopped early has whole seeds of every
    env and method); each finished run is appended to <out>.partial.jsonl as it ends, in any order."""
    jobs = [(env, method, seed, args.budget, eval_every, args.population, args.pgpe_popsize, tuple(args.milestones),
             args.state) for seed in seeds for env in envs for method in methods]  # fmt: skip
    rows = []
    # with --state each run keeps its own row when it ends (and a rerun reports it): no partial file
    keeping = contextlib.nullcontext(lambda row: None) if args.state else _report.kept_rows(args.out)
    with keeping as keep, contextlib.ExitStack() as stack:
        if args.jobs > 1:
            pool = stack.enter_context(worker_pool(args.jobs))
            finished = pool.imap_unordered(run_one, jobs, chunksize=1)
        else:
            finished = map(run_one, jobs)
        for row in finished:
            rows.append(row)
            keep(row)
    order = {(env, method, seed): k for k, (env, method, seed, *_) in enumerate(jobs)}
    return sorted(rows, key=lambda r: order[r["env"], r["method"], r["seed"]])


ROW_FIELDS = {"env", "method", "seed", "curve", "final_return", "env_steps", "train_seconds", "cpu_seconds"}


RUN_OVER = 0.1  # a run's last update (a population, an ARS or PGPE generation) takes it past its budget:
# by at most 3.5% in benchmarks/results (PGPE at 2M on Hopper), 2.4% at 1M (ARS on HalfCheetah)


def as_it_stood(row: dict, steps: int) -> dict:
    """``row`` as it stood at ``steps`` env steps: its milestone there (10 test episodes, as at an end)
    as its final return, env steps and training times, its curve and milestones up to then. A run
    without that milestone that ended at ``steps`` (its last update may run over by `RUN_OVER`) is
    kept whole; one that ended before, or went on, is refused."""
    name, milestones = f"{row['method']} on {row['env']}, seed {row['seed']},", row.get("milestones", {})
    if str(steps) not in milestones:
        if steps <= row["env_steps"] <= steps * (1 + RUN_OVER):
            return row
        if row["env_steps"] < steps:
            raise ValueError(f"{name} ended at {row['env_steps']:,} env steps, before --until {steps:,}")
        raise ValueError(f"{name} ran to {row['env_steps']:,} env steps with no milestone at {steps:,} (its "
                         f"milestones: {', '.join(milestones) or 'none'})")  # fmt: skip
    at, value, wall, cpu = milestones[str(steps)]
    return row | {"final_return": value, "env_steps": at, "train_seconds": wall, "cpu_seconds": cpu,
                  "curve": [point for point in row["curve"] if point[0] <= at],
                  "milestones": {m: kept for m, kept in milestones.items() if int(m) < steps}}  # fmt: skip


def _milestones_are_well_formed(milestones) -> bool:
    return isinstance(milestones, dict) and all(
        isinstance(m, str) and m.isascii() and m.isdigit() and isinstance(kept, list) and len(kept) == 4
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in kept)
        for m, kept in milestones.items())  # fmt: skip


def read_rows(paths: list[Path], methods: list[str] | None = None) -> list[dict]:
    """Runs from JSON lines (a partial file) or benchmark JSON files; a run seen twice is refused.
    ``methods``: keep only those methods' runs, in that order (a method no file holds is refused)."""
    rows = []
    for path in paths:
        try:
            text = path.read_text()
            found = json.loads(text)["rows"] if path.suffix == ".json" else _report.json_lines(text, path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a benchmark JSON or JSON-lines file of runs ({type(error).__name__}: "
                             f"{error})") from None  # fmt: skip
        if not isinstance(found, list):
            raise ValueError(f"{path}: its rows are not a list of runs")
        for k, row in enumerate(found):
            missing = sorted(ROW_FIELDS - set(row)) if isinstance(row, dict) else sorted(ROW_FIELDS)
            curve = row.get("curve") if isinstance(row, dict) else None
            if missing or not isinstance(curve, list) or not all(isinstance(p, list) and len(p) == 4 for p in curve):
                raise ValueError(f"{path}: run {k} is not a run of this benchmark (missing {missing}, or curve points "
                                 "without CPU times: it predates them)")  # fmt: skip
            if not _milestones_are_well_formed(row.get("milestones", {})):
                raise ValueError(f"{path}: run {k}'s milestones are not {{env steps: [env steps, return, wall s, CPU "
                                 f"s]}}: {str(row['milestones'])[:200]}")  # fmt: skip
        rows += found
    if methods is not None:
        held = list(dict.fromkeys(r["method"] for r in rows))
        for method in methods:
            if method not in held:
                raise ValueError(f"no runs of {method!r} in {', '.join(map(str, paths))} (they hold {', '.join(held)})")
        rows = sorted((r for r in rows if r["method"] in methods), key=lambda r: methods.index(r["method"]))
    keys = [(r["env"], r["method"], r["seed"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"the same run appears twice in {', '.join(map(str, paths))}: "
                         f"{sorted(k for k in keys if keys.count(k) > 1)[0]}")  # fmt: skip
    if not rows:
        raise ValueError(f"no runs in {', '.join(map(str, paths))}")
    return rows


if __name__ == "__main__":
    main()
