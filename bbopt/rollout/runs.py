"""`bbopt train` / `bbopt evaluate`: build a run from its settings, train with progress,
checkpoints, a learning-curve CSV and plot; replay a saved policy (optionally to a video).

A run directory holds ``config.json`` (the settings), ``checkpoint.pt`` (solver state,
observation statistics, counters, history) and ``checkpoint.prev.pt`` (the one before),
``curve.csv``, ``curve.png``, ``policy.pt`` (the final policy's state_dict) and
``summary.json``. Checkpoints and the policy file are written atomically with a SHA-256 that is
checked on load (`bbopt.rollout.checkpoint`); a resume falls back to the previous checkpoint
when the latest is corrupt. One process at a time writes a run directory (`RunLock`).

Bitwise-identical resumes: PyTorch's CPU kernels may sum in a different order with another
number of threads, so a run records its thread count (``threads``, by default the process's at
the run's start) and every session of it, resumed or not, computes with that many.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import bbopt
from bbopt.arguments import count, positive_int, renamed_keywords, step_count, steps_or_zero, widths
from bbopt.checks import check_choice, check_float, check_int
from bbopt.plugins import load_problems, make_env
from bbopt.registry import SOLVERS, canonical
from bbopt.rollout.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    write_json,
    write_text,
)
from bbopt.rollout.critic import TARGETS, StateValue
from bbopt.rollout.driver import CURVE_FIELDS, LR_KL, Trainer, rollout_return
from bbopt.rollout.lock import RunLock
from bbopt.rollout.policy import control_policy
from bbopt.rollout.pools import STEP_TIMEOUT
from bbopt.rollout.video import write_video
from bbopt.schedules import LR_SCHEDULES
from bbopt.seeding import TEST_EPISODES, derive
from bbopt.sigma import Linear
from bbopt.tracking import tensorboard_or_none

__all__ = [
    "RunConfig",
    "build_solver",
    "evaluate_run",
    "load_config",
    "make_trainer",
    "plot_curve",
    "train_run",
]

# sigma and lr default to each solver's "episodes" preset (bbopt.presets): action-space sigma
# (actions in [-1, 1]) or parameter-space sigma (param_es), Adam's lr (constant); population 64,
# MLP 64-64. Picked from single-seed runs on HalfCheetah-v5 (0.3M and 0.6M steps: OVLR sigma
# 0.1-0.5 x lr 0.005-0.03, ES lr 0.003-0.03, CEM sigma 0.3-0.5 x lr 0.01-0.03, param_es sigma
# 0.02-0.05 x lr 0.01-0.03, linear or MLP policy; at 2M steps OVLR lr 0.01 rose to 2,400 by
# 0.6M and then collapsed, lr 0.003 reached 1,750, and lr 0.01 decaying linearly to 0 reached
# 1,200). Hopper-v5 untuned.
#
# The rest of a run's recipe follows its credit. Per-step credit (the default of the solvers that
# have it, OVLR and ES) comes with PPO's machinery on our one-VJP update: a state-value critic with
# GAE(0.98) and gamma 0.995, small populations (many updates per million steps) and 20 optimizer
# steps per population on its recorded steps (clipped likelihood ratios). Picked from 1M-step runs
# on HalfCheetah-v5 and Hopper-v5, seed 0 only (docs/results/locomotion.md): population and reuse
# before GAE used the discount (3b6c4b7), gamma and lambda after (gamma 0.99 with GAE 0.95, the pick
# of before, left Hopper at its standing plateau). Sigma stays the presets' 0.3: 0.4 lifted HalfCheetah
# (seeds 0-2: 4,334 against 3,955) and left Hopper level, but lowered Walker2d, never tuned on, on every
# seed (2,695 against 3,292); a clip of 0.3 lifted HalfCheetah further and kept Hopper standing on every
# seed. Since --horizon, an update is 256 steps of each of the 16 env slots, whatever episode each is in
# (244 updates per million steps where 16 whole episodes gave 62 on HalfCheetah), the unfinished ends
# closed with the critic's value. Picked from 1M-step runs on HalfCheetah-v5 and Hopper-v5, seed 0 (and
# Hopper seed 1): horizon 256 / 128 / 64 x reuse 10 / 15 / 20; HalfCheetah did best at fewer optimizer
# steps (256 x 10: 5,338; 128 x 10: 5,561; 256 x 20: 4,034; 128 x 20: 2,316) and Hopper only at 20
# (256 x 20: 3,156, seed 1 3,167; 256 x 10: 1,060, the standing plateau): 256 x 20 beat the whole-episode
# recipe (3,889 / 2,458) on both. Episode credit keeps the earlier recipe. A run's config.json holds every
# resolved value, so its resumes keep it (a run saved before --horizon resumes with whole episodes).
#
# Since the AR(1) factors carry the reuse passes' ratios (f33c2eb), the per-step recipe's noise is an
# AR(1) sequence over each slot's segment at 0.5. Held out at 1M steps (docs/results/locomotion.md,
# "Time-correlated noise with sample reuse"): Hopper-v5 seeds 0-9 2,120 against 1,635 for independent
# noise (runs that leave the alive-bonus plateau: 6 of 10 against 4), HalfCheetah-v5 seeds 0-7 4,156
# against 4,529 (-8%), Walker2d-v5 seeds 0-4 3,137 against 3,181. --correlation 0 keeps independent noise
# (HalfCheetah-like tasks, or --minibatches, which needs it).
# PPO's gamma 0.99 with GAE 0.95 on top, held out (docs/results/locomotion.md, "PPO's discount and GAE on
# the AR(1) defaults"): HalfCheetah +25%, Hopper -48% (four of six runs never learned to stand); GAE 0.95
# alone +13% / -27%. With --correlation 0 as well: HalfCheetah seeds 2-7 5,328, Hopper seeds 0-3 1,200
# against 2,046. The zoo PPO's HalfCheetah pair (gamma 0.98, GAE 0.92) with --correlation 0: HalfCheetah
# seeds 2-7 5,607 (89% of PPO), Hopper and Walker2d never walk (583-594, 957-1,463): the setting the
# README recommends for HalfCheetah-like tasks, no default.
# The critic is 256-256 (PPO's value network on HalfCheetah) fitted with 10 passes over each update's steps,
# where StateValue's own 64-64 with 5 passes was the default until 2026-12-07 (docs/results/locomotion.md,
# "A wider critic, fitted longer"). Chosen on HalfCheetah-v5 and Hopper-v5: tuning seeds HalfCheetah 0-1
# 4,400 against 4,366, Hopper 0-3 2,674 against 2,046; held out, HalfCheetah seeds 2-7 4,245 against 4,086,
# Hopper seeds 4-9 2,700 against 2,169 (runs that hop, over seeds 0-9: 8 of 10 against 6); Walker2d-v5,
# never tuned on, seeds 0-9 3,223 against 3,272 (7 seeds up; seeds 2 and 4 lower by 1,570-1,850). A better
# value estimate lowers the variance of the long-horizon advantages without shortening the horizon.
# The policy is 256-256 (the zoo PPO's on HalfCheetah) at Adam's step 0.001, where 64-64 at the preset's 0.003
# was the default until 9ad1a4b (docs/results/locomotion.md, "`bbopt train`'s defaults since 9ad1a4b"): tuning
# seeds HalfCheetah 4,931 against 4,400, Hopper 2,895 against 2,674; held out, HalfCheetah seeds 2-7 4,398
# against 4,245, Hopper seeds 4-9 2,985 against 2,700 (every run of ten hops), Walker2d-v5 seeds 0-4 3,429
# against 2,837. Episode credit keeps 64-64; "lr": None there is the solver's preset step.
# The critic is fitted on the costs-to-go: lambda-returns (--critic-target lambda_return, PPO's target) gained on
# the tuning seeds (HalfCheetah 5,034 against 4,931, Hopper 3,218 against 2,895) and not held out (HalfCheetah
# seeds 2-7 4,579 against 4,398, Hopper 4-9 2,790 against 2,985, Walker2d 0-4 3,327 against 3,429).
RECIPES = {
    "to_go": {"population": 16, "discount": 0.995, "critic": "state_value", "gae_lambda": 0.98, "reuse": 20,
              "horizon": 256, "lr_schedule": "kl", "correlation": 0.5, "critic_hidden": (256, 256),
              "critic_epochs": 10, "critic_target": "to_go", "hidden": (256, 256), "lr": 0.001},
    "episode": {"population": 64, "discount": 1.0, "critic": "none", "gae_lambda": 1.0, "reuse": 1, "horizon": 0,
                "lr_schedule": "constant", "correlation": 0.0, "hidden": (64, 64), "lr": None},
}  # fmt: skip
_TO_GO_CRITIC = ",".join(map(str, RECIPES["to_go"]["critic_hidden"]))  # as --critic-hidden takes it
_TO_GO_HIDDEN = ",".join(map(str, RECIPES["to_go"]["hidden"]))  # as --hidden takes it
_EPISODE_HIDDEN = ",".join(map(str, RECIPES["episode"]["hidden"]))
# Options added after runs were saved: a config.json without them had them off (and population 64).
BEFORE_THE_OPTION = {"credit": "episode", "discount": 1.0, "critic": "none", "gae_lambda": 1.0, "correlation": 0.0,
                     "reuse": 1, "horizon": 0, "lr_schedule": "constant"}  # fmt: skip
# A config.json with a critic saved before --critic-hidden and --critic-epochs (990a80b) has no widths:
# its critic was StateValue's own of then, 64-64 fitted with 5 passes (the per-step recipe's is wider now).
# One saved before --critic-target regressed its critic on the costs-to-go.
BEFORE_THE_CRITIC_OPTIONS = {"critic_hidden": [64, 64], "critic_epochs": 5, "critic_target": "to_go"}


def _option(default=None, *, help: str, type=None, choices=None):
    """A `RunConfig` field and its ``bbopt train`` option: ``help``, the argparse ``type`` and
    ``choices`` (a callable, read when the parser is built: solvers registered later count)."""
    return field(default=default, metadata=_meta(help, type, choices))


def _meta(help: str, type=None, choices=None) -> dict:
    return {"help": help, "type": type, "choices": choices}


RENAMED = {"evaluator": "pool"}  # RunConfig fields renamed: a run's config.json may hold the old name


@dataclass
class RunConfig:
    """One ``bbopt train`` run; each field is also its command-line option (``--lr-schedule``
    for ``lr_schedule``), built from this class by `bbopt.cli`."""

    env: str = _option("HalfCheetah-v5", help="a Gymnasium id (default HalfCheetah-v5)")
    solver: str = _option("ovlr", help="default ovlr; param_es: parameter-space ES (the baseline)",
                          type=canonical, choices=lambda: bbopt.presets.names("episodes"))  # fmt: skip
    population: int | None = _option(help="episodes per update (even; default 16 with per-step credit, else 64)",
                                     type=positive_int)  # fmt: skip
    env_steps: int = _option(2_000_000, type=step_count,
                             help="total env steps, e.g. 2e6 (default 2e6; with --resume: a new total, else the "
                                  "run's own)")  # fmt: skip
    sigma: float | None = _option(help="noise scale (default per solver)", type=float)  # None: the preset's
    lr: float | None = _option(help=f"Adam's step (default {RECIPES['to_go']['lr']} with --credit to_go, else per "
                                    "solver)", type=float)  # fmt: skip
    sigma_final: float | None = _option(help="sigma falls in equal steps from --sigma to this over --sigma-decay env "
                                             "steps, then stays (segments only: --horizon; default: no schedule)",
                                        type=float)  # fmt: skip
    sigma_decay: int = _option(0, type=steps_or_zero,
                               help="with --sigma-final: env steps over which sigma falls, counted after any "
                                    "--critic-warmup, e.g. 2e5 (default 0: the whole run)")  # fmt: skip
    hidden: list[int] | None = field(default=None, metadata=_meta(
        f"the policy's hidden widths (default {_TO_GO_HIDDEN} with --credit to_go, else {_EPISODE_HIDDEN}; '' for a "
        "linear policy)", widths))  # fmt: skip
    pool: str = _option("auto", help="env pool: auto (default): worker processes on 2+ CPUs, else serial",
                        choices=lambda: ["auto", "serial", "process", "ray"])  # fmt: skip
    workers: int | None = _option(help="worker processes / Ray actors (default: CPU count)", type=positive_int)
    address: str | None = _option(help="Ray cluster address (default: start a local one)")
    lr_schedule: str | None = _option(help="kl (default with --reuse): the step adapts to each update's mean KL "
                                           "(--lr-kl), never past --lr; constant (default without --reuse); linear: "
                                           "Adam's step decays to 0 at --env-steps",
                                      choices=lambda: list(LR_SCHEDULES))  # fmt: skip
    lr_kl: float | None = _option(help=f"with --lr-schedule kl: the mean KL per update the step aims at (default "
                                       f"{LR_KL})", type=float)  # fmt: skip
    lr_decay_after: int = _option(0, type=steps_or_zero,
                                  help="with --lr-schedule linear: env steps at the full step before the decay "
                                       "starts, e.g. 1e6 (default 0)")  # fmt: skip
    credit: str | None = _option(help="to_go: each step credited with the cost still to come (default for OVLR and "
                                      "ES); episode: every step with its episode's loss (default for CEM, param_es)",
                                 choices=lambda: ["episode", "to_go"])  # fmt: skip
    discount: float | None = _option(help="with --credit to_go: gamma of the costs-to-go, in (0, 1] (default 0.995; "
                                          "below 1 later costs count less: lower variance, biased)",
                                     type=float)  # fmt: skip
    critic: str | None = _option(help="state_value (default with --credit to_go): subtract a learned V(s, t) from "
                                      "each step's cost-to-go; none",
                                 choices=lambda: ["none", "state_value"])  # fmt: skip
    critic_hidden: list[int] | None = field(default=None, metadata=_meta(
        f"with --critic: the value network's hidden widths (default {_TO_GO_CRITIC})", widths))  # fmt: skip
    critic_epochs: int | None = _option(help="with --critic: passes over each update's steps when the value network "
                                             f"is fitted (default {RECIPES['to_go']['critic_epochs']})",
                                        type=positive_int)  # fmt: skip
    critic_target: str | None = _option(help="with --critic: what the value network is regressed on: to_go, the "
                                             "discounted costs-to-go; lambda_return, each step's GAE advantage plus "
                                             f"its value (PPO's) (default {RECIPES['to_go']['critic_target']})",
                                        choices=lambda: list(TARGETS))  # fmt: skip
    gae_lambda: float | None = _option(help="with --critic: GAE(lambda) advantages (default 0.98; 1: cost-to-go minus "
                                            "V, unbiased; below 1 trades bias for variance)", type=float)  # fmt: skip
    correlation: float | None = _option(help="time-correlated exploration: AR(1) coefficient of each episode's "
                                             "(or segment's) noise over its steps, in [0, 1) (OVLR, ES; default 0.5 "
                                             "with --credit to_go, else 0; 0: independent noise)",
                                        type=float)  # fmt: skip
    reuse: int | None = _option(help="optimizer steps per population on its recorded steps, the later ones "
                                     "weighted by PPO-clipped likelihood ratios, each step's AR(1) factor's under "
                                     "--correlation (default 20 with --credit to_go, else 1: no reuse)",
                                type=positive_int)  # fmt: skip
    clip: float = _option(0.2, help="with --reuse: PPO's clip of the likelihood ratios (default 0.2)", type=float)
    minibatches: int = _option(1, help="with --reuse: optimizer steps per later pass, one per part of a random split "
                                       "of the recorded steps (default 1)", type=positive_int)  # fmt: skip
    target_kl: float = _option(0.0, help="with --reuse: stop a population's later passes once the policy's mean KL "
                                         "divergence from the one that acted passes this (default 0: never)",
                               type=float)  # fmt: skip
    max_kl: float = _option(0.0, help="with --reuse: after the passes, halve the update until the policy's mean KL "
                                      "divergence from the one that acted is at most this (a backtracking line "
                                      "search; default 0: none)", type=float)  # fmt: skip
    horizon: int | None = _option(help="with --critic: steps per env slot per update, whatever episode each is in "
                                       "(PPO's rollouts; the unfinished ends closed with the critic's value; "
                                       "default 256 with the critic, else 0); 0: whole episodes",
                                  type=count)  # fmt: skip
    critic_warmup: int = _option(0, type=steps_or_zero,
                                 help="with --critic: env steps at the start during which only the critic learns "
                                      "and the policy stays put, e.g. 1e5 (default 0)")  # fmt: skip
    reward_offset: float = _option(0.0, help="added to every step's reward in what the solver is told, the logged "
                                             "returns and evaluations left as the env's: ARS's alive_bonus_offset, "
                                             "e.g. -1 cancels Hopper's and Walker2d's alive bonus (default 0)",
                                   type=float)  # fmt: skip
    eval_every: int = _option(10, help="updates between noiseless evaluations (default 10; 0: none)", type=count)
    eval_episodes: int = _option(5, help="episodes per evaluation (default 5; 0: none)", type=count)
    checkpoint_every: int = _option(10, help="updates between checkpoints (default 10; 0: only at the end)",
                                    type=count)  # fmt: skip
    seed: int = _option(0, help="default 0", type=count)
    threads: int | None = _option(help="torch threads for every session of the run (default: the current count; a "
                                       "resume uses the run's own, so that it continues bit for bit)",
                                  type=positive_int)  # fmt: skip

    def __post_init__(self):
        self.solver = canonical(self.solver)  # an old name (pes) still resumes its runs, warned
        if self.solver not in bbopt.presets.names("episodes"):
            raise ValueError(f"Invalid solver: {self.solver!r} (expected one of {bbopt.presets.names('episodes')})")
        load_problems()  # the problem packages' ids are registered ids too
        if not isinstance(self.env, str) or self.env not in gym.registry:
            raise ValueError(f"Invalid env: {self.env!r} (not a registered Gymnasium id; e.g. HalfCheetah-v5)")
        preset = bbopt.presets.get(self.solver, "episodes")
        self.sigma = check_float(preset.sigma if self.sigma is None else self.sigma, "sigma", above=0)
        if self.credit is None:
            self.credit = "to_go" if getattr(SOLVERS[self.solver], "step_credit", False) else "episode"
        if self.credit not in RECIPES:
            raise ValueError(f"Invalid credit: {self.credit!r} (expected 'episode' or 'to_go')")
        recipe = RECIPES[self.credit]
        lr = (preset.lr if recipe["lr"] is None else recipe["lr"]) if self.lr is None else self.lr
        self.lr = check_float(lr, "lr", above=0)
        self.hidden = list(recipe["hidden"]) if self.hidden is None else self.hidden
        self.population = recipe["population"] if self.population is None else self.population
        check_int(self.population, "population", minimum=2, even=True)
        self.discount = check_float(recipe["discount"] if self.discount is None else self.discount, "discount",
                                    above=0.0, at_most=1.0)  # fmt: skip
        if self.discount != 1.0 and self.credit != "to_go":
            raise ValueError("Invalid discount: it discounts per-step credit (add --credit to_go)")
        self.critic = recipe["critic"] if self.critic is None else self.critic
        if self.critic not in ("none", "state_value"):
            raise ValueError(f"Invalid critic: {self.critic!r} (expected 'none' or 'state_value')")
        if self.critic != "none" and self.credit != "to_go":
            raise ValueError("Invalid critic: a state-value baseline acts on per-step credit (add --credit to_go)")
        if self.critic == "none":
            for name in ("critic_hidden", "critic_epochs", "critic_target"):
                if getattr(self, name) is not None:
                    raise ValueError(f"Invalid {name}: it shapes the critic (add --critic state_value)")
        else:
            hidden = recipe["critic_hidden"] if self.critic_hidden is None else self.critic_hidden
            self.critic_hidden = [check_int(width, "critic_hidden width", minimum=1) for width in hidden]
            epochs = recipe["critic_epochs"] if self.critic_epochs is None else self.critic_epochs
            self.critic_epochs = check_int(epochs, "critic_epochs", minimum=1)
            target = recipe["critic_target"] if self.critic_target is None else self.critic_target
            self.critic_target = check_choice(target, "critic_target", TARGETS)
        if self.gae_lambda is None:
            self.gae_lambda = recipe["gae_lambda"] if self.critic != "none" else 1.0
        self.gae_lambda = check_float(self.gae_lambda, "gae_lambda", at_least=0.0, at_most=1.0)
        if self.gae_lambda != 1.0 and self.critic == "none":
            raise ValueError("Invalid gae_lambda: GAE needs a critic (add --critic state_value)")
        if self.correlation is None:
            self.correlation = recipe["correlation"]
        self.correlation = check_float(self.correlation, "correlation", at_least=0.0, below=1.0)
        self.reuse = recipe["reuse"] if self.reuse is None else self.reuse
        self.reuse = check_int(self.reuse, "reuse", minimum=1)
        self.clip = check_float(self.clip, "clip", above=0.0)
        self.minibatches = check_int(self.minibatches, "minibatches", minimum=1)
        if self.minibatches > 1 and self.reuse == 1:
            raise ValueError("Invalid minibatches: they split the passes of --reuse (add --reuse 2 or more)")
        if self.minibatches > 1 and self.correlation:
            raise ValueError(f"Invalid minibatches: under AR(1) noise (correlation {self.correlation}) each step's "
                             "likelihood ratio reads the step before it, so every pass takes all recorded steps "
                             "(--minibatches 1, or --correlation 0 for independent noise)")  # fmt: skip
        self.target_kl = check_float(self.target_kl, "target_kl", at_least=0.0)
        if self.target_kl and self.reuse == 1:
            raise ValueError("Invalid target_kl: it stops the later passes of --reuse (add --reuse 2 or more)")
        self.max_kl = check_float(self.max_kl, "max_kl", at_least=0.0)
        if self.max_kl and self.reuse == 1:
            raise ValueError("Invalid max_kl: it bounds the update of --reuse's passes (add --reuse 2 or more)")
        if self.horizon is None:
            self.horizon = recipe["horizon"] if self.critic != "none" else 0
        self.horizon = check_int(self.horizon, "horizon", minimum=0)
        if self.horizon and self.critic == "none":
            raise ValueError("Invalid horizon: segments of episodes need the critic (--critic state_value) to close "
                             "their unfinished ends (--horizon 0: whole episodes)")  # fmt: skip
        self.env_steps = check_int(self.env_steps, "env_steps", minimum=1)
        self.critic_warmup = check_int(self.critic_warmup, "critic_warmup", minimum=0)
        if self.critic_warmup and self.critic == "none":
            raise ValueError("Invalid critic_warmup: it trains the critic before the policy moves (add --critic "
                             "state_value)")  # fmt: skip
        if self.critic_warmup >= self.env_steps:
            raise ValueError(f"Invalid critic_warmup: {self.critic_warmup} env steps of warm-up in a run of "
                             f"{self.env_steps} would never move the policy")  # fmt: skip
        if self.sigma_final is not None:
            self.sigma_final = check_float(self.sigma_final, "sigma_final", above=0.0)
            if not self.horizon:
                raise ValueError("Invalid sigma_final: the schedule counts updates of a fixed number of env "
                                 "steps, which segments of running episodes make (--horizon, with --critic "
                                 "state_value)")  # fmt: skip
        self.sigma_decay = check_int(self.sigma_decay, "sigma_decay", minimum=0)
        if self.sigma_decay and self.sigma_final is None:
            raise ValueError("Invalid sigma_decay: it is the length of the --sigma-final schedule (add --sigma-final)")
        if self.lr_schedule is None:  # the adaptive step needs the KL the reuse passes measure
            self.lr_schedule = recipe["lr_schedule"] if self.reuse > 1 else "constant"
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Invalid lr_schedule: {self.lr_schedule!r} (expected one of {LR_SCHEDULES})")
        if self.lr_kl is not None and self.lr_schedule != "kl":
            raise ValueError("Invalid lr_kl: it is the KL the adaptive step aims at (add --lr-schedule kl)")
        if self.lr_schedule == "kl":
            self.lr_kl = check_float(LR_KL if self.lr_kl is None else self.lr_kl, "lr_kl", above=0.0)
            if self.reuse == 1:
                raise ValueError("Invalid lr_schedule: kl adapts the step to the KL the passes of --reuse measure "
                                 "(add --reuse 2 or more)")  # fmt: skip
        self.lr_decay_after = check_int(self.lr_decay_after, "lr_decay_after", minimum=0)
        if self.lr_decay_after and self.lr_schedule != "linear":
            raise ValueError("Invalid lr_decay_after: it delays the linear schedule (add --lr-schedule linear)")
        self.reward_offset = check_float(self.reward_offset, "reward_offset")
        self.hidden = [check_int(width, "hidden width", minimum=1) for width in self.hidden]
        for name in ("eval_every", "eval_episodes", "checkpoint_every", "seed"):
            check_int(getattr(self, name), name, minimum=0)
        if self.workers is not None:
            check_int(self.workers, "workers", minimum=1)
        threads = torch.get_num_threads() if self.threads is None else self.threads
        self.threads = check_int(threads, "threads", minimum=1)


def load_config(out: Path, *, doing: str = "No run") -> RunConfig:
    """The settings of the run in ``out``."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{doing} in {out} (config.json missing)")
    try:
        settings = BEFORE_THE_OPTION | renamed_keywords(json.loads(path.read_text()), RENAMED, str(path))
        if settings["critic"] == "state_value":
            settings = BEFORE_THE_CRITIC_OPTIONS | settings
        return RunConfig(**settings)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a run's config ({error})") from None


