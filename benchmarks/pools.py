"""Env-pool throughput: env steps per second of the serial, process and Ray pools vs raw
single-process stepping of the same env, for a light and a heavy simulation step.

Also the whole OVLR training loop (population 64, policy in the loop) per pool at frame_skip 5.
HalfCheetah-v5 at its default frame_skip 5 (light: ~40 us per step here) and at frame_skip
50 (ten times the physics per step, standing in for a heavier simulator). Each pool runs
``--population`` episodes with random actions in lockstep, as the rollout driver does (one
pool call per step for all live episodes); raw stepping is one env in a plain loop.

    python -m benchmarks.pools               # about 3 minutes here
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from bbopt.rollout.pools import EnvFactory, make_pool
from benchmarks import _report


def raw_rate(factory: EnvFactory, steps: int) -> float:
    env = factory()
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, *env.action_space.shape)).astype(np.float32)
    began = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - began)
    env.close()
    return rate


def pool_rate(kind: str, factory: EnvFactory, population: int, steps_per_episode: int, workers: int) -> float:
    rng = np.random.default_rng(0)
    with make_pool(kind, factory, population, workers) as pool:
        pool.reset(np.arange(population))  # envs built and warm before timing
        pool.reset(np.arange(population))
        shape = factory().action_space.shape
        began, total = time.perf_counter(), 0
        live = np.ones(population, dtype=bool)
        for _ in range(steps_per_episode):
            ids = np.flatnonzero(live)
            if not ids.size:
                break
            result = pool.step(ids, rng.uniform(-1, 1, size=(ids.size, *shape)).astype(np.float32))
            total += ids.size
            live[ids[result.done]] = False
        return total / (time.perf_counter() - began)


def stop_ray() -> None:
    """Ray's own processes keep a share of the CPU while it is initialized: stop them after a
    Ray measurement so they do not slow the next one."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def trainer_rate(kind: str, env: str, workers: int, steps: int) -> float:
    """Env steps per second of a whole OVLR training loop (policy forward per step, one tell
    per update) with this pool; the first update (envs being built) is not timed."""
    from bbopt.rollout.runs import RunConfig, make_trainer

    # episode credit, population 64: the loop these figures have measured (the per-step defaults add a critic
    # fit and 20 optimizer steps per population, training costs that do not depend on the pool)
    config = RunConfig(env=env, env_steps=steps, eval_every=0, checkpoint_every=0, pool=kind, workers=workers,
                       credit="episode")  # fmt: skip
    with make_trainer(config, Path("/nonexistent")) as trainer:
        trainer.checkpoint = None
        trainer.update()
        began, start = time.perf_counter(), trainer.env_steps
        trainer.train(start + steps, progress=False)
        return (trainer.env_steps - start) / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300, help="lockstep steps per measurement")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pools", default="serial,process,ray")
    parser.add_argument("--frame-skips", default="5,50")
    parser.add_argument("--trainer-steps", type=int, default=192_000, help="0: skip the training-loop rows")
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "pools.json")
    args = parser.parse_args(argv)
    rows = []
    for frame_skip in map(int, args.frame_skips.split(",")):
        factory = EnvFactory(args.env, kwargs=(("frame_skip", frame_skip),))
        raw = raw_rate(factory, args.population * args.steps // 4)
        rows.append({"frame_skip": frame_skip, "pool": "raw (1 env, plain loop)", "workers": 1,
                     "steps_per_second": raw, "vs_raw": 1.0})  # fmt: skip
        for kind in args.pools.split(","):
            workers = 1 if kind == "serial" else args.workers
            rate = pool_rate(kind, factory, args.population, args.steps, workers)
            stop_ray()
            rows.append({"frame_skip": frame_skip, "pool": kind, "workers": workers, "steps_per_second": rate,
                         "vs_raw": rate / raw})  # fmt: skip
            print(f"frame_skip {frame_skip:>3} {kind:<8} x{workers}: {rate:>9,.0f} steps/s ({rate / raw:.2f}x raw)")
    for kind in args.pools.split(",") if args.trainer_steps else []:
        workers = 1 if kind == "serial" else args.workers
        rate = trainer_rate(kind, args.env, workers, args.trainer_steps)
        stop_ray()
        raw = rows[0]["steps_per_second"]
        rows.append({"frame_skip": 5, "pool": f"{kind} + OVLR training loop", "workers": workers,
                     "steps_per_second": rate, "vs_raw": rate / raw})  # fmt: skip
        print(f"training loop, {kind} x{workers}: {rate:,.0f} steps/s ({rate / raw:.2f}x raw)")
    _report.table(rows, [("frame_skip", "frame_skip", "d"), ("pool", "pool", "s"), ("workers", "workers", "d"),
                         ("steps_per_second", "steps/s", ",.0f"), ("vs_raw", "vs raw", ".2f")])  # fmt: skip
    config = {"env": args.env, "population": args.population, "steps": args.steps, "workers": args.workers}
    _report.write(args.out, config, rows)
    return rows


if __name__ == "__main__":
    gym.logger.min_level = 40
    main()
