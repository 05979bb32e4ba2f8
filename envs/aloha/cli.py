"""``bbopt aloha demos | train | finetune | evaluate``: the ALOHA pipeline from the command line.

bbopt aloha demos --task transfer_cube --episodes 100 --out runs/aloha/demos.npz
bbopt aloha train --demos runs/aloha/demos.npz --method ovlr --out runs/aloha/bc_ovlr.pt
bbopt aloha finetune --policy runs/aloha/bc_ovlr.pt --method ovlr --out runs/aloha/ft_ovlr.pt
bbopt aloha evaluate --policy runs/aloha/ft_ovlr.pt --episodes 50 --video runs/aloha/ft.mp4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bbopt import presets
from bbopt.arguments import count, positive_int, seconds_or_none, step_count, steps_or_zero, widths
from bbopt.cli import STEP_TIMEOUT_HELP, Command
from bbopt.envs.aloha.placements import EVAL_SEED
from bbopt.envs.aloha.selection import CONFIRMATION_EPISODES
from bbopt.rollout.checkpoint import checkpoint_exists, previous_path, write_json
from bbopt.rollout.chunking import CHUNK_NOISES
from bbopt.schedules import LR_SCHEDULES
from bbopt.tracking import add_tensorboard_argument, tensorboard_or_none

__all__ = ["COMMAND"]


def add_arguments(aloha: argparse.ArgumentParser) -> None:
    """The four subcommands of ``bbopt aloha``."""
    jobs = aloha.add_subparsers(dest="aloha_command", required=True)
    tasks = ["transfer_cube", "insertion"]

    demos = jobs.add_parser("demos", help="scripted demonstrations (DLS IK), success-filtered, to an .npz file")
    demos.add_argument("--task", default="transfer_cube", choices=tasks)
    demos.add_argument("--episodes", type=positive_int, default=100, help="attempted episodes (placement seeds)")
    demos.add_argument("--seed", type=int, default=0, help="first placement seed")
    demos.add_argument("--noise", type=float, default=0.0, help="DART noise std on executed joint targets (rad)")
    demos.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    demos.add_argument("--no-progress", action="store_true")

    train = jobs.add_parser("train", help="behavior cloning of the demos by backprop or by OVLR (chunk L1)")
    train.add_argument("--demos", type=Path, required=True)
    train.add_argument("--method", default="bp", choices=["bp", "ovlr"])
    train.add_argument("--epochs", type=positive_int, default=100)
    train.add_argument("--chunk", type=positive_int, default=10, help="actions predicted per step")
    train.add_argument("--hidden", type=widths, default=[512, 512])
    train.add_argument("--batch-size", type=positive_int, default=256)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--samples", type=positive_int, default=32, help="OVLR: noisy chunks per example")
    train.add_argument("--sigma", type=float, default=0.01, help="OVLR: noise std, in units of each action's std")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--members", type=positive_int, default=1, help="an ensemble of that many networks, each fit "
                       "alone (seeds SEED * MEMBERS + j), their chunks averaged")  # fmt: skip
    train.add_argument("--eval-episodes", type=int, default=50, help="success rate after training (0: skip)")
    train.add_argument("--out", type=Path, required=True, help="the policy file to write (.pt)")
    add_tensorboard_argument(train)
    train.add_argument("--no-progress", action="store_true")

    finetune = jobs.add_parser("finetune", help="fine-tune a policy through the simulator (episode mode)")
    finetune.add_argument("--policy", type=Path, required=True)
    finetune.add_argument("--method", default="ovlr", choices=presets.names("episodes", output_space=True))
    finetune.add_argument("--env-steps", type=step_count, default=300_000, help="simulator steps, e.g. 3e5")
    finetune.add_argument("--population", type=positive_int, default=32, help="episodes per update (even)")
    # None: finetune()'s defaults (bbopt.envs.aloha.finetune.SIGMA, LR, CORRELATION, REUSE, LR_KL; not imported
    # here: heavy)
    finetune.add_argument("--sigma", type=float, help="noise std, in units of each action's std (default 0.05)")
    finetune.add_argument("--lr", type=float, help="Adam's step size (default 1e-4)")
    finetune.add_argument("--credit", default="episode", choices=["episode", "to_go"])
    finetune.add_argument("--critic", default="none", choices=["none", "state_value"],
                          help="with --credit to_go: subtract a learned V(s, t) from each cost-to-go")  # fmt: skip
    finetune.add_argument("--correlation", type=float,
                          help="AR(1) coefficient of each episode's noise over its steps, in [0, 1) (default 0.95 "
                               "for OVLR and ES; CEM, whose sigma learns: 0)")  # fmt: skip
    finetune.add_argument("--chunk-noise", default="independent", choices=CHUNK_NOISES,
                          help="shared: one noise draw per step added to every step of the chunk, so the "
                               "executed ensemble moves by ~0.9 sigma with the AR(1) noise (OVLR, ES); "
                               "independent: a draw per entry")  # fmt: skip
    finetune.add_argument("--discount", type=float, default=1.0, help="with --credit to_go: gamma of the costs-to-go")
    finetune.add_argument("--gae-lambda", type=float, default=1.0, help="with --critic: GAE(lambda) advantages")
    finetune.add_argument(
        "--horizon",
        type=positive_int,
        help="with --critic: steps per env slot per update, whatever episode each is in (default: whole episodes)",
    )
    finetune.add_argument("--critic-warmup", type=steps_or_zero, default=0,
                          help="with --critic: env steps at the start that train only the critic")  # fmt: skip
    finetune.add_argument("--reuse", type=positive_int,
                          help="optimizer steps per population (default 10 where the solver's sigma is fixed, "
                               "OVLR and ES, else 1)")  # fmt: skip
    finetune.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                          help="kl (with reuse): the step adapts to each update's mean KL (--lr-kl); default kl "
                               "with reuse, constant without")  # fmt: skip
    finetune.add_argument("--lr-kl", type=float,
                          help="with --lr-schedule kl: the mean KL per update aimed at (default 0.1)")  # fmt: skip
    finetune.add_argument("--max-kl", type=float,
                          help="with reuse: each update's mean KL bounded by a line search (default 0.2 with reuse; "
                               "0: none)")  # fmt: skip
    finetune.add_argument("--demos", type=Path, help="mix these demonstrations' imitation loss into every update "
                          "(and with --demo-starts, start episodes from their states)")  # fmt: skip
    finetune.add_argument("--imitation-weight", type=float, default=1.0,
                          help="with --demos: the term's weight (0: no imitation term)")  # fmt: skip
    finetune.add_argument("--imitation-decay", type=float, default=1.0,
                          help="with --demos: the weight's factor per update, in (0, 1]")  # fmt: skip
    finetune.add_argument("--demo-starts", type=float, default=0.0, metavar="FRACTION",
                          help="with --demos: the fraction of training episodes that start from a state of a "
                               "demonstration (uniform over demos and steps; validation starts fresh)")  # fmt: skip
    finetune.add_argument("--pool", default="serial", choices=["serial", "process", "ray", "auto"])
    finetune.add_argument("--workers", type=positive_int)
    finetune.add_argument("--step-timeout", type=seconds_or_none, default=60.0, metavar="SECONDS",
                          help=STEP_TIMEOUT_HELP)  # fmt: skip
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument(
        "--validate-every",
        type=int,
        default=10,
        help="updates between validations; the best validated weights are kept (0: keep the last)",
    )
    finetune.add_argument("--validation-episodes", type=positive_int, default=20,
                          help="placements of each validation (the screen)")  # fmt: skip
    finetune.add_argument("--confirmation-episodes", type=count, default=CONFIRMATION_EPISODES,
                          help="at the end, the start and the 3 best screened weights run on this many fresh "
                               "placements; the best there is kept (0: keep the screen's best)")  # fmt: skip
    finetune.add_argument("--eval-episodes", type=int, default=50, help="success rate before and after (0: skip)")
    finetune.add_argument("--out", type=Path, required=True, help="the fine-tuned policy file (.pt); a curve "
                          "CSV is written next to it, and while the run lasts its state (OUT.state.pt, after each "
                          "validation)")  # fmt: skip
    finetune.add_argument("--resume", action="store_true", help="go on with the run stopped (Ctrl-C, a kill) with "
                          "this --out, from its last kept state, with the same options")  # fmt: skip
    finetune.add_argument("--no-progress", action="store_true")

    add_tensorboard_argument(finetune)
    evaluate = jobs.add_parser("evaluate", help="success rate over seeded episodes (a policy file or --scripted)")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", type=Path)
    source.add_argument("--scripted", choices=tasks, metavar="TASK", help="the scripted policy of TASK")
    evaluate.add_argument("--episodes", type=positive_int, default=50)
    evaluate.add_argument("--seed", type=int, default=EVAL_SEED, help="first placement seed (demos use 0, 1, ...)")
    evaluate.add_argument("--decay", type=float, default=0.1, help="temporal-ensembling weight decay")
    evaluate.add_argument("--video", type=Path, help="record the first episode (.mp4 or .gif; needs MUJOCO_GL)")
    evaluate.add_argument("--json", type=Path, help="write the result (per-episode records) as JSON")
    evaluate.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> dict:
    """Run the parsed ``bbopt aloha ...`` command; returns its result record."""
    return {"demos": _demos, "train": _train, "finetune": _finetune, "evaluate": _evaluate}[args.aloha_command](args)


def _demos(args) -> dict:
    from bbopt.envs.aloha.demos import generate_demos, save_demos

    demos = generate_demos(args.task, args.episodes, seed=args.seed, noise=args.noise, progress=not args.no_progress)
    save_demos(demos, args.out)
    print(f"scripted {args.task}: {demos.episodes}/{demos.attempted} successful ({demos.success_rate:.1%}), "
          f"{len(demos.actions):,} steps, {demos.seconds:.1f} s; wrote {args.out}")  # fmt: skip
    return {"task": args.task, "success_rate": demos.success_rate, "episodes": demos.episodes, "out": str(args.out)}


def _report(task: str, policy, episodes: int, progress: bool, label: str) -> dict | None:
    from bbopt.envs.aloha.evaluation import ChunkAgent, evaluate_success

    if episodes < 1:
        return None
    result = evaluate_success(task, ChunkAgent(policy), episodes, progress=progress)
    rate, stage = result["success_rate"], result["mean_stage"]
    print(f"{label}: success {rate:.1%} over {episodes} episodes (mean stage {stage:.2f})")
    return {k: v for k, v in result.items() if k != "records"}


def _refuse_overwriting(written: dict[str, Path], read: dict[str, Path], out: Path) -> None:
    """Refuse an ``--out`` whose files (``written``: what -> path) would replace a file the command reads."""
    for made, target in written.items():
        for what, path in read.items():
            if target.resolve() == path.resolve():
                raise ValueError(f"--out {out} would overwrite {what} ({path}) with {made}: give another --out")


def _train(args) -> dict:
    from bbopt.envs.aloha.demos import load_demos
    from bbopt.envs.aloha.imitation import behavior_clone
    from bbopt.envs.aloha.policy_files import save_chunk_policy

    _refuse_overwriting({"the policy": args.out}, {"the demos file": args.demos}, args.out)
    demos = load_demos(args.demos)
    began = time.perf_counter()
    with tensorboard_or_none(args.tensorboard) as tracker:
        policy, history = behavior_clone(demos, args.method, chunk=args.chunk, hidden=args.hidden,
                                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                         samples=args.samples, sigma=args.sigma, seed=args.seed,
                                         members=args.members, progress=not args.no_progress,
                                         tracker=tracker)  # fmt: skip
    seconds = time.perf_counter() - began
    print(f"BC-{args.method.upper()} on {demos.episodes} {demos.task} demos: {args.epochs} epochs in {seconds:.1f} s, "
          f"final chunk L1 {history[-1]['train_loss']:.4f}")  # fmt: skip
    evaluation = _report(demos.task, policy, args.eval_episodes, not args.no_progress, f"BC-{args.method.upper()}")
    meta = {"task": demos.task, "trained_by": f"bc-{args.method}", "demos": str(args.demos), "epochs": args.epochs,
            "members": args.members, "seconds": seconds, "history": history, "evaluation": evaluation}  # fmt: skip
    save_chunk_policy(policy, args.out, **meta)
    print(f"wrote {args.out}")
    return meta


def _finetune(args) -> dict:
    from bbopt.envs.aloha.demos import load_demos
    from bbopt.envs.aloha.finetune import (
        check_credit_options,
        finetune,
        finetune_lr_schedule,
        finetune_solver,
        kept_state,
    )
    from bbopt.envs.aloha.policy_files import load_chunk_policy, save_chunk_policy

    if args.demos is None and (args.imitation_weight != 1.0 or args.imitation_decay != 1.0):
        raise ValueError("--imitation-weight and --imitation-decay weigh the demos' imitation term: add --demos FILE")
    if not (0 <= args.demo_starts <= 1 and args.imitation_weight >= 0):  # NaN fails both
        raise ValueError(f"--demo-starts {args.demo_starts} must lie in [0, 1] and --imitation-weight "
                         f"{args.imitation_weight} be >= 0")  # fmt: skip
    if args.demos is None and args.demo_starts:
        raise ValueError("--demo-starts starts episodes from the demos' states: add --demos FILE")
    # refused before the start is evaluated
    check_credit_options(args.credit, args.critic, discount=args.discount, gae_lambda=args.gae_lambda,
                         horizon=args.horizon, critic_warmup=args.critic_warmup, env_steps=args.env_steps)  # fmt: skip
    if args.reuse is not None:  # else the solver's default decides, once the policy is read
        finetune_lr_schedule(args.reuse, args.lr_schedule, args.lr_kl)
    read = {"the start policy's file": args.policy} | ({"the demos file": args.demos} if args.demos else {})
    state = args.out.with_suffix(".state.pt")
    written = {"the fine-tuned policy": args.out, "the curve": args.out.with_suffix(".csv"), "the run's state": state,
               "its previous state": previous_path(state)}  # fmt: skip
    _refuse_overwriting(written, read, args.out)
    stopped = checkpoint_exists(state)
    if stopped and not args.resume:
        raise ValueError(f"{state} holds a fine-tuning run that was stopped: go on with it with --resume (and its "
                         "options), or remove it to start again")  # fmt: skip
    if args.resume and not stopped:
        raise ValueError(f"--resume: no stopped run at {state} (the state a run keeps while it lasts)")
    policy, meta = load_chunk_policy(args.policy)
    task = meta.get("task")
    demos = load_demos(args.demos) if args.demos is not None else None  # refused before anything runs
    given = {name: getattr(args, name) for name in ("sigma", "lr") if getattr(args, name) is not None}
    solver = finetune_solver(
        policy,
        args.method,
        population=args.population,
        **given,
        correlation=args.correlation,
        reuse=args.reuse,
        chunk_noise=args.chunk_noise,
        max_kl=args.max_kl,
    )  # the solver's refusals, before the evaluation
    finetune_lr_schedule(solver.reuse, args.lr_schedule, args.lr_kl)
    before = _report(task, policy, args.eval_episodes, not args.no_progress, "before fine-tuning")
    curve = args.out.with_suffix(".csv")
    if not args.resume:
        curve.unlink(missing_ok=True)
    # a resume hides what the stopped session logged past its state
    purge = kept_state(state)["trainer"]["env_steps"] + 1 if args.resume else None
    began = time.perf_counter()
    with tensorboard_or_none(args.tensorboard, purge_step=purge) as tracker:
        policy, history, selection = finetune(policy, task, method=args.method, env_steps=args.env_steps,
                                              population=args.population, **given,
                                              credit=args.credit, critic=args.critic, discount=args.discount,
                                              gae_lambda=args.gae_lambda, horizon=args.horizon,
                                              critic_warmup=args.critic_warmup,
                                              correlation=args.correlation, reuse=args.reuse,
                                              chunk_noise=args.chunk_noise,
                                              lr_schedule=args.lr_schedule, lr_kl=args.lr_kl,
                                              max_kl=args.max_kl, demos=demos,
                                              imitation_weight=args.imitation_weight,
                                              imitation_decay=args.imitation_decay,
                                              demo_starts=args.demo_starts, seed=args.seed,
                                              validate_every=args.validate_every,
                                              validation_episodes=args.validation_episodes,
                                              confirmation_episodes=args.confirmation_episodes, pool=args.pool,
                                              workers=args.workers, step_timeout=args.step_timeout, curve=curve,
                                              checkpoint=state, resume=args.resume,
                                              progress=not args.no_progress, tracker=tracker)  # fmt: skip
    seconds = time.perf_counter() - began
    print(f"fine-tuned by {args.method.upper()}: {history[-1]['env_steps']:,} env steps, {len(history)} updates, "
          f"{seconds:.0f} s")  # fmt: skip
    if args.validate_every:
        confirmed = selection.get("confirmation_success")
        print(f"kept the weights of update {selection['update']}: validation success "
              f"{selection['validation_success']:.1%} (start {selection['start_validation_success']:.1%})"
              + ("" if confirmed is None else f", confirmed at {confirmed:.1%} on {args.confirmation_episodes} "
                 f"fresh placements") + f"; {selection['validation_steps']:,} validation steps")  # fmt: skip
    after = _report(task, policy, args.eval_episodes, not args.no_progress, "after fine-tuning")
    record = {"task": task, "trained_by": f"{meta.get('trained_by')}+finetune-{args.method}",
              "source": str(args.policy), "env_steps": history[-1]["env_steps"], "seconds": seconds,
              "selection": selection, "before": before, "evaluation": after}  # fmt: skip
    save_chunk_policy(policy, args.out, **record)
    for kept in (state, previous_path(state)):  # the run is done: its policy file holds the result
        kept.unlink(missing_ok=True)
    print(f"wrote {args.out} and {curve}")
    return record


def _evaluate(args) -> dict:
    from bbopt.envs.aloha.env import AlohaStateEnv
    from bbopt.envs.aloha.evaluation import ChunkAgent, evaluate_success
    from bbopt.envs.aloha.policy_files import load_chunk_policy
    from bbopt.envs.aloha.scripted import SCRIPTED

    if args.scripted:
        task, label = args.scripted, f"scripted {args.scripted}"
        agent = SCRIPTED[task](AlohaStateEnv(task).physics.model.ptr)
    else:
        policy, meta = load_chunk_policy(args.policy)
        task, label = meta.get("task"), f"{args.policy} ({meta.get('trained_by')}, {meta.get('task')})"
        agent = ChunkAgent(policy, decay=args.decay)
    result = evaluate_success(task, agent, args.episodes, seed=args.seed, video=args.video,
                              progress=not args.no_progress)  # fmt: skip
    print(f"{label}: success {result['success_rate']:.1%} over {args.episodes} episodes "
          f"(seeds {args.seed}..{args.seed + args.episodes - 1}), mean stage {result['mean_stage']:.2f}")  # fmt: skip
    if args.video:
        print(f"video: {result['video']}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


def _kept(args: argparse.Namespace, said: str) -> str:
    """What Ctrl-C leaves: a fine-tuning run's state after its last validation, if it kept one."""
    if said or args.aloha_command != "finetune":
        return said or "stopped; nothing partial was written"
    state = args.out.with_suffix(".state.pt")
    if not checkpoint_exists(state):
        return "stopped before the run kept a state; nothing partial was written"
    return f"the run keeps its state after its last validation in {state}; go on with the same command and --resume"


COMMAND = Command("aloha", "ALOHA bimanual tasks: scripted demos, imitation, fine-tuning", add_arguments, run,
                  kept=_kept, label=lambda args: f"aloha {args.aloha_command}")  # fmt: skip