def build_solver(config: RunConfig, env: gym.Env):
    policy = control_policy(env.observation_space, env.action_space, hidden=config.hidden, seed=config.seed)
    preset = bbopt.presets.get(config.solver, "episodes").replace(sigma=config.sigma, lr=config.lr)
    extra = {"correlation": config.correlation} if config.correlation else {}  # runs from before keep their solver
    extra |= {"reuse": config.reuse, "clip": config.clip} if config.reuse > 1 else {}
    extra |= {"minibatches": config.minibatches} if config.minibatches > 1 else {}
    extra |= {"target_kl": config.target_kl} if config.target_kl else {}
    extra |= {"max_kl": config.max_kl} if config.max_kl else {}
    if config.sigma_final is not None:
        extra["sigma"] = Linear(config.sigma, config.sigma_final, sigma_updates(config))
    return preset.build(config.solver, policy, episodes=config.population, seed=config.seed, **extra)


def sigma_updates(config: RunConfig) -> int:
    """The updates over which ``--sigma-final``'s schedule falls: ``--sigma-decay`` env steps (0:
    the run's, less its critic warm-up) in updates of ``population x horizon`` steps; the
    warm-up's updates leave sigma as it is. A resume to a new ``--env-steps`` stretches a
    whole-run schedule over the new total from the update it had reached."""
    steps = config.sigma_decay or config.env_steps - config.critic_warmup
    return max(1, math.ceil(steps / (config.population * config.horizon)))


