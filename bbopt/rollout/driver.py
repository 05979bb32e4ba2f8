"""Train a policy through a Gymnasium simulator with any episode-mode solver.

Per update the `Trainer` runs a population of N episodes in an env pool: at every step one
``solver.ask(observations, episode_ids)`` for the live episodes, the actions clipped to the
action box, one pool step; an episode ends at termination, truncation (the env's TimeLimit)
or when its env raises. Then ``solver.tell(-returns)`` (reward -> loss; a failed episode gets
the worst loss of the population and a warning with its traceback) and the observation
statistics are committed. Episode seeds come from ``(seed, update)``; antithetic partners
(i, i + N/2) share their seed. Every ``eval_every`` updates the noiseless policy is evaluated
(statistics frozen); every ``checkpoint_every`` updates a checkpoint is written atomically.
"""

from __future__ import annotations

import copy
import csv
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bbopt.checks import check_float, check_int
from bbopt.rollout.checkpoint import load_checkpoint, save_checkpoint
from bbopt.rollout.policy import normalizer_of
from bbopt.rollout.pools import EnvFactory, make_pool
from bbopt.rollout.segments import segment_credit
from bbopt.schedules import LR_SCHEDULES, KLAdaptiveLR
from bbopt.seeding import VALIDATION_EPISODES
from bbopt.tracking import Tracker

__all__ = ["Trainer", "check_credit"]

LR_KL = 0.02  # lr_schedule="kl": the mean KL per update aimed at (chosen on HalfCheetah and Hopper, seeds 0-1)
# each update's row of curve.csv: with lr the optimizer step it took (the KL-adaptive schedule's trace), with reuse_kl
# the policy's mean KL from the acting one where its last reuse pass began (empty without reuse)
CURVE_FIELDS = ["update", "env_steps", "seconds", "return_mean", "return_max", "eval_return", "sigma", "lr", "reuse_kl",
                "failed"]  # fmt: skip


def check_credit(credit: str, *, critic: bool, discount: float = 1.0, horizon: int | None = None,
                 critic_warmup: int = 0, env_steps: int | None = None) -> tuple[float, int | None, int]:  # fmt: skip
    """Refuse a combination of the Trainer's credit options (``critic``: whether one is given);
    returns the checked ``discount``, ``horizon`` and ``critic_warmup``. Callers that build a
    Trainer late (ALOHA fine-tuning screens its start first) call it up front, with the run's
    ``env_steps`` when they know it: a warm-up that long would leave the policy where it was."""
    if credit not in ("episode", "to_go"):
        raise ValueError(f"Invalid credit: {credit!r} (expected 'episode' or 'to_go')")
    discount = check_float(discount, "discount", above=0.0, at_most=1.0)
    if discount != 1.0 and credit != "to_go":
        raise ValueError("Invalid discount: it discounts per-step credit (credit='to_go')")
    if critic and credit != "to_go":
        raise ValueError("Invalid critic: a state-value baseline acts on per-step credit (credit='to_go')")
    if horizon is not None:
        horizon = check_int(horizon, "horizon", minimum=1)
        if not critic:
            raise ValueError("Invalid horizon: segments of episodes need a critic to close their unfinished ends "
                             "(credit='to_go' with critic=StateValue(...))")  # fmt: skip
    critic_warmup = check_int(critic_warmup, "critic_warmup", minimum=0)
    if critic_warmup and not critic:
        raise ValueError("Invalid critic_warmup: it trains the critic before the policy moves (needs a critic)")
    if env_steps is not None and critic_warmup >= env_steps:
        raise ValueError(f"Invalid critic_warmup: {critic_warmup} env steps of warm-up in a run of {env_steps} "
                         "would never move the policy")  # fmt: skip
    return float(discount), horizon, critic_warmup


