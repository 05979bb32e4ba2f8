"""`benchmarks.locomotion --state DIR`: a run stopped mid-way goes on from its last evaluation when the
same command runs again, with the returns of a run that was never stopped."""

import json

import pytest
import torch

pytest.importorskip("mujoco", reason="MuJoCo is not installed (pip install 'bbopt[mujoco]')")

from benchmarks import _report, locomotion
from benchmarks._run_state import RunState

# (method, budget, eval_every): a bbopt method (population 8, 2,048 steps an update, a milestone) and both peers
RUNS = [("ovlr", 6000, 2000), ("ppo", 1536, 512), ("ars", 1500, 500)]


def _argv(tmp_path, method, budget, every, out, *extra):
    milestones = ["--milestones", "4000"] if method == "ovlr" else []
    return ["--budget", str(budget), "--eval-every", str(every), "--envs", "Hopper-v5", "--seeds", "0",
            "--population", "8", "--methods", method, *milestones, "--out", str(tmp_path / out), *extra]  # fmt: skip


def _stop_at_the_second_save(monkeypatch):
    """A kill just after the run kept its state at its first evaluation."""
    saves, save = [], RunState.save

    def save_then_stop(self, env_steps, **parts):
        if saves:
            raise KeyboardInterrupt
        saves.append(env_steps)
        save(self, env_steps, **parts)

    monkeypatch.setattr(RunState, "save", save_then_stop)
    return saves


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()  # run_one sets one thread per run, as in its pool
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("method", "budget", "every"), RUNS, ids=[run[0] for run in RUNS])
def test_a_stopped_run_goes_on_from_its_last_evaluation_with_the_returns_of_one_never_stopped(
    tmp_path, monkeypatch, method, budget, every
):
    (whole,) = locomotion.main(_argv(tmp_path, method, budget, every, "whole.json"))
    state = tmp_path / "state"
    argv = _argv(tmp_path, method, budget, every, "resumed.json", "--state", str(state))
    with monkeypatch.context() as patch:
        saves = _stop_at_the_second_save(patch)
        with pytest.raises(KeyboardInterrupt):
            locomotion.main(argv)
    run_dir = state / f"Hopper-v5-{method}-seed0"
    assert (run_dir / "state.pt").is_file() and not (run_dir / "row.json").exists()
    assert not (tmp_path / "resumed.partial.jsonl").exists()  # the state keeps the runs: no partial file
    (resumed,) = locomotion.main(argv)
    assert resumed["resumed_at"] == saves and resumed["commits"] == [_report.STARTED_AT] * 2
    assert [list(point[:2]) for point in resumed["curve"]] == [list(point[:2]) for point in whole["curve"]]
    assert resumed["final_return"] == whole["final_return"] and resumed["env_steps"] == whole["env_steps"]
    reached = {m: list(kept[:2]) for m, kept in resumed.get("milestones", {}).items()}  # env steps, return
    assert reached == {m: list(kept[:2]) for m, kept in whole.get("milestones", {}).items()}
    assert resumed["cpu_seconds"] >= resumed["curve"][0][3]  # the clock went on from the kept seconds
    assert (
        not (run_dir / "state.pt").exists()
        and json.loads((run_dir / "row.json").read_text())["final_return"] == (whole["final_return"])
    )


def test_a_rerun_reports_the_runs_that_had_ended_without_running_them_again(tmp_path, monkeypatch):
    argv = _argv(tmp_path, "ars", 500, 500, "first.json", "--state", str(tmp_path / "state"))
    (first,) = locomotion.main(argv)

    def never(*args, **kwargs):
        raise AssertionError("an ended run ran again")

    monkeypatch.setattr(locomotion._locomotion_peers, "run", never)
    (again,) = locomotion.main([*argv[:-3], str(tmp_path / "again.json"), "--state", str(tmp_path / "state")])
    assert json.loads(json.dumps(first)) == again


@pytest.mark.parametrize(("changed", "value"), [("--budget", "1000"), ("--eval-every", "250"), ("--population", "16")])
def test_a_state_saved_by_a_run_of_other_settings_is_refused_and_left_as_it_was(tmp_path, monkeypatch, changed, value):
    argv = _argv(tmp_path, "ars", 1500, 500, "a.json", "--state", str(tmp_path / "state"))
    with monkeypatch.context() as patch:
        _stop_at_the_second_save(patch)
        with pytest.raises(KeyboardInterrupt):
            locomotion.main(argv)
    kept = tmp_path / "state" / "Hopper-v5-ars-seed0" / "state.pt"
    before = kept.read_bytes()
    other = list(argv)
    other[other.index(changed) + 1] = value
    with pytest.raises(ValueError, match=r"state\.pt was saved by another run .*give this run another --state"):
        locomotion.main(other)
    assert kept.read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--methods", "pgpe"], "--state cannot resume pgpe"), (["--rows", "x.json"], "--rows runs nothing")],
)
def test_state_refuses_what_it_cannot_keep_before_running_anything(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        locomotion.main(["--state", str(tmp_path / "state"), "--out", str(tmp_path / "never.json"), *extra])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_a_clock_restored_from_its_state_counts_on():
    clock = _report.TrainingClock()
    clock.restore({"wall": 10.0, "cpu": 7.0, "total": 12.0})
    assert clock.read() == (10.0, 7.0) and 12.0 <= clock.total() < 13.0
    with clock.running():
        sum(range(10**5))
    wall, cpu = clock.read()
    assert wall > 10.0 and cpu > 7.0
    with clock.running(), pytest.raises(RuntimeError, match="while running"):
        clock.restore(clock.state())