def make_trainer(config: RunConfig, out: Path, *, step_timeout: float | None = STEP_TIMEOUT) -> Trainer:
    """The Trainer of a run: env, policy, solver and pool from ``config``; checkpoints in ``out``;
    ``step_timeout``: the pool's deadline per step call (not part of the run: any session may
    choose its own)."""
    env = make_env(config.env)
    solver = build_solver(config, env)
    env.close()
    options = {"address": config.address} if config.pool == "ray" and config.address else {}
    options["step_timeout"] = step_timeout
    return Trainer(config.env, solver, pool=config.pool, workers=config.workers, eval_every=config.eval_every,
                   eval_episodes=config.eval_episodes, checkpoint=out / "checkpoint.pt",
                   checkpoint_every=config.checkpoint_every, seed=config.seed, pool_options=options,
                   lr_schedule=config.lr_schedule, lr_decay_after=config.lr_decay_after, lr_kl=config.lr_kl,
                   credit=config.credit,
                   discount=config.discount, critic_warmup=config.critic_warmup,
                   # the critic's own stream: with config.seed itself its first layer would start as the policy's
                   critic=StateValue(hidden=config.critic_hidden, epochs=config.critic_epochs,
                                     gae_lambda=config.gae_lambda, target=config.critic_target,
                                     seed=derive(config.seed, 0))
                   if config.critic == "state_value" else None, horizon=config.horizon or None,
                   reward_offset=config.reward_offset)  # fmt: skip