def check_lr_schedule(lr_schedule: str, *, lr_decay_after: int = 0, lr_kl: float | None = None,
                      reuse: int = 1) -> tuple[int, float]:  # fmt: skip
    """Refuse a bad combination of the Trainer's step-schedule options (before anything runs);
    returns ``(lr_decay_after, lr_kl)`` with the KL target's default filled in."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"Invalid lr_schedule: {lr_schedule!r} (expected one of {LR_SCHEDULES})")
    lr_decay_after = check_int(lr_decay_after, "lr_decay_after", minimum=0)
    if lr_decay_after and lr_schedule != "linear":
        raise ValueError("Invalid lr_decay_after: it delays the linear schedule (lr_schedule='linear')")
    if lr_kl is not None and lr_schedule != "kl":
        raise ValueError("Invalid lr_kl: it is the KL the adaptive step aims at (lr_schedule='kl')")
    lr_kl = LR_KL if lr_kl is None else check_float(lr_kl, "lr_kl", above=0.0)
    if lr_schedule == "kl" and reuse < 2:
        raise ValueError("Invalid lr_schedule: 'kl' adapts the step to the KL the reuse passes measure (give the "
                         "solver reuse=2 or more)")  # fmt: skip
    return lr_decay_after, lr_kl


class Trainer:
    """Args:
    env: a Gymnasium id or an `EnvFactory` / top-level callable returning an env.
    solver: an episode-mode solver (``episodes=N``): `bbopt.OVLR`, `bbopt.ES`, `bbopt.CEM`
        or `bbopt.baselines.ParameterES`.
    pool: "serial" (default), "process" or "ray", or a pool built with `make_pool`.
    workers: worker processes / actors (default: the CPU count).
    eval_every, eval_episodes: noiseless evaluation cadence and size (0 switches it off).
    checkpoint: path of the checkpoint file (None: no checkpoints); ``checkpoint_every`` updates.
    seed: seeds the episodes (the solver has its own generator).
    lr_schedule: "constant", or "linear": in `train`, the optimizer's step decays linearly
        from its initial value to 0 at the run's ``env_steps`` total (a
        `torch.optim.lr_scheduler.LambdaLR` stepped after each update, as torch orders it:
        it sets the next update's step from the env steps so far).
        "kl": after each update the step is adapted to the policy's movement, divided by 1.5
        where the update's mean KL from the acting policy was above ``2 * lr_kl`` and multiplied
        by 1.5 where it was below ``lr_kl / 2``, within 0.01-1 times the initial step, so the
        step given is the largest (`bbopt.schedules.KLAdaptiveLR`; the KL is the one the last
        ``reuse`` pass measured, so the solver needs ``reuse`` >= 2).
    lr_decay_after: with ``lr_schedule="linear"``, env steps at the full step before the decay
        starts (default 0); from there the step falls linearly to 0 at the run's total, so a run
        that ends before it keeps the full step (hold, then decay).
    lr_kl: with ``lr_schedule="kl"``, the mean KL per update the step is adapted to (default 0.02).
    credit: "episode" (every step of an episode is credited with the episode's loss), or
        "to_go": each step with the negated rewards from that step on, against the other
        episodes' at the same step (``solver.tell(step_losses=...)``; OVLR and ES). A failed
        episode's cost-to-go is the population's worst at each of its steps.
    discount: with ``credit="to_go"``, gamma in ``G_t = c_t + gamma G_{t+1}`` (default 1, the
        cost still to come; below 1 later costs count less: lower variance, biased for the
        return, as PPO's gamma 0.99 is).
    critic: with ``credit="to_go"``, a `bbopt.rollout.critic.StateValue`: the solver is told
        each step's cost-to-go minus the critic's ``V(s_t, t)`` (fitted after each tell on that
        update's steps; kept in the checkpoint). Unbiased: see `bbopt.rollout.critic`.
    critic_warmup: with a critic, env steps at the start during which only the critic learns
        (default 0): each update that begins before then fits the critic and the observation
        normalizer and drops its episodes (`Solver.discard`), so the policy, its optimizer and
        any imitation stream stay put. The critic starts at V = 0, so without a warm-up the first
        updates are told the raw costs-to-go; a policy that already works (fine-tuning from
        imitation) can lose much of what it knows to them. The warm-up's steps count in the
        run's ``env_steps`` and its records carry ``critic_warmup: True``.
    imitation: a `bbopt.rollout.imitation.ImitationLoss`: each update also descends its weighted
        imitation loss on a minibatch of demonstrations (the solver's ``autograd_loss``, in the
        same backward and step; its minibatch stream kept in the checkpoint).
    reward_offset: a constant added to every step's reward in what the solver is told (default
        0); the logged returns and every evaluation stay the env's. ARS's ``alive_bonus_offset``
        (Mania et al. 2018), which the RL zoo's ARS rows and EvoTorch's Hopper preset set to
        cancel the alive bonus of Hopper and Walker2d (-1): a policy that only stands then earns
        nothing, and falling costs no more than the forward progress it forgoes. It changes the
        objective wherever episodes end early (a steady reward per step alive is no longer paid),
        so it is the user's choice per env, never a default.
    horizon: None (default): an update runs whole episodes. T: an update steps each of the N
        env slots T times, whatever episode it is in (PPO's rollouts): an episode that ends
        is followed at once by the next in its slot (seeded from ``(seed, slot, its count)``),
        and the unfinished ends are closed with the critic's value
        (`bbopt.rollout.segments`; needs ``credit="to_go"`` and a critic). ``return_mean`` is
        then the mean return of the episodes that ended in the update (the last such mean
        when none did). The episodes in flight are kept in the checkpoint (seeds, actions,
        observations) and replayed on resume, so a resumed run continues bit for bit where
        the envs are deterministic.
    """

    def __init__(self, env, solver, *, pool="serial", workers: int | None = None, eval_every: int = 10,
                 eval_episodes: int = 5, checkpoint=None, checkpoint_every: int = 10, seed: int = 0,
                 pool_options: dict | None = None, lr_schedule: str = "constant",
                 credit: str = "episode", critic=None, discount: float = 1.0, imitation=None,
                 horizon: int | None = None, lr_decay_after: int = 0, critic_warmup: int = 0,
                 lr_kl: float | None = None, reward_offset: float = 0.0):  # fmt: skip
        self.factory = env if isinstance(env, EnvFactory) else EnvFactory(env)
        self.solver = solver
        self.population = getattr(solver, "episodes", None)
        if not self.population:
            raise ValueError("Invalid solver: the Trainer needs an episode-mode solver (episodes=N)")
        self.eval_env = self.factory()
        space = self.eval_env.action_space
        self.low, self.high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.pool = pool if not isinstance(pool, str) else make_pool(pool, self.factory, self.population, workers,
                                                                     **(pool_options or {}))  # fmt: skip
        self.normalizer = normalizer_of(solver.policy)
        self.eval_every, self.eval_episodes = eval_every, eval_episodes
        self.checkpoint, self.checkpoint_every = (Path(checkpoint) if checkpoint else None), checkpoint_every
        self.seed = seed
        self.lr_schedule = lr_schedule
        self.lr_decay_after, lr_kl = check_lr_schedule(lr_schedule, lr_decay_after=lr_decay_after, lr_kl=lr_kl,
                                                       reuse=getattr(solver, "reuse", 1))  # fmt: skip
        discount, horizon, critic_warmup = check_credit(credit, critic=critic is not None, discount=discount,
                                                        horizon=horizon, critic_warmup=critic_warmup)  # fmt: skip
        if credit == "to_go" and not getattr(solver, "step_credit", False):
            raise ValueError(f"Invalid credit: {type(solver).__name__} has no per-step credit (use credit='episode')")
        self.credit, self.discount, self.critic, self.horizon = credit, discount, critic, horizon
        self.critic_warmup = critic_warmup
        self.reward_offset = check_float(reward_offset, "reward_offset")
        if imitation is not None and not callable(getattr(imitation, "state_dict", None)):
            raise ValueError(f"Invalid imitation: {imitation!r} (expected a bbopt.rollout.imitation.ImitationLoss)")
        self.imitation = imitation
        self._slots: dict | None = None  # horizon: each slot's observation, running return and episode count
        self._restore: dict | None = None  # horizon: a loaded checkpoint's episodes in flight, for the next update
        self._ended_returns: float | None = None  # horizon: the last mean return of ended episodes
        if critic is not None:
            horizon = getattr(self.eval_env.spec, "max_episode_steps", None) if self.eval_env.spec else None
            critic.setup(int(np.prod(self.eval_env.observation_space.shape)), horizon=horizon,
                         normalizer=self.normalizer)  # fmt: skip
        self._total_steps: int | None = None  # the env-steps total of the running `train` (the schedule's end)
        self.scheduler = None
        if lr_schedule == "linear":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(solver.optimizer, self._lr_factor)
        self.kl_schedule = None
        if lr_schedule == "kl":
            self.kl_schedule = KLAdaptiveLR(solver.optimizer, lr_kl)
        self.updates, self.env_steps, self.seconds = 0, 0, 0.0
        self.cpu_seconds = 0.0  # this process's CPU time in updates (a process or Ray pool's workers not counted)
        self.history: list[dict] = []

    # ------------------------------------------------------------------------- one update
    def episode_seeds(self, update: int) -> np.ndarray:
        """Episode i's reset seed in ``update``: episodes i and i + ceil(N/2) share one."""
        half = math.ceil(self.population / 2)
        seeds = np.random.SeedSequence([self.seed, update]).generate_state(half).astype(np.int64) % (2**31 - 1)
        return seeds[np.arange(self.population) % half]

    def update(self, *, on_step: Callable[[int], None] | None = None) -> dict:
        """One population of episodes, one tell. ``on_step(t)`` is called before step t (tests
        use it to kill a worker mid-update). With a ``horizon``: one segment (`_segment`)."""
        if self.horizon is not None:
            return self._segment(on_step)
        began, began_cpu = time.perf_counter(), time.process_time()
        observations = self.pool.reset(self.episode_seeds(self.updates))
        returns = np.zeros(self.population)
        lengths = np.zeros(self.population, dtype=np.int64)
        live = np.ones(self.population, dtype=bool)
        failed = np.zeros(self.population, dtype=bool)
        rewards, asked, observed = [], [], []  # per ask call: rewards of the asked episodes, their ids, observations
        step = 0
        while live.any():
            if on_step is not None:
                on_step(step)
            ids = np.flatnonzero(live)
            inputs = torch.as_tensor(observations[ids])
            observed.append(inputs)
            result = self._act(inputs, ids)
            returns[ids] += result.rewards
            rewards.append(np.asarray(result.rewards, dtype=np.float64) + self.reward_offset)
            asked.append(ids)
            lengths[ids] += 1
            observations[ids] = result.observations
            for episode, error in zip(ids, result.errors, strict=True):
                if error is not None:
                    failed[episode] = True
                    warnings.warn(f"episode {episode} failed (its loss becomes the population's worst):\n{error}",
                                  RuntimeWarning, stacklevel=2)  # fmt: skip
            live[ids[result.done]] = False
            step += 1
        losses = -(returns + self.reward_offset * lengths)  # what the solver is told; the logged returns are the env's
        if failed.any():
            losses[failed] = losses[~failed].max() if (~failed).any() else 0.0
        step_losses, fit = None, None
        if self.credit == "to_go":
            step_losses, fit = self._step_credit(rewards, asked, observed, failed)
        stats, imitated = self._tell(losses, {"step_losses": step_losses} if step_losses else {})
        if fit is not None:  # after the advantages were formed and told: V never saw this update's noise
            self.critic.fit(*fit)
        if self.normalizer is not None:
            self.normalizer.commit()
        self.updates += 1
        self.env_steps += int(lengths.sum())
        self.seconds += time.perf_counter() - began
        self.cpu_seconds += time.process_time() - began_cpu
        ok = returns[~failed] if (~failed).any() else returns
        return {"update": self.updates, "env_steps": self.env_steps, "seconds": round(self.seconds, 3),
                "return_mean": float(ok.mean()), "return_max": float(ok.max()), "eval_return": None,
                **_solver_figures(stats), "failed": int(failed.sum())} | (
            {} if imitated is None else {"imitation_loss": imitated})  # fmt: skip

    def _act(self, inputs: torch.Tensor, ids: np.ndarray):
        """One ask for the episodes ``ids`` at ``inputs`` (which the normalizer observes), the
        actions clipped to the box, one pool step; returns the pool's `StepResult`."""
        if self.normalizer is not None:
            self.normalizer.observe(inputs)
        with torch.no_grad():
            actions = self.solver.ask(inputs, episode_ids=torch.as_tensor(ids)).detach().cpu().numpy()
        return self.pool.step(ids, np.clip(actions, self.low, self.high))

    def _tell(self, losses, told: dict) -> tuple[dict, float | None]:
        """The solver's tell, with this update's imitation minibatch when there is an imitation
        loss (its draw undone if the tell is refused); returns the tell's stats and that loss.
        During the critic's warm-up the episodes are dropped instead (``critic_warmup``)."""
        if self.env_steps < self.critic_warmup:
            self.solver.discard()
            return {"sigma": self.solver.noise.mean_sigma(), "critic_warmup": True}, None
        imitated = None
        if self.imitation is not None:
            drawn_from = self.imitation.state_dict()
            told["autograd_loss"] = self.imitation(self.solver.policy)
            imitated = self.imitation.last_loss
        try:
            stats = self.solver.tell(torch.as_tensor(losses), **told)
        except BaseException:
            if self.imitation is not None:
                self.imitation.load_state_dict(drawn_from)
            raise
        return stats, imitated

    # ------------------------------------------------------------------------- segments
    def slot_seed(self, slot: int, count: int) -> int:
        """The reset seed of the ``count``-th episode (from 0) run in ``slot`` (``horizon`` mode)."""
        return int(np.random.SeedSequence([self.seed, slot, count]).generate_state(1)[0] % (2**31 - 1))

    def _start_slots(self) -> None:
        """Every slot's first episode, or after a resume the episodes in flight at the checkpoint."""
        if self._restore is not None:  # from load_state_dict: replay them
            self.pool.restore(self._restore["seeds"], self._restore["actions"])
            self._slots, self._restore = self._restore["slots"], None
            return
        seeds = [self.slot_seed(slot, 0) for slot in range(self.population)]
        self._slots = {"observations": self.pool.reset(seeds), "returns": np.zeros(self.population),
                       "counts": np.ones(self.population, dtype=np.int64)}  # fmt: skip

    def _episode_times(self) -> np.ndarray:
        """``[N]``: the steps each slot's episode has taken (the pool's actions since its reset)."""
        return np.array([len(actions) for actions in self.pool.actions], dtype=np.int64)

    def _segment(self, on_step: Callable[[int], None] | None) -> dict:
        """One update of ``horizon`` steps in every slot, one tell (see ``horizon``)."""
        began, began_cpu = time.perf_counter(), time.process_time()
        if self._slots is None:
            self._start_slots()
        slots, ids = self._slots, np.arange(self.population)
        horizon, population = self.horizon, self.population
        costs, ends = np.zeros((horizon, population)), np.zeros((horizon, population), dtype=bool)
        times = np.zeros((horizon, population), dtype=np.int64)
        failed = np.zeros((horizon, population), dtype=bool)  # steps of an episode that raised
        started = np.zeros(population, dtype=np.int64)  # the step at which each slot's episode began here
        observed, ended_returns = [], []
        for step in range(horizon):
            if on_step is not None:
                on_step(step)
            inputs = torch.as_tensor(slots["observations"])
            observed.append(inputs)
            times[step] = self._episode_times()
            result = self._act(inputs, ids)
            costs[step], ends[step] = -(result.rewards + self.reward_offset), result.done
            slots["returns"] += result.rewards
            slots["observations"] = result.observations
            for slot, error in enumerate(result.errors):
                if error is not None:
                    failed[started[slot] : step + 1, slot] = True
                    warnings.warn(f"the episode in slot {slot} failed (its steps in this update get the worst "
                                  f"advantage):\n{error}", RuntimeWarning, stacklevel=2)  # fmt: skip
            done = np.flatnonzero(result.done)
            if done.size:
                ended_returns += [slots["returns"][j] for j in done if result.errors[j] is None]
                seeds = [self.slot_seed(int(j), int(slots["counts"][j])) for j in done]
                slots["observations"][done] = self.pool.reset(seeds, ids=done)
                slots["returns"][done] = 0.0
                slots["counts"][done] += 1
                started[done] = step + 1
        inputs, steps = torch.cat(observed), torch.as_tensor(times.reshape(-1))
        values = self.critic.predict(inputs, steps).numpy().reshape(horizon, population)
        bootstrap = self.critic.predict(torch.as_tensor(slots["observations"]),
                                        torch.as_tensor(self._episode_times())).numpy()  # fmt: skip
        advantages, to_go = segment_credit(costs, ends, values, bootstrap, discount=self.discount,
                                           gae_lambda=self.critic.gae_lambda)  # fmt: skip
        targets = self.critic.targets(to_go, advantages, values)
        if failed.any() and (~failed).any():  # as whole episodes: a failed episode's steps count as the worst
            worst = np.where(failed, -np.inf, advantages).max(axis=1, keepdims=True)
            advantages = np.where(failed, np.where(np.isfinite(worst), worst, 0.0), advantages)
        stats, imitated = self._tell(costs.sum(axis=0), {"step_losses": [torch.as_tensor(row) for row in advantages]})
        kept = ~failed.reshape(-1)
        self.critic.fit(inputs[kept], steps[kept], torch.as_tensor(targets.reshape(-1)[kept]))
        if self.normalizer is not None:
            self.normalizer.commit()
        if ended_returns:
            self._ended_returns = float(np.mean(ended_returns))
        self.updates += 1
        self.env_steps += horizon * population
        self.seconds += time.perf_counter() - began
        self.cpu_seconds += time.process_time() - began_cpu
        mean = self._ended_returns if self._ended_returns is not None else float(slots["returns"].mean())
        return {"update": self.updates, "env_steps": self.env_steps, "seconds": round(self.seconds, 3),
                "return_mean": mean, "return_max": float(max(ended_returns, default=mean)), "eval_return": None,
                **_solver_figures(stats), "failed": int(failed.any(axis=0).sum())} | (
            {} if imitated is None else {"imitation_loss": imitated})  # fmt: skip

    def _step_credit(self, rewards: list, asked: list, observed: list, failed: np.ndarray):
        """Per ask call, the asked episodes' negated rewards still to come (minus the critic's
        value, or its GAE advantages, with a critic); and the critic's fit data (observations,
        time steps, `StateValue.targets` of the episodes that did not fail), or None."""
        costs = np.zeros((len(rewards), self.population))
        alive = np.zeros((len(rewards), self.population), dtype=bool)
        for k, (values, ids) in enumerate(zip(rewards, asked, strict=True)):
            costs[k, ids] = -values
            alive[k, ids] = True
        if self.discount == 1.0:
            to_go = np.flip(np.cumsum(np.flip(costs, 0), 0), 0)  # [calls, N]
        else:  # G_t = c_t + gamma G_{t+1}: later costs count less (biased for the undiscounted return)
            to_go = np.zeros_like(costs)
            following = np.zeros(costs.shape[1])
            for k in range(costs.shape[0] - 1, -1, -1):
                following = costs[k] + self.discount * following
                to_go[k] = following
        if failed.any() and (~failed).any():
            to_go[:, failed] = to_go[:, ~failed].max(axis=1, keepdims=True)
        if self.critic is None:
            return [torch.as_tensor(to_go[k, ids]) for k, ids in enumerate(asked)], None
        steps = torch.cat([torch.full((len(ids),), k) for k, ids in enumerate(asked)])
        inputs = torch.cat(observed)
        values = np.zeros_like(to_go)
        values[steps.numpy(), np.concatenate(asked)] = self.critic.predict(inputs, steps).numpy()
        advantages = self.critic.advantages(to_go, costs, values, alive, discount=self.discount)
        targets = self.critic.targets(to_go, advantages, values)
        if failed.any():  # the worst cost-to-go, against the critic's value
            advantages[:, failed] = np.where(alive[:, failed], to_go[:, failed] - values[:, failed], 0.0)
        kept = ~np.concatenate([failed[ids] for ids in asked])
        targets = np.concatenate([targets[k, ids] for k, ids in enumerate(asked)])
        fit = (inputs[kept], steps[kept], torch.as_tensor(targets[kept]))
        return [torch.as_tensor(advantages[k, ids]) for k, ids in enumerate(asked)], fit

    # ------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, episodes: int | None = None, *, seed: int = VALIDATION_EPISODES) -> float:
        """Mean return of the noiseless policy over ``episodes`` (seeds ``seed, seed + 1, ...``),
        observation statistics frozen."""
        policy = self.solver.policy
        frozen = self.normalizer.frozen if self.normalizer is not None else None
        if self.normalizer is not None:
            self.normalizer.frozen = True
        try:
            returns = [rollout_return(self.eval_env, policy, seed + k, self.low, self.high)
                       for k in range(episodes or self.eval_episodes)]  # fmt: skip
        finally:
            if self.normalizer is not None:
                self.normalizer.frozen = frozen
        return float(np.mean(returns))

    # ------------------------------------------------------------------------- the loop
    def train(self, env_steps: int, *, progress: bool = True, curve=None,
              callback: Callable[[dict], None] | None = None,
              tracker: Tracker | None = None) -> list[dict]:  # fmt: skip
        """Update until ``env_steps`` environment steps in all (counting from a resumed run's
        total); append each update's record to ``history`` (and to the CSV ``curve``; to
        ``tracker`` at its env steps, with ``env_steps_per_second``)."""
        bar = tqdm(total=int(env_steps), initial=min(self.env_steps, int(env_steps)), unit="step", disable=not progress,
                   desc="train")  # fmt: skip
        while self.env_steps < env_steps:
            before = self.env_steps
            self._total_steps = int(env_steps)
            record = self.update()
            record["lr"] = float(self.solver.optimizer.param_groups[0]["lr"])  # the step this update took
            if self.scheduler is not None:
                self.scheduler.step()
            if self.kl_schedule is not None:
                self.kl_schedule.step(record.get("reuse_kl"))
            if self.eval_every and self.eval_episodes and self.updates % self.eval_every == 0:
                record["eval_return"] = self.evaluate()
            self.history.append(record)
            if curve is not None:
                _append_csv(Path(curve), record)
            if tracker is not None:
                rate = record["env_steps"] / max(record["seconds"], 1e-9)
                tracker.log(record | {"env_steps_per_second": rate}, step=record["env_steps"])
            if self.checkpoint is not None and self.checkpoint_every and self.updates % self.checkpoint_every == 0:
                save_checkpoint(self.state_dict(), self.checkpoint)
            bar.update(min(self.env_steps, int(env_steps)) - before)
            rate = self.env_steps / max(self.seconds, 1e-9)
            shown = record["eval_return"] if record["eval_return"] is not None else record["return_mean"]
            bar.set_postfix_str(f"{rate:,.0f} steps/s, return {shown:.1f}")
            if callback is not None:
                callback(record)
        bar.close()
        if self.checkpoint is not None:
            save_checkpoint(self.state_dict(), self.checkpoint)
        return self.history

    def _lr_factor(self, _: int) -> float:
        """The linear schedule: the share of the initial step left at the env steps so far (the
        full step until ``lr_decay_after``)."""
        start = self.lr_decay_after
        if self._total_steps is None or self.env_steps <= start or self._total_steps <= start:
            return 1.0
        return max(0.0, 1.0 - (self.env_steps - start) / (self._total_steps - start))

    # ------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {"solver": self.solver.state_dict(), "updates": self.updates, "env_steps": self.env_steps,
                 "seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "seed": self.seed,
                 "history": [dict(r) for r in self.history]}  # fmt: skip
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        if self.imitation is not None:
            state["imitation"] = self.imitation.state_dict()
        if self.horizon is not None:
            state["horizon"] = self.horizon
            flight = self._restore or (self._slots and {"slots": self._slots, "seeds": self.pool.seeds,
                                                                       "actions": self.pool.actions})  # fmt: skip
            if flight:  # the episodes in flight (a loaded checkpoint's if not yet replayed), replayed on resume
                state["slots"] = {k: torch.as_tensor(np.array(v)) for k, v in flight["slots"].items()} | {
                    "seeds": torch.as_tensor(np.array(flight["seeds"])),  # tensors: the checkpoint loads weights_only
                    "actions": [torch.as_tensor(np.array(a, dtype=np.float32)) for a in flight["actions"]]}  # fmt: skip
                state["ended_returns"] = self._ended_returns
        return state

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("solver", "updates", "env_steps", "seconds", "seed", "history") if k not in state]
        if missing:
            raise ValueError(f"Invalid checkpoint: missing {missing} (not a Trainer checkpoint)")
        if state["seed"] != self.seed:
            raise ValueError(f"Invalid checkpoint: seed {state['seed']} (this trainer has seed {self.seed})")
        if (self.critic is not None) != ("critic" in state):
            held = "holds a critic" if "critic" in state else "holds no critic"
            raise ValueError(f"Invalid checkpoint: it {held}, this trainer {'has' if self.critic else 'has none'}")
        if (self.imitation is not None) != ("imitation" in state):
            held = "holds an imitation loss" if "imitation" in state else "holds no imitation loss"
            raise ValueError(f"Invalid checkpoint: it {held}, this trainer {'has' if self.imitation else 'has none'}")
        if state.get("horizon") != self.horizon:
            raise ValueError(f"Invalid checkpoint: horizon {state.get('horizon')} (this trainer has {self.horizon})")
        cpu_seconds = state.get("cpu_seconds", math.nan)  # NaN: a checkpoint from before the count
        if isinstance(cpu_seconds, bool) or not isinstance(cpu_seconds, int | float) or cpu_seconds < 0:
            raise ValueError(f"Invalid checkpoint: cpu_seconds {cpu_seconds!r} (expected a number >= 0)")
        restore = self._parse_slots(state["slots"]) if self.horizon is not None and "slots" in state else None
        before = self._own_parts()
        try:  # the solver last: it checks all of its state before changing any
            if self.critic is not None:
                self.critic.load_state_dict(state["critic"])
            if self.imitation is not None:
                self.imitation.load_state_dict(state["imitation"])
            if self.horizon is not None:
                self._slots, self._restore = None, restore
                self._ended_returns = state.get("ended_returns")
            self.solver.load_state_dict(state["solver"])
        except BaseException:  # a refused part (e.g. another step schedule) leaves the trainer as it was
            self._put_back(before)
            raise
        self.updates, self.env_steps, self.seconds = state["updates"], state["env_steps"], state["seconds"]
        self.cpu_seconds = float(cpu_seconds)
        self.history = [dict(r) for r in state["history"]]

    def _own_parts(self) -> tuple:
        """What `load_state_dict` changes before the solver (which refuses before changing itself)."""
        critic = None if self.critic is None else copy.deepcopy(self.critic.state_dict())
        imitation = None if self.imitation is None else copy.deepcopy(self.imitation.state_dict())
        return critic, imitation, self._slots, self._restore, self._ended_returns

    def _put_back(self, parts: tuple) -> None:
        critic, imitation, self._slots, self._restore, self._ended_returns = parts
        if critic is not None:
            self.critic.load_state_dict(critic)
        if imitation is not None:
            self.imitation.load_state_dict(imitation)

    def _parse_slots(self, slots) -> dict:
        """A checkpoint's episodes in flight as arrays, checked against this trainer (before
        anything is loaded): ``slots`` (observations, returns, counts), ``seeds``, ``actions``."""
        population, shape = self.population, (self.population, *self.eval_env.observation_space.shape)
        try:
            arrays = {k: torch.as_tensor(slots[k]).numpy().copy() for k in ("observations", "returns", "counts",
                                                                              "seeds")}  # fmt: skip
            actions = [torch.as_tensor(a).numpy().astype(np.float32).reshape(-1, *self.low.shape)
                       for a in slots["actions"]]  # fmt: skip
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"Invalid checkpoint: its episodes in flight are unreadable ({error!r})") from None
        fits = arrays["observations"].shape == shape and len(actions) == population
        fits = fits and all(arrays[k].shape == (population,) for k in ("returns", "counts", "seeds"))
        fits = fits and all(np.isfinite(v).all() for v in (arrays["observations"], arrays["returns"], *actions))
        if not (fits and (arrays["counts"] >= 1).all()):
            raise ValueError(f"Invalid checkpoint: its episodes in flight do not fit this trainer ({population} slots, "
                             f"observations of shape {shape[1:]}, finite values, episode counts >= 1)")  # fmt: skip
        return {"slots": {k: arrays[k] for k in ("observations", "returns", "counts")}, "seeds": arrays["seeds"],
                "actions": [list(a) for a in actions]}  # fmt: skip

    def resume(self, path) -> None:
        """Continue from the checkpoint at ``path`` (verified; the previous one beside it if
        the latest is missing or corrupt, with a warning)."""
        self.load_state_dict(load_checkpoint(path, fallback=True))

    def close(self) -> None:
        self.pool.close()
        self.eval_env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rollout_return(env, policy, seed: int, low, high, *, render: Callable | None = None) -> float:
    """One noiseless episode of ``policy`` in ``env``; returns its return."""
    observation, _ = env.reset(seed=int(seed))
    total, done = 0.0, False
    while not done:
        action = policy(torch.as_tensor(np.asarray(observation, dtype=np.float32))[None])[0].numpy()
        observation, reward, terminated, truncated, _ = env.step(np.clip(action, low, high))
        if render is not None:
            render()
        total += float(reward)
        done = terminated or truncated
    return total


def _append_csv(path: Path, record: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if record.get(k) is None else record[k]) for k in CURVE_FIELDS})


def _solver_figures(stats: dict) -> dict:
    """An update record's figures from the solver's tell: sigma, and with reuse its passes and the
    policy's mean KL from the acting one where the last pass began, with ``max_kl`` the whole
    update's KL and the share of it kept (``update_kl``, ``step_scale``); ``critic_warmup`` on the
    warm-up's updates (not in the curve CSV)."""
    figures = {"sigma": float(stats.get("sigma", float("nan")))}
    keys = ("reuse_passes", "reuse_kl", "update_kl", "step_scale")
    figures |= {key: float(stats[key]) for key in keys if key in stats}
    return figures | ({"critic_warmup": True} if stats.get("critic_warmup") else {})
