"""Env pools: N episodes stepped together, in-process, in worker processes or on Ray actors.

A pool holds one env per episode slot. ``reset(seeds)`` starts episode i with ``seeds[i]``;
``step(ids, actions)`` steps the listed live episodes and returns their results in the order
asked. Every pool keeps each episode's seed and the actions it has taken, so when a worker
dies mid-update its live episodes are replayed on a fresh worker (reset with the same seed,
the same actions again: simulators such as MuJoCo are deterministic given both) and the
pending step is re-sent: nothing is lost, nothing is duplicated, and the driver and solver
never notice beyond one ``RuntimeWarning``. A worker that does not answer within
``step_timeout`` seconds (stopped, deadlocked, stuck in C code) is killed and replaced the
same way. An env that raises inside ``step`` fails that episode only: the result carries the
traceback and the episode is over.

Why not ``gymnasium.vector``: its vector envs step every sub-env each call and reset them
automatically; here episodes end at different times, each has its own seed, and one
failing env must not take the others down.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from bbopt.checks import check_float, check_int
from bbopt.plugins import make_env

__all__ = ["POOLS", "EnvFactory", "ProcessPool", "RayPool", "SerialPool", "StepResult", "make_pool"]


@dataclass(frozen=True)
class EnvFactory:
    """A picklable recipe for an env: a Gymnasium id (``gymnasium.make(id, **kwargs)``) or a
    top-level callable returning an env."""

    env: str | Callable[[], gym.Env]
    kwargs: tuple = ()

    def __call__(self) -> gym.Env:
        if callable(self.env):
            return self.env(**dict(self.kwargs))
        return make_env(self.env, **dict(self.kwargs))  # the problem packages' ids too, in every process


@dataclass
class StepResult:
    """Per asked episode, in the order asked."""

    observations: np.ndarray  # [m, obs]
    rewards: np.ndarray  # [m]
    done: np.ndarray  # [m] bool: terminated, truncated or failed
    terminated: np.ndarray  # [m] bool
    errors: list[str | None]  # a traceback where the env raised


class _Episodes:
    """The envs of one worker, keyed by episode id."""

    def __init__(self, factory: EnvFactory):
        self.factory = factory
        self.envs: dict[int, gym.Env] = {}

    def reset(self, episodes: list[tuple[int, int]]) -> list[np.ndarray]:
        out = []
        for episode, seed in episodes:
            if episode not in self.envs:
                self.envs[episode] = self.factory()
            env = self.envs[episode]
            out.append(np.asarray(env.reset(seed=int(seed))[0], dtype=np.float32))
        return out

    def step(self, episodes: list[tuple[int, np.ndarray]]) -> list[tuple]:
        out = []
        for episode, action in episodes:
            env = self.envs[episode]
            try:
                observation, reward, terminated, truncated, _ = env.step(action)
            except Exception:  # the episode fails, not the pool
                out.append((None, 0.0, True, False, traceback.format_exc()))
                continue
            out.append((np.asarray(observation, dtype=np.float32), float(reward), bool(terminated) or bool(truncated),
                        bool(terminated), None))  # fmt: skip
        return out

    def replay(self, episodes: list[tuple[int, int, list[np.ndarray]]]) -> None:
        """Bring episodes back to where they were: reset with their seed, take their actions."""
        for episode, seed, actions in episodes:
            self.reset([(episode, seed)])
            for action in actions:
                self.envs[episode].step(action)

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


STEP_TIMEOUT = 60.0  # seconds a worker may take to answer one step call (the default)
START_SECONDS = 60.0  # added for calls that build envs (reset, replay): imports, model compilation
REPLAYED_STEPS_PER_TIMEOUT = 1000  # a replay also gets step_timeout per this many replayed actions
MAX_STEP_TIMEOUT = 1e6  # seconds (11 days): beyond, use None (no deadline)


AWAKE_SLICE = 1.0  # seconds between two readings of a deadline's clock (see _AwakeClock)


class _AwakeClock:
    """Seconds this process has run since the clock was made, for deadlines: read at least
    every ``AWAKE_SLICE`` seconds while a call is awaited, so that a gap between two readings of
    more than a second beyond that is time the process itself spent stopped (Ctrl-Z, SIGSTOP,
    a paused container) and counts as one slice. A run suspended and continued then finds its
    workers within their deadlines, where a wall clock would find every one of them past it; a
    worker stopped alone still misses its deadline, as the parent keeps reading the clock."""

    def __init__(self):
        self.last, self.seconds = time.monotonic(), 0.0

    def read(self) -> float:
        now = time.monotonic()
        gap = now - self.last
        self.seconds += gap if gap <= AWAKE_SLICE + 1.0 else AWAKE_SLICE
        self.last = now
        return self.seconds


class _Hung(BaseException):  # not Exception: an env's own `except Exception` must not swallow it
    """A serial pool's call ran past its deadline (raised by the alarm handler)."""


