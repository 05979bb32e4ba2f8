"""ALOHA bimanual tasks: success rates of the scripted policy, behavior cloning by backprop and by
OVLR, and each after fine-tuning through the simulator; wall time of every phase.

Per task (transfer-cube, insertion):
  scripted          the DLS-IK scripted policy on the demo seeds 0..demos-1 (its demo yield)
                    and on the evaluation seeds
  bc-bp / bc-ovlr   a ChunkMLP (chunk 10, 512x512) fit to the successful demos by backprop or by
                    OVLR on the same chunk L1 as a black box: same data order, epochs, Adam;
                    ``--bc-seeds`` training seeds each (from ``--first-seed``, default 0, so
                    one run's seeds can be split over processes); ``--bc-members K``:
                    each an ensemble of K such networks fit alone, their chunks averaged
                    (labels "bc-bp xK", `ChunkMLP`'s members)
  +ft-ovlr          the seed-0 BC policy fine-tuned through the simulator with OVLR in episode
                    mode (loss = -(highest stage + 0.5 progress), see bbopt.envs.aloha.finetune;
                    20 validation placements screen the weights every 10 updates; the start
                    and the 3 best screened run on 100 fresh placements, and the best there is
                    kept, bbopt.envs.aloha.selection)
  (N demos)         the same from the first ``--low-data`` demos only (policies that leave
                    room); the BC-BP start is also fine-tuned by each of ``--ft-methods``
                    (default OVLR, ES and CEM)
Fine-tuning starts from the first ``--finetune-seeds`` imitation policies (each run seeded by its
start's seed), with `finetune`'s defaults unless told otherwise (``--ft-sigma``, ``--ft-lr``, and
AR(1) noise where the solver takes it, ``--ft-correlation``); ``--ft-credit``, ``--ft-critic`` and
``--ft-imitation-weight`` (the start's own demos mixed in, `bbopt.rollout.imitation`) pass the
Trainer's options; ``--ft-demo-starts F`` starts that fraction of the training episodes from the
start's demos' states (`bbopt.envs.aloha.starts`); ``--ft-starts bp`` fine-tunes only the BC-BP
policies; ``--low-data-only`` skips the full-data setting. Success = stage 4 within 300 steps, over ``--eval-episodes``
placements from seed 1,000,000 (never a demo seed). Fine-tuning placements come from their own
seed stream. ``<out>_curves.png``: validation success vs env steps of every fine-tuning run; each
fine-tuning row's ``curve`` holds per update env steps, training return, seconds, Adam's step and
the update's KL (`curve_point`).
The summary gives each fine-tuning row's steps to its task's goal (`GOALS`, `reached`). ``--rows
A.json B.json ...`` runs nothing: it merges the rows of side-by-side processes (one per method or
seed range) into ``--out`` and reports them as one run's (`read_rows`). Each row is kept in
``<out>.partial.jsonl`` as it finishes, so a run stopped by Ctrl-C or a crash loses none of the
hours it finished: ``--rows <out>.partial.jsonl`` reports them (a new run on that ``--out`` is
refused while the file is there).

    python -m benchmarks.aloha                         # full protocol (about 35 minutes here per task)
    python -m benchmarks.aloha --demos 4 --low-data 2 --epochs 1 --bc-seeds 1 --eval-episodes 2 \\
        --finetune-steps 600 --population 8 --validation-episodes 1 --confirmation-episodes 1   # smoke
    python -m benchmarks.aloha --rows ovlr.json es.json cem.json --out merged.json   # side-by-side processes merged
    python -m benchmarks.aloha --tasks insertion ... --finetune-steps 2e6 --state runs/ins/   # stopped? run it again

With ``--state DIR`` each fine-tuning run keeps its state after each validation (runs of hours:
1M insertion steps took 73-107 minutes a run here), and the same command run again goes on with it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import bbopt
from bbopt.arguments import step_count, steps_or_zero
from bbopt.envs.aloha.demos import Demos, generate_demos
from bbopt.envs.aloha.env import AlohaStateEnv
from bbopt.envs.aloha.evaluation import ChunkAgent, evaluate_success
from bbopt.envs.aloha.finetune import (
    LR,
    SIGMA,
    check_credit_options,
    finetune,
    finetune_lr_schedule,
    finetune_solver,
    kept_state,
)
from bbopt.envs.aloha.imitation import behavior_clone
from bbopt.envs.aloha.placements import EVAL_SEED
from bbopt.envs.aloha.scripted import SCRIPTED
from bbopt.envs.aloha.selection import CONFIRMATION_EPISODES
from bbopt.policies.chunking import ChunkMLP
from bbopt.rollout.chunking import CHUNK_NOISES
from bbopt.schedules import LR_SCHEDULES
from benchmarks import _report
from benchmarks._run_state import RunState

TASKS = ("transfer_cube", "insertion")
MAX_SEED = 2**31 - 1  # the largest imitation seed (the project's 31-bit seeds; torch refuses past 2**64)
LOW_DATA_METHODS = tuple(bbopt.presets.names("episodes", output_space=True))  # every output-space solver
GOALS = {"transfer_cube": 0.95, "insertion": 0.80}  # issue 17's floors for fine-tuning from 10 demos


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


def bc_row(task: str, demos: Demos, method: str, args, label: str, seed: int):
    began = time.perf_counter()
    policy, history = behavior_clone(demos, method, epochs=args.epochs, sigma=args.bc_sigma, seed=seed,
                                     members=args.bc_members, progress=args.progress)  # fmt: skip
    row = evaluated(task, ChunkAgent(policy), args, policy=label, demos=demos.episodes, seed=seed,
                    members=args.bc_members, train_seconds=time.perf_counter() - began,
                    final_chunk_l1=history[-1]["train_loss"])  # fmt: skip
    return policy, row


def finetune_row(task: str, start, method: str, args, label: str, start_row: dict, demos: Demos) -> dict:
    """One fine-tuning run's row; with ``--state``, kept in its run directory (`RunState`): the run
    goes on from the state it kept after its last validation, and a run that had ended is reported
    without running again."""
    if args.state is None:
        return _finetuned(task, start, method, args, label, start_row, demos)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{task}-{label}-seed{start_row['seed']}")
    run = {"task": task, "policy": label, "seed": start_row["seed"], "start_success_rate": start_row["success_rate"],
           **{k: getattr(args, k) for k in RUN_OPTIONS}}  # fmt: skip
    with RunState(args.state, name, run, _report.STARTED_AT) as state:
        if (row := state.finished_row()) is not None:
            print(f"  {label}, seed {start_row['seed']}: ended before, kept in {state.row_path}")
            return row
        if (kept := kept_state(state.path)) is not None:
            state.resumed_from_own_state(kept["trainer"]["env_steps"])
        return state.finish(_finetuned(task, start, method, args, label, start_row, demos, checkpoint=state.path))


# what defines a fine-tuning run of this benchmark beside its start: a state kept under other values is refused
RUN_OPTIONS = ("demos", "low_data", "epochs", "bc_sigma", "bc_members", "eval_episodes", "finetune_steps",
               "population", "ft_sigma", "ft_lr", "validate_every", "validation_episodes", "confirmation_episodes",
               "ft_credit", "ft_critic", "ft_discount", "ft_gae_lambda", "ft_horizon", "ft_critic_warmup", "ft_reuse",
               "ft_correlation", "ft_chunk_noise", "ft_lr_schedule", "ft_lr_kl", "ft_max_kl", "ft_imitation_weight",
               "ft_demo_starts")  # fmt: skip


def _finetuned(task: str, start, method: str, args, label: str, start_row: dict, demos: Demos,
               checkpoint: Path | None = None) -> dict:  # fmt: skip
    began = time.perf_counter()
    policy, history, selection = finetune(copy.deepcopy(start), task, method=method, env_steps=args.finetune_steps,
                                          population=args.population, sigma=args.ft_sigma, lr=args.ft_lr,
                                          credit=args.ft_credit, critic=args.ft_critic, discount=args.ft_discount,
                                          gae_lambda=args.ft_gae_lambda, horizon=args.ft_horizon,
                                          critic_warmup=args.ft_critic_warmup, reuse=args.ft_reuse,
                                          lr_schedule=args.ft_lr_schedule, lr_kl=args.ft_lr_kl, max_kl=args.ft_max_kl,
                                          correlation=args.ft_correlation, chunk_noise=args.ft_chunk_noise,
                                          seed=start_row["seed"],
                                          validate_every=args.validate_every,
                                          validation_episodes=args.validation_episodes,
                                          confirmation_episodes=args.confirmation_episodes, progress=args.progress,
                                          demos=demos, imitation_weight=args.ft_imitation_weight,
                                          demo_starts=args.ft_demo_starts, checkpoint=checkpoint,
                                          resume=checkpoint is not None)  # fmt: skip
    return evaluated(task, ChunkAgent(policy), args, policy=label, demos=start_row["demos"], seed=start_row["seed"],
                     train_seconds=time.perf_counter() - began, env_steps=history[-1]["env_steps"],
                     start_success_rate=start_row["success_rate"], selection=selection,
                     curve=[curve_point(record) for record in history])  # fmt: skip


def curve_point(record: dict) -> list:
    """One update of a fine-tuning run as its row's curve keeps it: env steps, training return, the
    Trainer's seconds, the Adam step the update took, the mean KL its reuse passes moved the
    policy by (None with one pass) and the share of the update ``max_kl``'s line search kept (None
    without it): the last three show where the KL-adaptive step and the search acted."""
    kl, scale = record.get("reuse_kl"), record.get("step_scale")
    return [record["env_steps"], round(record["return_mean"], 3), record["seconds"], record["lr"],
            None if kl is None else round(float(kl), 6), scale]  # fmt: skip


def run_task(task: str, args, keep=lambda row: None) -> list[dict]:
    """The task's rows in order, each also given to ``keep`` as it finishes."""
    print(f"\n=== {task}: {args.demos} scripted demos, {args.eval_episodes} evaluation episodes")
    rows = []

    def add(row: dict) -> None:
        rows.append(row)
        keep(row)

    demos = generate_demos(task, args.demos, progress=args.progress)
    add({"task": task, "policy": "scripted (demo seeds)", "demos": demos.episodes,
         "success_rate": demos.success_rate, "train_seconds": 0.0, "demo_seconds": demos.seconds})  # fmt: skip
    print(f"  scripted on seeds 0..{args.demos - 1}: {demos.episodes}/{demos.attempted}, {demos.seconds:.1f} s")
    scripted = SCRIPTED[task](AlohaStateEnv(task).physics.model.ptr)
    add(evaluated(task, scripted, args, policy="scripted", demos=0))
    settings = [] if args.low_data_only else [("", demos, {"bp": ("ovlr",), "ovlr": ("ovlr",)})]
    if args.low_data:
        few = first_episodes(demos, args.low_data)
        settings.append((f" ({args.low_data} demos)", few, {"bp": args.ft_methods, "ovlr": ("ovlr",)}))
    for suffix, data, fine_tuners in settings:
        for method in ("bp", "ovlr"):
            label = f"bc-{method}{f' x{args.bc_members}' if args.bc_members > 1 else ''}{suffix}"
            seeds = range(args.first_seed, args.first_seed + args.bc_seeds)
            starts = []
            for seed in seeds:
                starts.append(bc_row(task, data, method, args, label, seed))
                add(starts[-1][1])
            for tuner in fine_tuners[method] if method in args.ft_starts else ():  # the first --finetune-seeds
                for start, start_row in starts[: args.finetune_seeds]:
                    add(finetune_row(task, start, tuner, args, f"{label}+ft-{tuner}", start_row, data))
    return rows