def train_run(config: RunConfig | None, out: Path, *, resume: bool = False, env_steps: int | None = None,
              progress: bool = True, step_timeout: float | None = STEP_TIMEOUT,
              tensorboard: str | Path | None = None) -> dict:  # fmt: skip
    """Train (or, with ``resume``, continue the run in ``out`` from its checkpoint, optionally
    to a new ``env_steps`` total) and write the run directory, holding its lock throughout.
    ``step_timeout``: seconds a pool worker may take to answer (see ``bbopt.rollout.pools``).
    ``tensorboard``: a directory for each update's scalars at its env steps (`bbopt.tracking`;
    a resume hides what the earlier session logged past the checkpoint)."""
    out = Path(out)
    if resume and not (out / "config.json").is_file():
        load_config(out, doing="No run to resume")  # raises, before the directory is created
    with RunLock(out), _threads(config.threads if config is not None else load_config(out).threads):
        return _train_locked(config, out, resume=resume, env_steps=env_steps, progress=progress,
                             step_timeout=step_timeout, tensorboard=tensorboard)  # fmt: skip


def _train_locked(config: RunConfig | None, out: Path, *, resume: bool, env_steps: int | None, progress: bool,
                  step_timeout: float | None, tensorboard: str | Path | None):  # fmt: skip
    if resume:
        config = load_config(out, doing="No run to resume")
    elif (out / "checkpoint.pt").exists() or (out / "checkpoint.prev.pt").exists():
        raise FileExistsError(f"{out} already holds a run: resume it with --resume, or choose another --out")
    if env_steps is not None:
        config.env_steps = check_int(env_steps, "env_steps", minimum=1)
    remove_stale_temporaries(out)  # left by a process killed mid-write (we hold the lock: none is live)
    write_json(out / "config.json", asdict(config))
    began = time.perf_counter()
    with make_trainer(config, out, step_timeout=step_timeout) as trainer, contextlib.ExitStack() as stack:
        if resume:
            trainer.resume(out / "checkpoint.pt")
        rewrite_curve(out / "curve.csv", trainer.history)  # rows after the last checkpoint are redone
        purge = trainer.env_steps + 1 if resume else None  # hide what the last session logged past its checkpoint
        tracker = stack.enter_context(tensorboard_or_none(tensorboard, purge_step=purge))
        trainer.train(config.env_steps, progress=progress, curve=out / "curve.csv", tracker=tracker)
        final = trainer.evaluate(max(config.eval_episodes, 1))
        save_checkpoint(trainer.solver.policy.state_dict(), out / "policy.pt", keep_previous=False)
        summary = {"env": config.env, "solver": config.solver, "env_steps": trainer.env_steps,
                   "updates": trainer.updates, "final_eval_return": final, "train_seconds": trainer.seconds,
                   # this process's CPU time in updates, all sessions (None: a run begun before the count)
                   "train_cpu_seconds": None if math.isnan(trainer.cpu_seconds) else trainer.cpu_seconds,
                   "wall_seconds_this_session": time.perf_counter() - began,
                   "env_steps_per_second": trainer.env_steps / max(trainer.seconds, 1e-9),
                   "threads": torch.get_num_threads()}  # fmt: skip
        history = trainer.history
    write_json(out / "summary.json", summary)
    plot_curve({config.solver: history}, out / "curve.png", title=f"{config.env}")
    return summary