class _Pool:
    """Bookkeeping shared by every pool: seeds, action histories, ordering, replays, deadlines.

    ``step_timeout``: seconds a worker may take to answer one call of a step (its share of
    the episodes stepped); a reset or a replay, which build envs, gets ``START_SECONDS`` more,
    and a replay ``step_timeout`` more per ``REPLAYED_STEPS_PER_TIMEOUT`` actions it replays.
    A worker past its deadline is treated as dead. ``None``: wait forever. The serial and
    process pools count deadlines on `_AwakeClock` (a run stopped and continued as a whole
    keeps its workers); the Ray pool on the wall clock."""

    def __init__(self, factory: EnvFactory, num_envs: int, workers: int, step_timeout: float | None = STEP_TIMEOUT):
        check_int(num_envs, "num_envs", minimum=1)
        check_int(workers, "workers", minimum=1)
        if step_timeout is not None:
            step_timeout = check_float(step_timeout, "step_timeout", above=0, at_most=MAX_STEP_TIMEOUT)
        self.step_timeout = step_timeout
        self.factory, self.num_envs, self.workers = factory, num_envs, min(workers, num_envs)
        # contiguous blocks of episodes per worker
        self.worker_of = np.repeat(np.arange(self.workers), -(-num_envs // self.workers))[:num_envs]
        self.seeds = np.zeros(num_envs, dtype=np.int64)
        self.actions: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        self.live = np.zeros(num_envs, dtype=bool)
        self.restarts = 0

    # subclasses: run {worker: (method, args)} and return ({worker: result}, {worker: why it
    # failed}) for the workers that died or missed their deadline (a hung one already killed)
    def _run(self, calls: dict[int, tuple[str, tuple]]) -> tuple[dict[int, object], dict[int, str]]:
        raise NotImplementedError

    def _deadline(self, method: str, args: tuple) -> float | None:
        """Seconds one worker may take to answer ``method(*args)``."""
        if self.step_timeout is None:
            return None
        if method == "step":
            return self.step_timeout
        replayed = sum(len(actions) for _, _, actions in args[0]) if method == "replay" else 0
        return START_SECONDS + self.step_timeout * (1 + replayed // REPLAYED_STEPS_PER_TIMEOUT)

    def _restart(self, worker: int) -> None:
        raise NotImplementedError

    def _call_all(self, calls: dict[int, tuple[str, tuple]]) -> dict[int, object]:
        """Run calls; a worker that died is restarted, its live episodes replayed, and its
        call sent again (at most 3 restarts per worker and call)."""
        results, pending, attempts = {}, dict(calls), dict.fromkeys(calls, 0)
        while pending:
            done, failed = self._run(pending)
            results.update(done)
            pending = {worker: pending[worker] for worker in failed}
            for worker, (method, args) in pending.items():
                asked = {episode for episode, *_ in args[0]} if method in ("step", "reset") else set()
                why = failed[worker]
                while True:
                    attempts[worker] += 1
                    if attempts[worker] > 3:
                        raise RuntimeError(f"Pool worker {worker} failed {attempts[worker]} times on one {method} call "
                                           f"(last: {why}); giving up")  # fmt: skip
                    self._restart(worker)
                    self.restarts += 1
                    live = [int(e) for e in np.flatnonzero((self.worker_of == worker) & self.live)]
                    if method == "reset":  # the episodes it does not restart are replayed (a reset of some envs)
                        live = [e for e in live if e not in asked]
                        if not live:
                            warnings.warn(f"Pool worker {worker} {why}; replaced, its reset sent again",
                                          RuntimeWarning, stacklevel=4)  # fmt: skip
                            break
                    replays = [(e, int(self.seeds[e]), self.actions[e][:-1] if method == "step" and e in asked
                                else self.actions[e]) for e in live]  # fmt: skip
                    warnings.warn(f"Pool worker {worker} {why}; replaced, its {len(replays)} live episodes replayed "
                                  f"and its {method} sent again", RuntimeWarning, stacklevel=4)  # fmt: skip
                    why = self._run({worker: ("replay", (replays,))})[1].get(worker)
                    if why is None:
                        break
        return results

    def reset(self, seeds, ids=None) -> np.ndarray:
        """Start episodes: every env with ``seeds[i]`` (``ids=None``), or only envs ``ids`` with
        ``seeds[k]`` each (the others keep running). Returns their first observations, in order."""
        ids = np.arange(self.num_envs) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if seeds.shape != ids.shape:
            raise ValueError(f"Invalid seeds: {seeds.shape[0]} seeds for {ids.shape[0]} envs")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs or np.unique(ids).size != ids.size):
            raise ValueError(f"Invalid ids: {ids.tolist()} (expected distinct ids in [0, {self.num_envs}))")
        self.seeds[ids] = seeds
        for i in ids:
            self.actions[i] = []
        self.live[ids] = True
        workers = self.worker_of[ids]
        shares = {int(w): np.flatnonzero(workers == w) for w in np.unique(workers)}  # positions in ids, per worker
        results = self._call_all({w: ("reset", ([(int(ids[k]), int(seeds[k])) for k in mine],))
                                  for w, mine in shares.items()})  # fmt: skip
        observations = [None] * ids.shape[0]
        for w, mine in shares.items():
            for k, observation in zip(mine, results[w], strict=True):
                observations[k] = observation
        return np.stack(observations) if observations else np.zeros((0,), dtype=np.float32)

    def restore(self, seeds, actions: list[list[np.ndarray]]) -> None:
        """Bring every env back to an earlier pool's episodes: env i reset with ``seeds[i]``,
        then ``actions[i]`` replayed (a resumed run's episodes in flight; the envs must be
        deterministic for the same states)."""
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if seeds.shape != (self.num_envs,) or len(actions) != self.num_envs:
            raise ValueError(f"Invalid episodes: {seeds.shape[0]} seeds and {len(actions)} action lists for "
                             f"{self.num_envs} envs")  # fmt: skip
        self.seeds[:] = seeds
        self.actions = [[np.asarray(a, dtype=np.float32) for a in episode] for episode in actions]
        self.live[:] = True
        self._call_all({w: ("replay", ([(int(i), int(seeds[i]), self.actions[i])
                                        for i in np.flatnonzero(self.worker_of == w)],))
                        for w in range(self.workers)})  # fmt: skip

    def step(self, ids, actions) -> StepResult:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape[0] != ids.shape[0]:
            raise ValueError(f"Invalid actions: {actions.shape[0]} actions for {ids.shape[0]} episodes")
        if not self.live[ids].all():
            raise ValueError(f"Invalid ids: episodes {ids[~self.live[ids]].tolist()} are not running")
        for i, action in zip(ids, actions, strict=True):
            self.actions[i].append(action)
        workers = self.worker_of[ids]
        shares = {int(w): np.flatnonzero(workers == w) for w in np.unique(workers)}  # positions in ids, per worker
        results = self._call_all({w: ("step", ([(int(ids[k]), actions[k]) for k in mine],))
                                  for w, mine in shares.items()})  # fmt: skip
        out = [None] * ids.shape[0]
        for w, rows in results.items():
            for k, row in zip(shares[w], rows, strict=True):
                out[k] = row
        template = next((row[0] for row in out if row[0] is not None), np.zeros(0, dtype=np.float32))
        observations = np.stack([row[0] if row[0] is not None else np.zeros_like(template) for row in out])
        done = np.array([row[2] for row in out])
        self.live[ids[done]] = False
        return StepResult(observations, np.array([row[1] for row in out]), done, np.array([row[3] for row in out]),
                          [row[4] for row in out])  # fmt: skip

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialPool(_Pool):
    """Every env in this process (the default: no inter-process cost). The deadline is kept
    with a ``SIGALRM`` timer where one can be set (POSIX, main thread, no timer of the
    caller's running): it interrupts Python code, not a call stuck inside C, and the envs it
    interrupts are discarded, rebuilt and replayed. It counts the time the process ran, not
    time it spent stopped (`_AwakeClock`)."""

    def __init__(self, factory: EnvFactory, num_envs: int, workers: int = 1, step_timeout: float | None = STEP_TIMEOUT):
        super().__init__(factory, num_envs, 1, step_timeout)
        self.episodes = _Episodes(factory)

    def _restart(self, worker: int) -> None:
        with contextlib.suppress(Exception):  # envs interrupted mid-call may not close cleanly
            self.episodes.close()
        self.episodes = _Episodes(self.factory)

    def _run(self, calls):
        results, failed = {}, {}
        for worker, (method, args) in calls.items():
            seconds = self._deadline(method, args)
            try:
                with _alarm(seconds):
                    results[worker] = getattr(self.episodes, method)(*args)
            except _Hung:
                failed[worker] = f"did not answer a {method} call within {seconds:g} s"
        return results, failed

    def close(self) -> None:
        self.episodes.close()


@contextlib.contextmanager
def _alarm(seconds: float | None):
    """Raise ``_Hung`` in this thread after ``seconds`` of this process's running time
    (`_AwakeClock`, read by the alarm every ``AWAKE_SLICE``), where a SIGALRM timer is free to
    use. The handler restarts the system calls it interrupts (``SA_RESTART``), so that C code
    in a call sees the ticks as little as it can (sleeps and polls still return early, as they
    do for every signal). The caller's handler is restored however the block ends, a late alarm
    included (else ours would stay installed and every later deadline would find the timer
    taken)."""
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
              and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None))  # fmt: skip
    if not usable:
        yield
        return

    clock = _AwakeClock()

    def expired(signum, frame):  # every slice: the deadline counts the time this process ran (_AwakeClock)
        remaining = seconds - clock.read()
        if remaining <= 0:
            raise _Hung
        signal.setitimer(signal.ITIMER_REAL, min(remaining, AWAKE_SLICE))

    previous = signal.signal(signal.SIGALRM, expired)
    try:
        signal.siginterrupt(signal.SIGALRM, False)
        signal.setitimer(signal.ITIMER_REAL, min(seconds, AWAKE_SLICE))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _answers_within(connection, seconds: float, clock: _AwakeClock) -> bool:
    """Whether ``connection`` has an answer before ``clock`` reads ``seconds``."""
    while True:
        remaining = seconds - clock.read()
        if remaining <= 0:
            return connection.poll(0)
        if connection.poll(min(remaining, AWAKE_SLICE)):
            return True