def reached(row: dict, level: float) -> dict | None:
    """Where a fine-tuning ``row`` first had weights that scored ``level`` or more on the
    confirmation placements: the earliest such update among those confirmed (the start and the
    screen's shortlist), its env steps and the Trainer's seconds to it (updates only, validation
    left out; None in rows written before the curve held them). None if no confirmed weights got
    there. Weights between screens are not confirmed, so this bounds the steps to the level from
    above."""
    confirmed = sorted(update for update, success, _ in row["selection"].get("confirmation", []) if success >= level)
    if not confirmed:
        return None
    update = confirmed[0]
    if update == 0:
        return {"update": 0, "env_steps": 0, "seconds": 0.0}
    if update > len(row["curve"]):  # a row put together from different runs, or edited
        raise ValueError(f"Invalid row: weights of update {update} confirmed, but its curve holds "
                         f"{len(row['curve'])} updates")  # fmt: skip
    point = row["curve"][update - 1]  # the curve holds one record per update, from update 1
    return {"update": update, "env_steps": point[0], "seconds": point[2] if len(point) > 2 else None}


def summarize(rows: list[dict]) -> dict:
    """Success rate per (task, policy): mean, std and values over the training seeds; for
    fine-tuning rows with confirmed weights also the task's goal (`GOALS`) and each seed's
    `reached` (None: not there)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(f"{row['task']}/{row['policy']}", []).append(row)
    summary = {}
    for key, members in groups.items():
        summary[key] = _report.spread("success", [row["success_rate"] for row in members])
        confirmed = all(row.get("selection", {}).get("confirmation") for row in members)
        if confirmed and members[0]["task"] in GOALS:
            goal = GOALS[members[0]["task"]]
            summary[key] |= {"goal": goal, "reached": [reached(row, goal) for row in members]}
    return summary


# Settings that only pick which rows a process runs: side-by-side processes of one benchmark differ in these.
PER_PROCESS = {"tasks", "ft_methods", "ft_starts", "first_seed", "bc_seeds", "finetune_seeds", "low_data_only", "out",
               "progress"}  # fmt: skip


def outcome(row: dict) -> dict:
    """What a row measured: everything but its timings (wall-clock differs between processes that
    trained the same weights, the results do not)."""
    kept = {key: value for key, value in row.items() if not key.endswith("seconds") and key != "curve"}
    if "curve" in row:
        kept["curve"] = [point[:2] for point in row["curve"]]  # env steps and return, without the seconds
    return kept


def read_payload(path: Path) -> dict:
    """A result JSON file as written, or the rows an interrupted run kept (``<out>.partial.jsonl``:
    its header line, config, commit and date, then one row per line) in the same shape."""
    text = path.read_text()
    if path.suffix != ".jsonl":
        return json.loads(text)
    header, *rows = _report.json_lines(text, path)
    return header | {"rows": rows}


def read_rows(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """The rows of earlier benchmark JSON files merged in order, and where each file came from
    (path, commit, date, config). A row found in several files (the imitation rows that every
    side-by-side process trains alike) is kept once where its `outcome` agrees and refused where
    it does not (two different runs under one name: different settings, or different code)."""
    rows: dict[tuple, tuple[dict, Path]] = {}
    sources = []
    for path in paths:
        try:
            payload = read_payload(path)
            found, config = payload["rows"], payload["config"]
        except (OSError, ValueError, KeyError, TypeError) as error:  # ValueError: bad JSON, or an empty file
            raise ValueError(f"{path}: not a benchmarks.aloha JSON or kept-rows file ({type(error).__name__}: "
                             f"{error})") from None  # fmt: skip
        if not isinstance(found, list) or not isinstance(config, dict):
            raise ValueError(f"{path}: not a benchmarks.aloha JSON file (its rows are not a list)")
        for k, row in enumerate(found):
            if not isinstance(row, dict) or not {"task", "policy", "success_rate"} <= set(row):
                raise ValueError(f"{path}: row {k} is not a row of this benchmark (task, policy, success_rate)")
            key = (row["task"], row["policy"], row.get("demos"), row.get("seed"))
            if not all(part is None or isinstance(part, str | int) for part in key):
                raise ValueError(f"{path}: row {k} names its run by {key} (expected text and whole numbers)")
            if key not in rows:
                rows[key] = (row, path)
            elif outcome(rows[key][0]) != outcome(row):
                raise ValueError(
                    f"{path}: row {k} ({', '.join(map(str, key))}) differs from the same row in "
                    f"{rows[key][1]}: two different runs under one name (other settings or code)"
                )
        sources.append({"path": str(path), "commit": payload.get("commit"), "date": payload.get("date"),
                        "config": config})  # fmt: skip
    if not rows:
        raise ValueError(f"no rows in {', '.join(map(str, paths))}")
    return [row for row, _ in rows.values()], sources


def differing_settings(sources: list[dict]) -> dict[str, list]:
    """The settings (beyond `PER_PROCESS`) on which the merged files' configs disagree: each with
    every file's value."""
    keys = sorted(set().union(*(source["config"] for source in sources)) - PER_PROCESS)
    values = {key: [source["config"].get(key) for source in sources] for key in keys}
    return {key: found for key, found in values.items() if len({json.dumps(v) for v in found}) > 1}


