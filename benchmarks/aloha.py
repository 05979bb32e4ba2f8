"""ALOHA bimanual tasks: success rates of the scripted policy, behavior cloning by backprop and by
OVLR, and each after fine-tuning through the simulator; wall time of every phase.

Per task (transfer-cube, insertion):
  scripted          the DLS-IK scripted policy on the demo seeds 0..demos-1 (its demo yield)
                    and on the evaluation seeds
  bc-bp / bc-ovlr   a ChunkMLP (chunk 10, 512x512) fit to the successful demos by backprop or by
                    OVLR on the same chunk L1 as a black box: same data order, epochs, Adam
  +ft-ovlr          each BC policy fine-tuned through the simulator with OVLR in episode mode
                    (loss = -(highest stage + 0.5 progress), see bbopt.envs.aloha.finetune)
  low-data          BC-BP from the first ``--low-data`` demos only (a policy that leaves room),
                    then fine-tuned with each of OVLR, ES and CEM from the same start
Success = stage 4 within 300 steps, over ``--eval-episodes`` placements from seed 1,000,000
(never a demo seed). Fine-tuning placements come from their own seed stream.

    python benchmarks/aloha.py                         # full protocol (about 30 minutes here)
    python benchmarks/aloha.py --demos 4 --low-data 2 --epochs 1 --eval-episodes 2 \\
        --finetune-steps 600 --population 2            # smoke
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from bbopt.envs.aloha.demos import Demos, generate_demos
from bbopt.envs.aloha.env import AlohaStateEnv
from bbopt.envs.aloha.evaluation import ChunkAgent, evaluate_success
from bbopt.envs.aloha.finetune import finetune
from bbopt.envs.aloha.imitation import behavior_clone
from bbopt.envs.aloha.scripted import SCRIPTED

try:
    from benchmarks import _report
except ImportError:  # run as a script
    import _report

TASKS = ("transfer_cube", "insertion")
LOW_DATA_METHODS = ("ovlr", "es", "cem")


def first_episodes(demos: Demos, count: int) -> Demos:
    steps = int(demos.episode_lengths[:count].sum())
    return Demos(demos.task, demos.observations[:steps], demos.actions[:steps], demos.episode_lengths[:count],
                 demos.placement_seeds[:count], attempted=count, noise=demos.noise)  # fmt: skip


def evaluated(task: str, agent, args, **row) -> dict:
    result = evaluate_success(task, agent, args.eval_episodes, progress=args.progress)
    row |= {"task": task, "success_rate": result["success_rate"], "mean_stage": result["mean_stage"],
            "eval_seconds": result["seconds"]}  # fmt: skip
    print(f"  {row['policy']:<26} success {row['success_rate']:6.1%}  stage {row['mean_stage']:.2f}  "
          f"train {row.get('train_seconds', 0.0):7.1f} s")  # fmt: skip
    return row


def bc_row(task: str, demos: Demos, method: str, args, label: str):
    began = time.perf_counter()
    policy, history = behavior_clone(demos, method, epochs=args.epochs, sigma=args.bc_sigma, seed=args.seed,
                                     progress=args.progress)  # fmt: skip
    row = evaluated(task, ChunkAgent(policy), args, policy=label, demos=demos.episodes,
                    train_seconds=time.perf_counter() - began, final_chunk_l1=history[-1]["train_loss"])  # fmt: skip
    return policy, row


def finetune_row(task: str, start, method: str, args, label: str, start_row: dict) -> dict:
    began = time.perf_counter()
    policy, history = finetune(copy.deepcopy(start), task, method=method, env_steps=args.finetune_steps,
                               episodes=args.population, sigma=args.ft_sigma, lr=args.ft_lr, seed=args.seed,
                               progress=args.progress)  # fmt: skip
    return evaluated(task, ChunkAgent(policy), args, policy=label, demos=start_row["demos"],
                     train_seconds=time.perf_counter() - began, env_steps=history[-1]["env_steps"],
                     start_success_rate=start_row["success_rate"],
                     curve=[[h["env_steps"], round(h["return_mean"], 3)] for h in history])  # fmt: skip


def run_task(task: str, args) -> list[dict]:
    print(f"\n=== {task}: {args.demos} scripted demos, {args.eval_episodes} evaluation episodes")
    rows = []
    demos = generate_demos(task, args.demos, progress=args.progress)
    rows.append({"task": task, "policy": "scripted (demo seeds)", "demos": demos.episodes,
                 "success_rate": demos.success_rate, "train_seconds": 0.0, "demo_seconds": demos.seconds})  # fmt: skip
    print(f"  scripted on seeds 0..{args.demos - 1}: {demos.episodes}/{demos.attempted}, {demos.seconds:.1f} s")
    scripted = SCRIPTED[task](AlohaStateEnv(task).physics.model.ptr)
    rows.append(evaluated(task, scripted, args, policy="scripted", demos=0))
    for method in ("bp", "ovlr"):
        policy, row = bc_row(task, demos, method, args, f"bc-{method}")
        rows.append(row)
        rows.append(finetune_row(task, policy, "ovlr", args, f"bc-{method}+ft-ovlr", row))
    if args.low_data:
        few = first_episodes(demos, args.low_data)
        policy, row = bc_row(task, few, "bp", args, f"bc-bp ({args.low_data} demos)")
        rows.append(row)
        for method in LOW_DATA_METHODS:
            rows.append(finetune_row(task, policy, method, args, f"bc-bp ({args.low_data} demos)+ft-{method}", row))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in rows if r["task"] == task and r["policy"] != "scripted (demo seeds)"]
        labels = [r["policy"] for r in mine]
        ax.barh(np.arange(len(mine)), [100 * r["success_rate"] for r in mine], color="tab:blue")
        ax.set_yticks(np.arange(len(mine)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("success (%)")
        ax.set_title(task)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--demos", type=int, default=100)
    parser.add_argument("--low-data", type=int, default=10, help="demos for the low-data start (0: skip)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--bc-sigma", type=float, default=0.01)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--finetune-steps", type=int, default=300_000)
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--ft-sigma", type=float, default=0.02)
    parser.add_argument("--ft-lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "aloha.json")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for task in args.tasks.split(","):
        rows += run_task(task, args)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["eval_seeds"] = f"1000000..{10**6 + args.eval_episodes - 1}"
    summary = {f"{r['task']}/{r['policy']}": r["success_rate"] for r in rows}
    _report.write(args.out, config, rows, summary)
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.png')}")
    return rows


if __name__ == "__main__":
    main()
