"""Hung pool workers (issue 19, class 5): a worker that stops answering (SIGSTOP, a sleep, a
deadlock) is killed after ``step_timeout``, replaced, and its live episodes replayed, with the
same results as a run without the fault; and a local Ray pool listens on the loopback only."""

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from bbopt.rollout import EnvFactory, make_pool
from bbopt.rollout.pools import _alarm
from tests.test_rollout import FACTORY, flat, make_solver, scripted_rollout
from tests.toy_envs import hanging_point_mass

SEEDS = np.arange(6)


@pytest.fixture(scope="module")
def expected():
    with make_pool("serial", FACTORY, 6) as serial:
        return scripted_rollout(serial, SEEDS)


def same(got, expected):
    return got[0] == expected[0] and np.array_equal(got[1], expected[1])


def test_a_stopped_process_worker_is_killed_replaced_and_replayed(expected):
    with make_pool("process", FACTORY, 6, 2, step_timeout=1.0) as pool:
        stopped = []

        def stop_at_four(t):
            if t == 4:
                stopped.append(pool.pid(1))
                os.kill(pool.pid(1), signal.SIGSTOP)

        began = time.monotonic()
        with pytest.warns(RuntimeWarning, match=r"worker 1 \(pid \d+\) did not answer a step call within 1 s; "
                                                r"replaced, its 3 live episodes replayed"):  # fmt: skip
            got = scripted_rollout(pool, SEEDS, before_step=stop_at_four)
        seconds = time.monotonic() - began
        assert pool.restarts == 1 and pool.pid(1) != stopped[0]
    assert same(got, expected)
    assert seconds < 20  # one deadline (1 s) and a restart, not an hour
    with pytest.raises(ProcessLookupError):  # the stopped worker was killed, not left behind
        for _ in range(50):
            os.kill(stopped[0], 0)
            time.sleep(0.1)


def test_without_a_deadline_a_stopped_worker_is_waited_for():
    with make_pool("process", FACTORY, 2, 2, step_timeout=None) as pool:
        pool.reset([0, 1])
        os.kill(pool.pid(1), signal.SIGSTOP)
        subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(2); os.kill({pool.pid(1)}, "
                          "signal.SIGCONT)"])  # fmt: skip
        began = time.monotonic()
        pool.step([0, 1], np.zeros((2, 2)))
        assert time.monotonic() - began > 1.5 and pool.restarts == 0


def test_the_deadline_clock_counts_a_stop_of_this_process_as_one_slice(monkeypatch):
    from bbopt.rollout import pools

    now = [100.0]
    monkeypatch.setattr(pools.time, "monotonic", lambda: now[0])
    clock = pools._AwakeClock()
    for gap, reads in [(0.5, 0.5), (1.9, 2.4), (600.0, 2.4 + pools.AWAKE_SLICE), (0.25, 3.65)]:
        now[0] += gap
        assert clock.read() == pytest.approx(reads)


# A run stopped as a whole (Ctrl-Z, SIGSTOP of its process group) in the middle of a step call
# whose deadline passes while it is stopped, then continued: it prints each worker's restarts.
_STOPPED_RUN = """
import sys, time, warnings
import numpy as np
from bbopt.rollout import EnvFactory, make_pool
from tests.toy_envs import slow_point_mass
warnings.simplefilter("error")  # a worker replaced warns: fail loudly
with make_pool(sys.argv[1], EnvFactory(slow_point_mass, (("step_seconds", 0.5),)), 2, 2, step_timeout=2.0) as pool:
    pool.reset([0, 1])
    print("stepping", flush=True)
    for k in range(8):
        done = np.flatnonzero(pool.step([0, 1], np.zeros((2, 2))).done)
        if done.size:
            pool.reset([10 * k + int(j) for j in done], ids=done)
    print("restarts", pool.restarts, flush=True)
"""