def _at(hit: dict | None) -> str:
    if hit is None:
        return "-"
    seconds = "" if hit["seconds"] is None else f" ({hit['seconds']:.0f} s)"
    return f"{hit['env_steps']:,} steps{seconds}"


def report_goals(summary: dict) -> None:
    """Print each fine-tuning group's steps to its goal."""
    for key, entry in summary.items():
        if "goal" in entry:
            hits = sum(hit is not None for hit in entry["reached"])
            where = " / ".join(_at(hit) for hit in entry["reached"])
            print(f"  {key}: {entry['goal']:.0%} confirmed in {hits}/{len(entry['reached'])} runs, at {where}")


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(key.split("/")[0] for key in summary))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith(f"{task}/") and "demo seeds" not in k}
        means = [100 * v["success_mean"] for v in mine.values()]
        errors = [100 * v["success_std"] for v in mine.values()]
        ax.barh(np.arange(len(mine)), means, xerr=errors, color="tab:blue", capsize=2)
        ax.set_yticks(np.arange(len(mine)), list(mine), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("success (%), mean +- std over training seeds")
        ax.set_title(task)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Validation success vs env steps of every fine-tuning run (the start at 0 steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tuned = [row for row in rows if row.get("selection", {}).get("validation_curve")]
    tasks = list(dict.fromkeys(row["task"] for row in tuned))
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        labels = list(dict.fromkeys(row["policy"] for row in tuned if row["task"] == task))
        for k, label in enumerate(labels):
            for n, row in enumerate(r for r in tuned if r["task"] == task and r["policy"] == label):
                curve = np.asarray(row["selection"]["validation_curve"], dtype=float)
                ax.plot(curve[:, 0], 100 * curve[:, 1], color=f"C{k}", alpha=0.8, label=label if n == 0 else None)
        ax.set_xlabel("env steps")
        ax.set_ylabel("validation success (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{task}: fine-tuning, one line per imitation seed")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--demos", type=int, default=100)
    parser.add_argument("--low-data", type=int, default=10, help="demos for the low-data start (0: skip)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--bc-seeds", type=int, default=3, help="imitation runs per method and data size")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="imitation seeds FIRST .. FIRST + bc-seeds - 1 (a run split over processes)")  # fmt: skip
    parser.add_argument("--bc-sigma", type=float, default=0.01)
    parser.add_argument("--bc-members", type=int, default=1, help="imitation policies as ensembles of that many "
                        "networks, each fit alone, their chunks averaged (labels 'bc-bp xK')")  # fmt: skip
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--finetune-steps", type=step_count, default=300_000, help="e.g. 1e6")
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--ft-sigma", type=float, default=SIGMA, help=f"noise std in action-stds (default {SIGMA})")
    parser.add_argument("--ft-lr", type=float, default=LR, help=f"Adam's step (default {LR})")
    parser.add_argument("--validate-every", type=int, default=10)
    parser.add_argument("--validation-episodes", type=int, default=20)
    parser.add_argument("--confirmation-episodes", type=int, default=CONFIRMATION_EPISODES,
                        help="placements the start and the screen's shortlist run at the end "
                             "(0: keep the screen's best)")  # fmt: skip
    parser.add_argument("--finetune-seeds", type=int, default=1, help="imitation seeds fine-tuned (the first k)")
    parser.add_argument("--ft-methods", default=",".join(LOW_DATA_METHODS),
                        help="solvers fine-tuning the low-data BC-BP start (BC-OVLR's: ovlr)")  # fmt: skip
    parser.add_argument("--low-data-only", action="store_true", help="skip the --demos setting (its demos are kept)")
    parser.add_argument("--ft-starts", default="bp,ovlr", help="which imitation methods' policies are fine-tuned")
    parser.add_argument("--ft-credit", default="episode", choices=["episode", "to_go"])
    parser.add_argument("--ft-critic", default="none", choices=["none", "state_value"])
    parser.add_argument("--ft-discount", type=float, default=1.0, help="with --ft-credit to_go: gamma")
    parser.add_argument("--ft-gae-lambda", type=float, default=1.0, help="with --ft-critic: GAE(lambda)")
    parser.add_argument("--ft-horizon", type=int, help="with --ft-critic: steps per env slot per update")
    parser.add_argument("--ft-critic-warmup", type=steps_or_zero, default=0,
                        help="with --ft-critic: env steps at the start that train only the critic")  # fmt: skip
    parser.add_argument("--ft-reuse", type=int, help="optimizer steps per population (clipped ratios; default: "
                        "finetune's, 10 where the solver's sigma is fixed, else 1)")  # fmt: skip
    parser.add_argument("--ft-correlation", type=float,
                        help="AR(1) coefficient of the noise over each episode's steps (default: finetune's, 0.95 "
                             "where the solver takes it, else 0)")  # fmt: skip
    parser.add_argument("--ft-chunk-noise", default="independent", choices=CHUNK_NOISES,
                        help="shared: one noise draw per step over the whole chunk (bbopt.noise.Tiled)")  # fmt: skip
    parser.add_argument("--ft-lr-schedule", choices=LR_SCHEDULES,
                        help="kl (with reuse): the step adapts to each update's mean KL (default: finetune's, kl "
                             "with reuse, constant without)")  # fmt: skip
    parser.add_argument("--ft-lr-kl", type=float, help="with --ft-lr-schedule kl: the mean KL per update aimed at "
                        "(default: finetune's, 0.1)")  # fmt: skip
    parser.add_argument("--ft-max-kl", type=float, help="with reuse: each update's mean KL bounded by a line "
                        "search (default: finetune's, 0.2 with reuse; 0: none)")  # fmt: skip
    parser.add_argument("--ft-imitation-weight", type=float, default=0.0,
                        help="mix the start's demos' imitation loss in at this weight (0: off)")  # fmt: skip
    parser.add_argument("--ft-demo-starts", type=float, default=0.0,
                        help="fraction of fine-tuning episodes started from a state of the start's demos")  # fmt: skip
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "aloha.json")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--state", type=Path, help="keep each fine-tuning run's state in DIR after each "
                        "validation: the same command run again recomputes the imitation rows (seeded: the same "
                        "starts), goes on with each fine-tuning run from its state and reports those that had "
                        "ended without running them again (no partial file then)")  # fmt: skip
    parser.add_argument("--rows", type=Path, nargs="+", help="run nothing: report the rows of these benchmark "
                        "JSON files (side-by-side processes, one per method or seed) or an interrupted run's "
                        "<out>.partial.jsonl, merged, into --out")  # fmt: skip
    args = parser.parse_args(argv)
    if args.rows:
        if args.state is not None:
            parser.error("--state keeps runs that run here; --rows runs nothing")
        return merge(args.rows, args.out)
    args.ft_methods, args.ft_starts = tuple(args.ft_methods.split(",")), tuple(args.ft_starts.split(","))
    if unknown := sorted(set(args.ft_starts) - {"bp", "ovlr"}):
        parser.error(f"--ft-starts: unknown imitation methods {unknown} (bp, ovlr)")
    if args.bc_members < 1:
        parser.error(f"--bc-members {args.bc_members} (expected >= 1)")
    if args.first_seed < 0:
        parser.error(f"--first-seed {args.first_seed} (expected >= 0)")
    if (args.first_seed + args.bc_seeds) * args.bc_members - 1 > MAX_SEED:  # member j of seed s: s * members + j
        parser.error(f"--first-seed {args.first_seed}: the last imitation seed would pass {MAX_SEED}")
    if args.confirmation_episodes < 0:
        parser.error(f"--confirmation-episodes {args.confirmation_episodes} (expected >= 0)")
    if not 0 <= args.ft_demo_starts <= 1 or not args.ft_imitation_weight >= 0:
        parser.error(f"--ft-demo-starts {args.ft_demo_starts} (a fraction in [0, 1]) or --ft-imitation-weight "
                     f"{args.ft_imitation_weight} (>= 0) out of range")  # fmt: skip
    resolved = {}  # each method's fine-tuning options as finetune resolves the defaults (None) given here
    for method in ("ovlr", *args.ft_methods):  # refused here, not hours in, when a row starts
        try:
            solver = finetune_solver(ChunkMLP(2, 1, 1, hidden=(2,)), method, population=args.population,
                                     sigma=args.ft_sigma, lr=args.ft_lr, correlation=args.ft_correlation,
                                     reuse=args.ft_reuse, chunk_noise=args.ft_chunk_noise,
                                     max_kl=args.ft_max_kl)  # fmt: skip
            check_credit_options(args.ft_credit, args.ft_critic, discount=args.ft_discount,
                                 gae_lambda=args.ft_gae_lambda, horizon=args.ft_horizon,
                                 critic_warmup=args.ft_critic_warmup, env_steps=args.finetune_steps)  # fmt: skip
            lr_schedule, lr_kl = finetune_lr_schedule(solver.reuse, args.ft_lr_schedule, args.ft_lr_kl)
        except (ValueError, KeyError) as error:
            parser.error(f"fine-tuning by {method}: {error}")
        resolved[method] = {"reuse": solver.reuse, "correlation": solver.correlation, "lr_schedule": lr_schedule,
                            "lr_kl": lr_kl, "max_kl": solver.max_kl}  # fmt: skip
    torch.set_num_threads(1)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["eval_seeds"] = f"{EVAL_SEED}..{EVAL_SEED + args.eval_episodes - 1}"
    config["ft_resolved"] = {method: resolved[method] for method in args.ft_methods}
    rows = []
    # each row kept as it finishes, under the run's settings: an hours-long run loses none of them (with --state the
    # fine-tuning runs keep their own rows and states)
    header = {"config": config, **_report.stamp()}
    keeping = contextlib.nullcontext(lambda row: None) if args.state else _report.kept_rows(args.out, header)
    with keeping as keep:
        for task in args.tasks.split(","):
            rows += run_task(task, args, keep)
    report(rows, config, args.out)
    _report.finished(args.out)
    return rows


def merge(paths: list[Path], out: Path) -> list[dict]:
    """``--rows``: the files' rows merged (`read_rows`) and reported as one run's; settings that
    differ between the files beyond those that pick the rows are warned about and recorded."""
    _report.refuse_overwriting_inputs(out, paths)
    rows, sources = read_rows(paths)
    differing = differing_settings(sources)
    if differing:
        warnings.warn(f"merged files differ in {', '.join(f'{k} {v}' for k, v in differing.items())} "
                      f"(files in the order given)", stacklevel=2)  # fmt: skip
    report(rows, {"rows_from": sources, "differing": differing}, out)
    return rows


def report(rows: list[dict], config: dict, out: Path) -> None:
    """Summary and goals printed; JSON, bar chart and validation curves written next to ``out``."""
    summary = summarize(rows)
    report_goals(summary)
    _report.write(out, config, rows, summary)
    plot(summary, out.with_suffix(".png"))
    plot_curves(rows, out.with_name(out.stem + "_curves.png"))
    print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