def _process_worker(connection, factory: EnvFactory) -> None:
    episodes = _Episodes(factory)
    try:
        while True:
            method, args = connection.recv()
            if method == "close":
                break
            connection.send(getattr(episodes, method)(*args))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        episodes.close()


class ProcessPool(_Pool):
    """Envs in ``workers`` worker processes (``multiprocessing``, forkserver start), one pipe
    each; a worker that dies is replaced and its live episodes replayed."""

    def __init__(self, factory: EnvFactory, num_envs: int, workers: int = 2, step_timeout: float | None = STEP_TIMEOUT):
        super().__init__(factory, num_envs, workers, step_timeout)
        self.context = mp.get_context("forkserver")
        self.processes: list = [None] * self.workers
        self.connections: list = [None] * self.workers
        for worker in range(self.workers):
            self._restart(worker)

    def _restart(self, worker: int) -> None:
        if self.processes[worker] is not None:
            self.processes[worker].kill()
            self.processes[worker].join()
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_process_worker, args=(child, self.factory), daemon=True)
        process.start()
        child.close()
        self.processes[worker], self.connections[worker] = process, parent

    def pid(self, worker: int) -> int:
        return self.processes[worker].pid

    def _run(self, calls):
        failed, deadlines, clock = {}, {}, _AwakeClock()
        for worker, call in calls.items():
            deadlines[worker] = self._deadline(*call)
            try:
                self.connections[worker].send(call)
            except (BrokenPipeError, OSError):
                failed[worker] = f"(pid {self.pid(worker)}) died"
        results = {}
        for worker, (method, _) in calls.items():
            if worker in failed:
                continue
            connection, seconds = self.connections[worker], deadlines[worker]
            try:
                if seconds is not None and not _answers_within(connection, seconds, clock):
                    self.processes[worker].kill()  # stopped or stuck: it will not answer
                    failed[worker] = f"(pid {self.pid(worker)}) did not answer a {method} call within {seconds:g} s"
                    continue
                results[worker] = connection.recv()
            except (EOFError, ConnectionResetError, OSError):
                failed[worker] = f"(pid {self.pid(worker)}) died"
        return results, failed

    def close(self) -> None:
        for worker, connection in enumerate(self.connections):
            if connection is None:
                continue
            with contextlib.suppress(BrokenPipeError, OSError):
                connection.send(("close", ()))
            self.processes[worker].join(timeout=5)
            if self.processes[worker].is_alive():
                self.processes[worker].kill()
        self.connections = [None] * self.workers