@pytest.mark.parametrize("kind", ["serial", "process"])
def test_a_run_stopped_and_continued_keeps_its_workers(kind):
    """Stopped for 5 s, longer than the 2 s deadline, while a 0.5 s step is under way: on SIGCONT
    the call finishes and no worker is replaced (its deadline counts the time the run ran)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", _STOPPED_RUN, kind], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=root, start_new_session=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "stepping"
        time.sleep(1.2)  # inside the third step call
        os.killpg(child.pid, signal.SIGSTOP)
        time.sleep(5.0)
        os.killpg(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 0, err
    assert out.strip() == "restarts 0"


def test_a_hung_serial_env_is_interrupted_rebuilt_and_replayed(expected, tmp_path):
    factory = EnvFactory(hanging_point_mass, (("hang_seed", 4), ("hang_step", 2), ("marker", str(tmp_path / "hung"))))
    with make_pool("serial", factory, 6, step_timeout=0.5) as pool:
        with pytest.warns(RuntimeWarning, match="worker 0 did not answer a step call within 0.5 s; replaced, its 6"):
            got = scripted_rollout(pool, SEEDS)
        assert pool.restarts == 1
    assert same(got, expected)


def test_a_worker_that_hangs_at_every_attempt_is_given_up_with_a_message():
    factory = EnvFactory(hanging_point_mass, (("hang_seed", 1), ("hang_step", 1)))
    with make_pool("process", factory, 2, 1, step_timeout=0.3) as pool:
        pool.reset([0, 1])
        pool.step([0, 1], np.zeros((2, 2)))
        gave_up = r"failed 4 times on one step call \(last: .*did not answer a step call"
        with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match=gave_up):
            pool.step([0, 1], np.zeros((2, 2)))


def test_the_trainer_update_with_a_stopped_worker_equals_the_update_without():
    from bbopt.rollout import Trainer

    def stop_worker_at(trainer, step):
        def on_step(t):
            if t == step:
                os.kill(trainer.pool.pid(1), signal.SIGSTOP)

        return on_step

    results = []
    for stop in (False, True):
        solver = make_solver("ovlr")
        with Trainer(FACTORY, solver, pool="process", workers=2, eval_every=0,
                     pool_options={"step_timeout": 1.0}) as trainer:  # fmt: skip
            with pytest.warns(RuntimeWarning, match="did not answer") if stop else warnings.catch_warnings():
                if not stop:
                    warnings.simplefilter("error")  # no warning without the fault
                record = trainer.update(on_step=stop_worker_at(trainer, 3) if stop else None)
            results.append((flat(solver.policy), record, trainer.pool.restarts))
    assert results[1][2] == 1 and results[0][0].equal(results[1][0])
    assert results[0][1]["return_mean"] == results[1][1]["return_mean"]


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1", 2e6])
def test_bad_step_timeouts_are_refused(value):
    with pytest.raises(ValueError, match="Invalid step_timeout"):
        make_pool("serial", FACTORY, 2, step_timeout=value)


def test_the_alarm_leaves_a_callers_timer_alone():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with _alarm(0.05):  # not usable: the caller's timer runs; ours must not replace it
            time.sleep(0.4)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("argv, message", [
    (["--step-timeout", "0"], "expected seconds in (0, 1e6] or 'none', got '0'"),
    (["--step-timeout", "soon"], "got 'soon'"),
    (["--step-timeout", "nan"], "got 'nan'"),
])  # fmt: skip
def test_bad_step_timeouts_on_the_command_line(argv, message, tmp_path):
    run = subprocess.run([sys.executable, "-m", "bbopt.cli", "train", "--out", str(tmp_path / "run"), *argv],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_the_command_line_passes_step_timeout_on(monkeypatch, tmp_path):
    import bbopt.rollout.runs as runs
    from bbopt.cli import main

    seen = {}
    monkeypatch.setattr(runs, "train_run", lambda config, out, **kw: seen.update(kw) or {})
    monkeypatch.setattr("bbopt.cli.print", lambda *a, **k: None, raising=False)
    with pytest.raises((KeyError, TypeError, SystemExit)):  # the fake summary is empty: main stops after the call
        main(["train", "--out", str(tmp_path / "a"), "--env", "Pendulum-v1", "--step-timeout", "none"])
    assert seen["step_timeout"] is None
    seen.clear()
    with pytest.raises((KeyError, TypeError, SystemExit)):
        main(["train", "--resume", str(tmp_path / "a"), "--step-timeout", "2.5"])
    assert seen["step_timeout"] == 2.5


# ------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def ray_pool():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bbopt[ray]')")
    if ray.is_initialized():
        ray.shutdown()
    pool = make_pool("ray", FACTORY, 6, 2, step_timeout=2.0)
    yield pool
    pool.close()
    ray.shutdown()


def listening_addresses():
    """(pid, name, address) of every listening TCP socket of this process and its descendants."""
    import psutil

    me = psutil.Process()
    pids = {me.pid} | {child.pid for child in me.children(recursive=True)}
    return [(c.pid, psutil.Process(c.pid).name(), c.laddr.ip) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]  # fmt: skip


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # ::ffff:127.0.0.1 too


def test_loopback_addresses():
    assert loopback("127.0.0.1") and loopback("::1") and loopback("::ffff:127.0.0.1")
    assert not loopback("0.0.0.0") and not loopback("::") and not loopback("10.0.0.5")


def test_a_local_ray_pool_listens_on_the_loopback_only(ray_pool):
    ray_pool.reset(SEEDS)  # the actors are up
    sockets = listening_addresses()
    names = {name for _, name, _ in sockets}
    assert any("gcs_server" in name for name in names) and any("raylet" in name for name in names), names
    exposed = [s for s in sockets if not loopback(s[2])]
    assert not exposed, f"listening beyond the loopback: {exposed}"


def test_a_stopped_ray_actor_is_killed_replaced_and_replayed(ray_pool, expected):
    ray = ray_pool.ray
    # the pool is the module's: count this test's restarts only (under load, the actors' first
    # reset in the loopback test has taken more than its 62 s and been restarted once each)
    before = ray_pool.restarts
    pids = [ray.get(actor.__ray_call__.remote(lambda self: os.getpid())) for actor in ray_pool.actors]

    def stop_at_four(t):
        if t == 4:
            os.kill(pids[1], signal.SIGSTOP)

    with pytest.warns(RuntimeWarning, match=r"worker 1 \(Ray actor\) did not answer a step call within 2 s"):
        got = scripted_rollout(ray_pool, SEEDS, before_step=stop_at_four)
    assert ray_pool.restarts - before == 1 and same(got, expected)
