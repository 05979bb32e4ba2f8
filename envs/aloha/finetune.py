"""Fine-tuning an imitation policy through the ALOHA simulator with an episode-mode solver.

The solver perturbs the chunk policy's whole output; the env executes the temporal ensemble of
the chunks (`ChunkedActions`), so the policy is trained exactly as it is evaluated. The loss of
an episode is ``-(highest stage reached + 0.5 * progress)``: ``progress`` in [0, 1] is a
tie-breaker between episodes that reached the same stage, the best closeness over the episode
(while at that stage) to what the next stage needs, ``max(0, 1 - distance / 0.4 m)``:

==============  =====================================  ======================================
stage reached   transfer cube: next needs              insertion: next needs
==============  =====================================  ======================================
0               right pinch point at the cube          each pinch point at its object (mean)
1               the cube lifted (height / 0.1 m)       both objects lifted (lower / 0.1 m)
2, 3            left pinch point at the cube           peg tip at the pin: peg center at the
                                                       socket's center + 0.10 m along its axis
4 (success)     progress = 1                           progress = 1
==============  =====================================  ======================================

A stage always outweighs any progress (0.5 < 1). `StageShaping` pays the increments of that
value as rewards, so an episode's return is what its value gained over its start (the start's
progress; for an episode started from a demonstration's state, `bbopt.envs.aloha.starts`, also
the stage it starts in) and per-step credit sees when it rose. `finetune` keeps the weights that
did best on separate validation placements (`bbopt.envs.aloha.selection`: a screen, then a
confirmation of the shortlist on fresh placements).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

import bbopt
from bbopt.arguments import renamed_keywords
from bbopt.envs.aloha.demos import Demos, action_chunks
from bbopt.envs.aloha.env import AlohaStateEnv, Snapshot
from bbopt.envs.aloha.evaluation import ChunkAgent, evaluate_success
from bbopt.envs.aloha.ik import pinch_point
from bbopt.envs.aloha.imitation import ChunkL1
from bbopt.envs.aloha.selection import CONFIRMATION_EPISODES, Selection, unselected
from bbopt.envs.aloha.starts import DemoStarts, demo_states
from bbopt.noise import Tiled
from bbopt.policies.chunking import ChunkMLP
from bbopt.rollout.checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint
from bbopt.rollout.chunking import CHUNK_NOISES, ChunkedActions
from bbopt.rollout.critic import StateValue
from bbopt.rollout.driver import Trainer, check_credit, check_lr_schedule
from bbopt.rollout.imitation import ImitationLoss
from bbopt.rollout.pools import STEP_TIMEOUT, EnvFactory
from bbopt.rollout.runs import rewrite_curve
from bbopt.seeding import derive
from bbopt.tracking import Tracker

__all__ = ["StageShaping", "check_credit_options", "finetune", "finetune_lr_schedule", "finetune_solver",
           "kept_state", "make_finetune_env"]  # fmt: skip
PROGRESS_WEIGHT, REACH = 0.5, 0.4
RENAMED = {"episodes": "population"}  # finetune's old keyword names
_TABLE_Z = {"red_box": 0.02, "red_peg": 0.01, "socket": 0.022}  # object centers resting on the table


def _closeness(distance: float) -> float:
    return max(0.0, 1.0 - distance / REACH)


class StageShaping(gym.Wrapper):
    """Rewards whose sum over an episode is ``max stage + 0.5 * progress`` (see the module);
    ``info["value"]`` holds the value so far."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(base, AlohaStateEnv):
            raise ValueError(f"Invalid env: StageShaping needs an AlohaStateEnv, not {type(base).__name__}")
        self.task, self.physics = base.task, base.physics
        self.best_stage, self.best_progress, self.value = 0, 0.0, 0.0

    def _pinch(self, arm: str) -> np.ndarray:
        name = f"vx300s_{arm}/gripper_link"
        data = self.physics.named.data
        return pinch_point(data.xpos[name], data.xmat[name].reshape(3, 3))

    def _body(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        data = self.physics.named.data
        return data.xpos[name].copy(), data.xmat[name].reshape(3, 3).copy()

    def progress(self, stage: int) -> float:
        """Closeness to what stage ``stage + 1`` needs, in [0, 1]."""
        if stage >= 4:
            return 1.0
        if self.task == "transfer_cube":
            cube, _ = self._body("box")
            if stage == 0:
                return _closeness(np.linalg.norm(self._pinch("right") - cube))
            if stage == 1:
                return min(1.0, max(0.0, cube[2] - _TABLE_Z["red_box"]) / 0.1)
            return _closeness(np.linalg.norm(self._pinch("left") - cube))
        (peg, _), (socket, socket_frame) = self._body("peg"), self._body("socket")
        if stage == 0:
            distances = np.linalg.norm(self._pinch("right") - peg), np.linalg.norm(self._pinch("left") - socket)
            return float(np.mean([_closeness(d) for d in distances]))
        if stage == 1:
            lift = min(peg[2] - _TABLE_Z["red_peg"], socket[2] - _TABLE_Z["socket"])
            return min(1.0, max(0.0, lift) / 0.1)
        return _closeness(np.linalg.norm(peg - (socket + socket_frame @ np.array([0.10, 0.0, 0.0]))))

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        stage = int(info.get("stage", 0))  # a start from a demonstration's state may be past stage 0
        self.best_stage, self.best_progress = stage, self.progress(stage)
        self.value = self.best_stage + PROGRESS_WEIGHT * self.best_progress
        return observation, info | {"value": self.value}

    def step(self, action):
        observation, _, terminated, truncated, info = self.env.step(action)
        stage = int(info["stage"])
        if stage > self.best_stage:
            self.best_stage, self.best_progress = stage, 0.0
        self.best_progress = max(self.best_progress, self.progress(self.best_stage))
        value = self.best_stage + PROGRESS_WEIGHT * self.best_progress
        reward, self.value = value - self.value, value
        return observation, reward, terminated, truncated, info | {"value": value}


def make_finetune_env(task: str = "transfer_cube", chunk: int = 10, decay: float = 0.1,
                      starts: list[list[Snapshot]] | None = None, start_fraction: float = 0.0) -> gym.Env:  # fmt: skip
    """``StageShaping(ChunkedActions(AlohaStateEnv(task), chunk, decay))``, with ``starts``
    (`demo_states`) a ``start_fraction`` of the episodes starting from a demonstration's state
    (`DemoStarts` around the `AlohaStateEnv`): a top-level factory, so worker processes can build it."""
    env = AlohaStateEnv(task)
    if starts is not None:
        env = DemoStarts(env, starts, start_fraction)
    return StageShaping(ChunkedActions(env, chunk, decay=decay))


# Fine-tuning's defaults: the setting of the 10-demonstration results (README, "ALOHA from 10
# demonstrations"; chosen on insertion, the seed-0 start): AR(1) noise over each episode's steps at
# 0.05 action-std, Adam 1e-4. Independent per-step noise at the earlier 0.02 / 3e-5 barely moved
# a policy: the temporal ensemble of 10 chunks averages it away.
SIGMA, LR, CORRELATION = 0.05, 1e-4, 0.95
# Sample reuse (README, "Reuse with the KL-adaptive step"): 10 clipped-ratio passes over each
# population where the solver's sigma is fixed (OVLR, ES), with the KL-adaptive step aimed at a
# mean KL of 0.1 per update (chosen on the seed-0 starts of both tasks, 300k steps): ten passes
# ran a solved transfer-cube policy down (validation 100% -> 15%) at a constant step; the
# adaptive one shrank the step after the update that moved the policy by a KL of 43 and the run
# stayed at 100%. The target is 5x `bbopt train`'s: a fine-tuning update at sigma 0.05 action-std
# moves the AR(1) factors by a KL of 0.04-0.07 (insertion) when all goes well.
REUSE, LR_KL = 10, 0.1
# The bound on each update's KL with reuse (`bbopt.Solver`'s ``max_kl``: a backtracking line search
# after the passes): twice `LR_KL`, where the adaptive step starts shrinking. The adaptive step acts
# only after an update: the first update of a run, whose Adam step is about ``lr`` in every
# parameter, moved insertion's starts by a KL of 0.8-5 under ES (README, "Where the guard acted").
MAX_KL = 2 * LR_KL


def finetune_solver(policy: ChunkMLP, method: str, *, population: int = 32, sigma: float = SIGMA, lr: float = LR,
                    correlation: float | None = None, reuse: int | None = None, chunk_noise: str = "independent",
                    max_kl: float | None = None, seed: int = 0):  # fmt: skip
    """The episode-mode solver `finetune` trains ``policy`` with: ``method``'s preset at noise
    ``sigma`` times each action's std over the demos and Adam at ``lr`` (refuses what the solver
    refuses, e.g. AR(1) noise for a solver that learns its sigma). ``correlation=None``: AR(1)
    noise at `CORRELATION` where the solver takes it (OVLR, ES; with ``reuse`` too, whose passes
    then weight each step's AR(1) factor), else independent noise (CEM). ``reuse=None``: `REUSE`
    passes per population where the solver's sigma is fixed (OVLR, ES) and the noise is not
    shared over the chunk, else 1 (CEM learns its sigma, which the likelihood ratios exclude).
    ``max_kl=None``: `MAX_KL` with reuse, else none (0: none; the solver's line search).
    ``chunk_noise="shared"``: each step's draw of one action's worth of noise is added to every
    step of the chunk (`bbopt.noise.Tiled`), so the executed temporal ensemble moves by nearly the
    whole sigma under AR(1) noise; the policy then moves only along the directions explored (see `Tiled`). It needs a
    solver whose sigma is fixed (OVLR, ES: not CEM) and no ``reuse`` (``None`` or 1)."""
    sigma = bbopt.checks.check_float(sigma, "sigma", above=0.0)  # as given: not a tensor of every dimension
    lr = bbopt.checks.check_float(lr, "lr", above=0.0)  # 0 would run a whole fine-tuning that moves nothing
    if chunk_noise not in CHUNK_NOISES:
        raise ValueError(f"Invalid chunk_noise: {chunk_noise!r} (expected one of {CHUNK_NOISES})")
    if correlation is None:
        try:
            return finetune_solver(policy, method, population=population, sigma=sigma, lr=lr,
                                   correlation=CORRELATION, reuse=reuse, chunk_noise=chunk_noise,
                                   max_kl=max_kl, seed=seed)  # fmt: skip
        except ValueError as error:
            if not str(error).startswith("Invalid correlation"):
                raise
            correlation = 0.0
    scale = sigma * policy.action_std.repeat(policy.chunk)
    preset = bbopt.presets.get(method, "episodes").replace(sigma=scale, lr=lr)  # this task's scale, every solver
    learns = preset.build(method, policy, episodes=population).noise.learns  # a model given would fix the sigma
    if reuse is None:
        reuse = 1 if learns or chunk_noise == "shared" else REUSE
    extra = {"correlation": correlation} if correlation else {}
    extra |= {"reuse": reuse} if reuse != 1 else {}
    if max_kl is None:
        max_kl = MAX_KL if reuse > 1 else 0.0
    max_kl = bbopt.checks.check_float(max_kl, "max_kl", at_least=0.0)
    extra |= {"max_kl": max_kl} if max_kl else {}
    if chunk_noise == "shared":
        if reuse != 1:
            raise ValueError(f"Invalid chunk_noise: 'shared' with reuse {reuse} (the reused likelihood ratios need "
                             "independent entries: reuse=1)")  # fmt: skip
        if learns:
            raise ValueError(f"Invalid chunk_noise: 'shared' keeps sigma fixed, and {method} learns its sigma "
                             "(chunk_noise='independent', or ovlr / es)")  # fmt: skip
        preset = preset.replace(noise=lambda scale: Tiled(scale, repeats=policy.chunk))
    return preset.build(method, policy, episodes=population, seed=seed, **extra)


def finetune_lr_schedule(reuse: int, lr_schedule: str | None = None,
                         lr_kl: float | None = None) -> tuple[str, float | None]:  # fmt: skip
    """`finetune`'s step schedule for a solver with ``reuse`` passes: ``lr_schedule`` as given, by
    default the KL-adaptive step with reuse and a constant step without; ``lr_kl`` as given, by
    default `LR_KL` under "kl". Refuses what the Trainer refuses (`check_lr_schedule`)."""
    if lr_schedule is None:
        lr_schedule = "kl" if reuse > 1 else "constant"
    if lr_schedule == "kl" and lr_kl is None:
        lr_kl = LR_KL
    check_lr_schedule(lr_schedule, lr_kl=lr_kl, reuse=reuse)
    return lr_schedule, lr_kl


def check_credit_options(credit: str, critic: str, *, discount: float = 1.0, gae_lambda: float = 1.0,
                         horizon: int | None = None, critic_warmup: int = 0,
                         env_steps: int | None = None) -> None:  # fmt: skip
    """Refuse a combination of `finetune`'s credit options before the first validation screen (or,
    in the benchmark, before the imitation runs): the Trainer's own checks (`check_credit`, with
    the run's ``env_steps`` for the warm-up), the critic's name and its GAE lambda."""
    if critic not in ("none", "state_value"):
        raise ValueError(f"Invalid critic: {critic!r} (expected 'none' or 'state_value')")
    check_credit(credit, critic=critic != "none", discount=discount, horizon=horizon, critic_warmup=critic_warmup,
                 env_steps=env_steps)  # fmt: skip
    gae_lambda = bbopt.checks.check_float(gae_lambda, "gae_lambda", at_least=0.0, at_most=1.0)
    if gae_lambda != 1.0 and critic == "none":
        raise ValueError("Invalid gae_lambda: GAE needs a critic (critic='state_value')")


SAVE_EVERY = 10  # updates between a checkpointed run's saves when it validates nothing


def kept_state(checkpoint) -> dict | None:
    """The state a fine-tuning run kept in ``checkpoint`` (the previous one if the latest is
    missing or corrupt), None if it kept none; a file that is not a fine-tuning run's state is refused."""
    if not checkpoint_exists(checkpoint):
        return None
    state = load_checkpoint(checkpoint, fallback=True)
    fits = isinstance(state, dict) and isinstance(state.get("settings"), dict)
    if not (fits and isinstance(state.get("trainer"), dict) and isinstance(state["trainer"].get("env_steps"), int)):
        raise ValueError(f"{checkpoint}: not a fine-tuning run's checkpoint")
    return state


def _resumed_state(checkpoint, settings: dict) -> dict | None:
    """The state a run kept in ``checkpoint`` (None if it kept none), refused if its settings differ."""
    if checkpoint is None:
        raise ValueError("Invalid resume: it continues from a checkpoint file; give checkpoint=")
    state = kept_state(checkpoint)
    if state is None:
        return None
    kept = state["settings"]
    differ = {k: (kept.get(k), v) for k, v in settings.items() if kept.get(k) != v}
    if differ:
        shown = ", ".join(f"{k} {was!r} (now {now!r})" for k, (was, now) in sorted(differ.items()))
        raise ValueError(f"{checkpoint} holds a run of other settings: {shown}; resume it with its own settings, or "
                         "start a new run elsewhere")  # fmt: skip
    return state


def finetune(policy: ChunkMLP, task: str, *, method: str = "ovlr", env_steps: int = 300_000,
             population: int | None = None, sigma: float = SIGMA, lr: float = LR, decay: float = 0.1,
             credit: str = "episode", critic: str = "none", discount: float = 1.0, gae_lambda: float = 1.0,
             horizon: int | None = None, critic_warmup: int = 0, correlation: float | None = None,
             reuse: int | None = None, chunk_noise: str = "independent", lr_schedule: str | None = None,
             lr_kl: float | None = None, max_kl: float | None = None, demos: Demos | None = None,
             imitation_weight: float = 1.0,
             imitation_decay: float = 1.0, demo_starts: float = 0.0, seed: int = 0,
             validate_every: int = 10, validation_episodes: int = 20,
             confirmation_episodes: int = CONFIRMATION_EPISODES, pool: str = "serial",
             workers: int | None = None, step_timeout: float | None = STEP_TIMEOUT, curve=None, checkpoint=None,
             resume: bool = False, progress: bool = True, tracker: Tracker | None = None,
             **renamed) -> tuple[ChunkMLP, list[dict], dict]:  # fmt: skip
    """Fine-tune ``policy`` in place through the simulator with ``method`` (OVLR, ES or CEM in
    episode mode, ``population`` episodes per update (default 32), Adam at ``lr``) for
    ``env_steps`` steps (``episodes=`` is the old name of ``population``, kept one release with a
    FutureWarning).

    The noise is per action dimension, ``sigma`` times the action's std over the demos, an AR(1)
    sequence over each episode's steps (``correlation``, default `CORRELATION` where the solver
    takes it, see `finetune_solver`); ``chunk_noise="shared"`` repeats each step's draw over the
    chunk (`finetune_solver`). Training
    placements come from the Trainer's seed stream (31-bit seeds drawn from ``seed``). The
    Trainer's options apply as in ``bbopt train``: ``credit="to_go"`` with ``critic="state_value"``
    (a `StateValue` baseline; ``discount`` gamma of the costs-to-go, ``gae_lambda`` its GAE, and
    ``horizon`` steps per env slot per update instead of whole episodes; ``critic_warmup`` env
    steps at the start fit only the critic, the policy unchanged), ``correlation`` (AR(1)
    noise over each episode's steps), ``reuse`` (clipped-ratio passes per population; default
    `REUSE` where the solver takes it, see `finetune_solver`), ``lr_schedule`` (default "kl" with
    reuse, aimed at ``lr_kl``, default `LR_KL`; "constant" without: `finetune_lr_schedule`), ``max_kl``
    (each update's KL bounded by a line search; default `MAX_KL` with reuse, 0: none).
    ``demos``: mix their imitation loss (the chunk L1 of behaviour cloning, `ChunkL1`, on a
    256-pair minibatch per update) into every update at
    ``imitation_weight * imitation_decay**update`` (`bbopt.rollout.imitation.ImitationLoss`;
    ``imitation_weight=0``: no imitation term), and with ``demo_starts`` > 0 start that fraction
    of the training episodes from their states (`bbopt.envs.aloha.starts`; validation starts
    fresh).
    Every ``validate_every`` updates (and before the first) the noiseless policy runs
    ``validation_episodes`` episodes on placements from ``VALIDATION_SEED`` (apart from the
    demonstration seeds 0, 1, ... and the evaluation seeds from 1,000,000): a screen. At the end
    the start and the 3 best screened weights run ``confirmation_episodes`` episodes on fresh
    placements (``CONFIRMATION_SEED``), and the best there (success, then mean stage; the start
    on ties) is returned: neither a noisy update that loses successes nor weights that were
    lucky on the screen's few placements are kept (`bbopt.envs.aloha.selection`).
    ``confirmation_episodes=0`` keeps the screen's best (the start unless something beat it);
    ``validate_every=0`` keeps the last weights.

    Returns the policy, the Trainer's history (``return_mean`` is the mean shaped value) and the
    selection: ``update`` kept, its ``validation_success`` (screen), the start's,
    ``validation_steps`` (screen and confirmation), ``validation_curve`` (``[env_steps, success,
    mean stage]`` of every screen), ``confirmation`` (``[update, success, mean stage]`` of each
    weights confirmed) and the kept weights' ``confirmation_success``.
    ``tracker`` (`bbopt.tracking`) gets each update's record and each validation's
    ``validation_success`` / ``validation_stage`` at their env steps.

    ``checkpoint`` (a file): the run keeps its state there after each validation (every
    ``validate_every`` updates, or every `SAVE_EVERY` without validation) and at the end of its
    training: the Trainer's (policy, optimizer, generators, critic, imitation term), the
    selection's screens and the run's settings (`bbopt.rollout.checkpoint`: verified, atomic, the
    previous one kept). With ``resume`` a run stopped by Ctrl-C or a kill goes on from it as if
    never stopped (the same history, screens and kept weights to the bit, on the same machine and
    thread count), appending to ``curve`` from there; a checkpoint of other settings is refused
    before anything runs. ``policy`` is then the run's start (the selection's start is the kept one).
    """
    given = renamed | ({} if population is None else {"population": population})
    population = renamed_keywords(given, RENAMED, "finetune").get("population", 32)
    unknown = sorted(set(renamed) - RENAMED.keys())
    if unknown:
        raise TypeError(f"finetune() got unexpected keyword arguments {unknown}")
    methods = bbopt.presets.names("episodes", output_space=True)  # the noise is per action dimension
    if method not in methods:
        raise ValueError(f"Invalid method {method!r}: expected one of {methods}")
    bbopt.checks.check_int(env_steps, "env_steps", minimum=1)
    bbopt.checks.check_int(seed, "seed", minimum=0)
    check_credit_options(credit, critic, discount=discount, gae_lambda=gae_lambda, horizon=horizon,
                         critic_warmup=critic_warmup, env_steps=env_steps)  # fmt: skip
    bbopt.checks.check_int(validate_every, "validate_every", minimum=0)
    selection = None
    if validate_every:

        def run(episodes: int, seed: int) -> dict:
            return evaluate_success(task, ChunkAgent(policy, decay=decay), episodes, seed=seed, progress=False)

        selection = Selection(policy, run, validation_episodes, confirmation_episodes)
    bbopt.checks.check_float(imitation_weight, "imitation_weight", at_least=0.0)
    bbopt.checks.check_float(demo_starts, "demo_starts", at_least=0.0, at_most=1.0)
    if demo_starts and demos is None:
        raise ValueError(f"Invalid demo_starts: {demo_starts} needs demos to start from")
    if demos is not None and demos.task != task:
        raise ValueError(f"Invalid demos: they show {demos.task!r}, the fine-tuning task is {task!r}")
    solver = finetune_solver(policy, method, population=population, sigma=sigma, lr=lr, correlation=correlation,
                             reuse=reuse, chunk_noise=chunk_noise, max_kl=max_kl, seed=seed)  # fmt: skip
    lr_schedule, lr_kl = finetune_lr_schedule(solver.reuse, lr_schedule, lr_kl)
    imitation, env_options = None, (("task", task), ("chunk", policy.chunk), ("decay", decay))
    if demos is not None:
        if imitation_weight:
            inputs, targets = action_chunks(demos, policy.chunk)
            imitation = ImitationLoss(inputs, targets, ChunkL1(policy.action_std, policy.chunk),
                                      weight=imitation_weight, decay=imitation_decay, seed=derive(seed, 2))  # fmt: skip
        if demo_starts:
            env_options += (("starts", demo_states(demos)), ("start_fraction", demo_starts))
    factory = EnvFactory(make_finetune_env, env_options)

    def validate(update: int, env_steps: int) -> None:
        success, stage = selection.screen(update, env_steps)
        if tracker is not None:
            tracker.log({"validation_success": success, "validation_stage": stage}, step=env_steps)

    def after_update(record: dict) -> None:
        if validate_every and record["update"] % validate_every == 0:
            validate(record["update"], record["env_steps"])

    settings = {"task": task, "method": method, "env_steps": env_steps, "population": population, "sigma": sigma,
                "lr": lr, "decay": decay, "credit": credit, "critic": critic, "discount": discount,
                "gae_lambda": gae_lambda, "horizon": horizon, "critic_warmup": critic_warmup,
                "correlation": correlation, "reuse": reuse, "chunk_noise": chunk_noise,
                "lr_schedule": lr_schedule, "lr_kl": lr_kl, "max_kl": max_kl,
                "demos": None if demos is None else [demos.task, int(demos.episodes), len(demos.actions)],
                "imitation_weight": imitation_weight, "imitation_decay": imitation_decay,
                "demo_starts": demo_starts, "seed": seed, "validate_every": validate_every,
                "validation_episodes": validation_episodes,
                "confirmation_episodes": confirmation_episodes}  # fmt: skip
    saved = _resumed_state(checkpoint, settings) if resume else None
    save_every = validate_every or SAVE_EVERY

    def keep_state(trainer: Trainer) -> None:
        if checkpoint is not None:
            state = {"trainer": trainer.state_dict(), "settings": settings}
            save_checkpoint(state | ({"selection": selection.state_dict()} if validate_every else {}), checkpoint)

    if validate_every and saved is None:
        validate(0, 0)
    policy.train()
    with Trainer(factory, solver, pool=pool, workers=workers, eval_every=0, seed=derive(seed, 0), credit=credit,
                 critic=StateValue(gae_lambda=gae_lambda, seed=derive(seed, 1)) if critic == "state_value" else None,
                 discount=discount, horizon=horizon, critic_warmup=critic_warmup, lr_schedule=lr_schedule,
                 lr_kl=lr_kl,
                 imitation=imitation,
                 pool_options={"step_timeout": step_timeout}) as trainer:  # fmt: skip
        if saved is not None:
            if validate_every:
                selection.load_state_dict(saved["selection"])  # checked before the trainer changes
            trainer.load_state_dict(saved["trainer"])
            if curve is not None:
                rewrite_curve(Path(curve), trainer.history)

        def after_each_update(record: dict) -> None:
            after_update(record)
            if record["update"] % save_every == 0:
                keep_state(trainer)

        history = trainer.train(env_steps, progress=progress, curve=curve, callback=after_each_update,
                                tracker=tracker)  # fmt: skip
        keep_state(trainer)
    policy.eval()
    if validate_every:
        if trainer.updates % validate_every:
            validate(trainer.updates, trainer.env_steps)
        return policy, history, selection.choose()
    return policy, history, unselected(trainer.updates)