class RayPool(_Pool):
    """Envs on ``workers`` Ray actors. ``ray.init`` is called when Ray is not initialized yet:
    a local cluster by default, started bound to the loopback (127.0.0.1: its GCS, raylet,
    object store and workers are not reachable from other machines), or an existing one with
    ``address=`` ("auto" or "ray://...", whose own network settings then apply). The dashboard
    is off unless ``include_dashboard=True``; Ray's token authentication is left on. An actor
    that dies or misses its deadline is killed and replaced by a new one (Ray places it on any
    live node) and its live episodes are replayed there."""

    def __init__(self, factory: EnvFactory, num_envs: int, workers: int = 2, step_timeout: float | None = STEP_TIMEOUT,
                 *, address: str | None = None, include_dashboard: bool = False,
                 num_cpus_per_worker: float = 1.0):  # fmt: skip
        try:
            import ray
        except ImportError as error:
            raise ImportError("RayPool needs Ray: pip install 'bbopt[ray]'") from error
        super().__init__(factory, num_envs, workers, step_timeout)
        self.ray = ray
        if not ray.is_initialized():
            options = {"address": address, "include_dashboard": include_dashboard, "log_to_driver": False}
            if address is None:
                options["num_cpus"] = max(os.cpu_count() or 1, int(self.workers * num_cpus_per_worker))
                with _loopback_only(ray):
                    ray.init(**options)
            else:
                ray.init(**options)
        self.actor_class = ray.remote(num_cpus=num_cpus_per_worker, max_restarts=0)(_Episodes)
        self.actors: list = [None] * self.workers
        for worker in range(self.workers):
            self._restart(worker)

    def _restart(self, worker: int) -> None:
        if self.actors[worker] is not None:
            self.ray.kill(self.actors[worker], no_restart=True)
        self.actors[worker] = self.actor_class.remote(self.factory)

    def _run(self, calls):
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

        began = time.monotonic()
        futures = {w: getattr(self.actors[w], method).remote(*args) for w, (method, args) in calls.items()}
        results, failed = {}, {}
        for worker, future in futures.items():
            method, args = calls[worker]
            seconds = self._deadline(method, args)
            try:
                timeout = None if seconds is None else max(0.0, began + seconds - time.monotonic())
                results[worker] = self.ray.get(future, timeout=timeout)
            except GetTimeoutError:
                self.ray.kill(self.actors[worker], no_restart=True)
                failed[worker] = f"(Ray actor) did not answer a {method} call within {seconds:g} s"
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                failed[worker] = "(Ray actor) died"
        return results, failed

    def close(self) -> None:
        for actor in self.actors:
            if actor is not None:
                self.ray.kill(actor, no_restart=True)
        self.actors = [None] * self.workers