@contextlib.contextmanager
def _threads(count: int):
    """Compute with ``count`` intra-op threads inside; the process's setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rewrite_curve(path: Path, history: list[dict]) -> None:
    """The curve of ``history`` (a resumed run's, up to its checkpoint), replacing the file whole
    or not at all: a resume stopped here keeps the curve it had."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CURVE_FIELDS)
    writer.writeheader()
    for record in history:
        writer.writerow({k: ("" if record.get(k) is None else record[k]) for k in CURVE_FIELDS})
    write_text(path, text.getvalue())


def evaluate_run(out: Path, *, episodes: int = 10, seed: int = TEST_EPISODES, video: Path | None = None) -> dict:
    """Replay the saved policy of the run in ``out`` for ``episodes`` noiseless episodes; with
    ``video``, also record the first episode (needs a working GL: set MUJOCO_GL=egl or osmesa
    on a headless machine) as an mp4 (imageio) or gif."""
    out = Path(out)
    config = load_config(out)
    env = make_env(config.env)
    solver = build_solver(config, env)
    solver.policy.load_state_dict(_saved_policy(out, solver))
    policy = solver.policy.eval()
    low, high = env.action_space.low, env.action_space.high
    with torch.no_grad():
        returns = [rollout_return(env, policy, seed + k, low, high) for k in range(episodes)]
    env.close()
    result = {"episodes": episodes, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
              "returns": returns, "video": None}  # fmt: skip
    if video is not None:
        result["video"] = _record(config, policy, seed, Path(video))
    return result


def _saved_policy(out: Path, solver) -> dict:
    """The run's final ``policy.pt`` (verified), else the policy of its latest good checkpoint
    (a warning says why)."""
    try:
        state = load_checkpoint(out / "policy.pt")
        _check_policy_state(state, solver, out / "policy.pt")
        return state
    except (CheckpointError, FileNotFoundError) as error:
        if not (out / "checkpoint.pt").is_file() and not (out / "checkpoint.prev.pt").is_file():
            raise
        reason = error if (out / "policy.pt").exists() else f"no {out / 'policy.pt'} (the run has not finished)"
        warnings.warn(f"{reason}; using the policy of the run's checkpoint", stacklevel=3)
    checkpoint = load_checkpoint(out / "checkpoint.pt", fallback=True)
    try:
        return checkpoint["solver"]["policy"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{out / 'checkpoint.pt'}: not a bbopt train checkpoint") from None


def _check_policy_state(state, solver, path: Path) -> None:
    expected = solver.policy.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        raise CheckpointError(f"{path}: not this run's policy (its entries differ from the policy's)")
    for key, value in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != value.shape:
            raise CheckpointError(f"{path}: {key} does not match the policy (shape or type)")


def _record(config: RunConfig, policy, seed: int, path: Path) -> str:
    try:
        env = make_env(config.env, render_mode="rgb_array")
        frames = []
        with torch.no_grad():
            rollout_return(env, policy, seed, env.action_space.low, env.action_space.high,
                           render=lambda: frames.append(env.render()))  # fmt: skip
        env.close()
    except Exception as error:  # no GL context, no renderer: say so, keep the returns
        return f"not recorded: rendering failed ({type(error).__name__}: {error}); set MUJOCO_GL=egl or osmesa"
    return str(write_video(frames, path, fps=int(env.metadata.get("render_fps", 30))))


def plot_curve(histories: dict[str, list[dict]], path: Path, *, title: str = "") -> None:
    """Return against env steps: the population mean (thin) and the noiseless evaluation
    (markers) per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    for index, (label, history) in enumerate(histories.items()):
        color = f"C{index % 10}"
        steps = [r["env_steps"] for r in history]
        axis.plot(steps, [r["return_mean"] for r in history], color=color, alpha=0.35, linewidth=1)
        evaluated = [(r["env_steps"], r["eval_return"]) for r in history if r.get("eval_return") is not None]
        if evaluated:
            axis.plot(*zip(*evaluated, strict=True), color=color, marker="o", markersize=3, label=label)
        else:
            axis.plot([], [], color=color, label=label)
    axis.set_xlabel("env steps")
    axis.set_ylabel("return (line: population mean; dots: noiseless policy)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