@contextlib.contextmanager
def _loopback_only(ray):
    """Have ``ray.init`` start its local cluster on 127.0.0.1. Ray takes the node's address
    from the default route unless clusters are disabled (its Windows/macOS mode), in which
    case it uses the loopback; that switch is read from ``ray_constants`` at start-up."""
    from ray._private import ray_constants

    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled


POOLS = {"serial": SerialPool, "process": ProcessPool, "ray": RayPool}


def step_seconds(factory: EnvFactory, steps: int = 20, repeats: int = 5) -> float:
    """Wall time of one ``env.step`` with random actions: the fastest of ``repeats`` batches
    of ``steps`` (the minimum is robust to other load on the machine), a probe for "auto"."""
    env = factory()
    env.reset(seed=0)
    env.action_space.seed(0)
    best = float("inf")
    for _ in range(repeats):
        actions = [env.action_space.sample() for _ in range(steps)]
        began = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        best = min(best, (time.perf_counter() - began) / steps)
    env.close()
    return best


AUTO_PROCESS_STEP_SECONDS = 1e-4


def make_pool(kind: str, factory: EnvFactory, num_envs: int, workers: int | None = None, **options) -> _Pool:
    """``kind``: "serial", "process", "ray", or "auto": worker processes when the machine has
    two or more CPUs and one env step takes at least 0.1 ms, else serial. (benchmarks/
    pools.py, 2 cores: with the policy in the loop, HalfCheetah at 0.03 ms per step
    trains 1.4x faster serially than with 2 worker processes; at 0.26 ms per step (frame_skip
    50) the processes step 1.7x faster than one process.)"""
    if kind == "auto":
        many = (os.cpu_count() or 1) >= 2
        kind = "process" if many and step_seconds(factory) >= AUTO_PROCESS_STEP_SECONDS else "serial"
    if kind not in POOLS:
        raise ValueError(f"Invalid pool: {kind!r} (expected one of {[*sorted(POOLS), 'auto']})")
    if workers is None:
        workers = 1 if kind == "serial" else max(1, (os.cpu_count() or 2))
    return POOLS[kind](factory, num_envs, workers, **options)
