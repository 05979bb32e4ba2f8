"""Fault injection on run directories and the command line: corrupt and truncated checkpoints,
a second writer, a full disk, Ctrl-C, thread counts, and nonsense arguments. Each fault ends in
a one-line message (exit code 2, or 130 for Ctrl-C), and nothing finished is lost."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from bbopt import cli
from bbopt.rollout import checkpoint as checkpoints
from bbopt.rollout.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint
from bbopt.rollout.lock import RunLock, RunLocked

ENV = "Pendulum-v1"  # registered with Gymnasium, no MuJoCo: 200 steps per episode
SMALL = ["--env", ENV, "--population", 4, "--hidden", "8", "--pool", "serial", "--eval-every", 1,
         "--eval-episodes", 1, "--checkpoint-every", 1, "--no-progress"]  # fmt: skip


def bbopt(*arguments, cwd, threads=None, **options):
    env = {**os.environ}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run([sys.executable, "-m", "bbopt.cli", *map(str, arguments)], capture_output=True, text=True,
                          cwd=cwd, env=env, **options)  # fmt: skip


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# ------------------------------------------------------------------------ checkpoint files
def state():
    generator = torch.Generator().manual_seed(0)
    return {"weights": torch.randn(64, 16, generator=generator), "steps": 7, "history": [{"r": 1.5}]}


def test_every_single_bit_flip_in_a_checkpoint_is_detected(tmp_path):
    path = save_checkpoint(state(), tmp_path / "c.pt")
    data = path.read_bytes()
    rng = random.Random(0)
    positions = rng.sample(range(len(data) * 8), 200) + list(range(0, 8 * 20, 7))  # and the header's start
    for bit in positions:
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 1, 50, -1])
def test_truncated_or_empty_checkpoints_are_named_not_tracebacks(tmp_path, keep):
    path = save_checkpoint(state(), tmp_path / "c.pt")
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CheckpointError, match=r"c\.pt: (empty|truncated|corrupt|not a)"):
        load_checkpoint(path)


def test_a_corrupt_latest_falls_back_to_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"steps": 1}, path)
    save_checkpoint({"steps": 2}, path)
    assert load_checkpoint(previous_path(path))["steps"] == 1
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="loaded the previous checkpoint"):
        assert load_checkpoint(path, fallback=True)["steps"] == 1
    save_checkpoint({"steps": 3}, path)  # the corrupt latest is not kept as "previous"
    assert load_checkpoint(previous_path(path))["steps"] == 1


def test_a_pickled_object_is_refused_without_running_it(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = save_checkpoint({"steps": 1}, tmp_path / "c.pt")

    def full(_descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"steps": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["steps"] == 1 or load_checkpoint(path, fallback=True)["steps"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _result_writers():
    from bbopt.envs.binpacking.instance import Instance, write_bpplib
    from bbopt.envs.binpacking.runs import write_results
    from bbopt.envs.ioh.suite import write_summary
    from bbopt.rollout.runs import rewrite_curve

    return {
        "write_json": lambda path, k: checkpoints.write_json(path, {"k": k}),
        "a resumed run's curve.csv": lambda path, k: rewrite_curve(path, [{"update": k, "env_steps": 10 * k}]),
        "ioh summary.json": lambda path, k: write_summary([{"k": k, "trace": [1]}], [], path, {}),
        "binpacking results.json": lambda path, k: write_results(path, {}, [], [{"k": k}]),
        "a BPPLIB instance": lambda path, k: write_bpplib(Instance(10, [k, 2]), path),
    }


@pytest.mark.parametrize("writer", ["write_json", "a resumed run's curve.csv", "ioh summary.json",
                                    "binpacking results.json", "a BPPLIB instance"])  # fmt: skip
@pytest.mark.parametrize("fault", ["Ctrl-C", "full disk"])
def test_result_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch, writer, fault):
    write = _result_writers()[writer]
    path = tmp_path / "result"
    write(path, 1)
    before = path.read_bytes()

    def interrupted(_descriptor):  # while the new file is flushed to disk
        raise KeyboardInterrupt if fault == "Ctrl-C" else OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt if fault == "Ctrl-C" else OSError):
        write(path, 3)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["result"]
    write(path, 3)
    assert path.read_bytes() != before  # the writer does replace the file when nothing stops it


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("bbopt.rollout.runs.save_checkpoint", full)
    monkeypatch.setattr("bbopt.rollout.driver.save_checkpoint", full)
    code = cli.main(["train", *map(str, SMALL), "--env-steps", "800", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "No space left on device" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- run dirs
def test_a_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bbopt.rollout.lock import RunLock\n"
        f"with RunLock({str(tmp_path / 'run')!r}):\n    print('held', flush=True); time.sleep(60)"
    )], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(RunLocked, match=f"in use by another bbopt process \\(pid {holder.pid}\\)"),
            RunLock(tmp_path / "run"),
        ):
            pass
        done = bbopt("train", *SMALL, "--env-steps", 400, "--out", tmp_path / "run", cwd=tmp_path)
        assert done.returncode == 2 and "in use by another bbopt process" in one_line(done.stderr)
        assert not (tmp_path / "run" / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path / "run"), RunLock(tmp_path / "run"):  # free again once the holder died; re-entrant
        pass


def test_train_resume_recovers_from_a_corrupt_checkpoint_and_cleans_temporaries(tmp_path):
    run = tmp_path / "run"
    done = bbopt("train", *SMALL, "--env-steps", 2400, "--out", run, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    latest = run / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:-100])  # truncated by a crash or a bad disk
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    done = bbopt("train", "--resume", run, "--env-steps", 3200, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "loaded the previous checkpoint" in done.stderr
    assert not (run / ".checkpoint.pt.abc123.tmp").exists()
    rows = (run / "curve.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, len(rows) + 1))  # redone, not duplicated


def test_evaluate_names_a_corrupt_policy_file_and_falls_back_to_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert bbopt("train", *SMALL, "--env-steps", 800, "--out", run, cwd=tmp_path).returncode == 0
    policy = run / "policy.pt"
    policy.write_bytes(policy.read_bytes()[:-5])
    done = bbopt("evaluate", run, "--episodes", 1, cwd=tmp_path)
    assert done.returncode == 0 and "policy.pt: truncated" in done.stderr and "checkpoint" in done.stderr
    torch.save({"x": torch.nn.Linear(2, 2)}, policy)  # a pickled module, not a state dict
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).unlink(missing_ok=True)
    done = bbopt("evaluate", run, "--episodes", 1, cwd=tmp_path)
    assert done.returncode == 2 and "policy.pt" in one_line(done.stderr)


def test_a_resume_computes_with_the_runs_thread_count_and_continues_bit_for_bit(tmp_path):
    # 8 episodes x 200 steps = 1,600 rows through 64-wide layers: enough for torch's CPU matmul to
    # sum in another order with 1 thread than with 2 (at 8 wide it does not).
    options = [*SMALL, "--population", 8, "--hidden", "64"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert bbopt("train", *options, "--env-steps", 6400, "--out", straight, cwd=tmp_path, threads=2).returncode == 0
    assert bbopt("train", *options, "--env-steps", 3200, "--out", split, cwd=tmp_path, threads=2).returncode == 0
    assert json.loads((split / "config.json").read_text())["threads"] == 2
    done = bbopt("train", "--resume", split, "--env-steps", 6400, "--no-progress", cwd=tmp_path, threads=1)
    assert done.returncode == 0, done.stderr
    assert json.loads((split / "summary.json").read_text())["threads"] == 2
    first, second = (load_checkpoint(run / "policy.pt") for run in (straight, split))
    assert all(torch.equal(first[key], second[key]) for key in first)


# ------------------------------------------------------------------------------ Ctrl-C
def interrupt_after(arguments, ready, cwd, *, seconds=120):
    process = subprocess.Popen([sys.executable, "-m", "bbopt.cli", *map(str, arguments)], cwd=cwd, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + seconds
    while not ready() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def test_ctrl_c_in_train_stops_in_one_line_and_leaves_a_resumable_run(tmp_path):
    run = tmp_path / "run"
    code, err = interrupt_after(["train", *SMALL, "--env-steps", 10**6, "--out", run],
                                lambda: (run / "checkpoint.prev.pt").exists(), tmp_path)  # fmt: skip
    assert code == 130
    assert f"interrupted: the run keeps its last checkpoint; continue with `bbopt train --resume {run}`" in (
        one_line(err)
    )
    done = bbopt("train", "--resume", run, "--env-steps", 4000, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = (run / "curve.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, len(rows) + 1))


def test_ctrl_c_in_ioh_keeps_every_finished_run(tmp_path):
    pytest.importorskip("ioh")
    out = tmp_path / "ioh"
    rows = out / "rows.jsonl"
    code, err = interrupt_after(
        ["ioh", "--functions", "1-24", "--instances", "1", "--dimensions", "2", "--budget-per-dim", 200,
         "--solvers", "es", "--out", out, "--no-progress"],
        lambda: rows.exists() and len(rows.read_text().splitlines()) >= 2, tmp_path,
    )  # fmt: skip
    assert code == 130 and "every finished run is kept" in one_line(err)
    finished = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(finished) >= 2 and [row["function"] for row in finished] == list(range(1, len(finished) + 1))


# ------------------------------------------------------------------------ bad arguments
BAD_ARGUMENTS = {
    "eval every": (["train", "--eval-every", "-1", "--out", "{tmp}/x"], "--eval-every"),
    "eval episodes": (["train", "--eval-episodes", "-1", "--out", "{tmp}/x"], "--eval-episodes"),
    "checkpoint every": (["train", "--checkpoint-every", "-1", "--out", "{tmp}/x"], "--checkpoint-every"),
    "unknown env": (["train", "--env", "NoSuchEnv-v0", "--out", "{tmp}/x"], "Invalid env: 'NoSuchEnv-v0'"),
    "out under a file": (["train", "--env", ENV, "--out", "{tmp}/file/x"], "Not a directory"),
    "ioh no solvers": (["ioh", "--solvers", "", "--out", "{tmp}/x"], "--solvers"),
    "packing no solvers": (["binpacking", "--solvers", ",", "--out", "{tmp}/x"], "--solvers"),
    "hidden": (["train", "--env", ENV, "--hidden", "8,x", "--out", "{tmp}/x"], "Invalid hidden"),
    "sigma": (["train", "--env", ENV, "--sigma", "nan", "--out", "{tmp}/x"], "Invalid sigma"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_nonsense_arguments_are_refused_with_exit_code_2(tmp_path, case, capsys):
    arguments, message = BAD_ARGUMENTS[case]
    (tmp_path / "file").write_text("a file, not a directory")
    try:
        code = cli.main([a.format(tmp=tmp_path) for a in arguments])
    except SystemExit as error:  # argparse's own refusal: usage line + error line
        code = error.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    if not message.startswith("--"):
        one_line(err)
    assert not (tmp_path / "x" / "config.json").exists()


def test_a_resume_refuses_options_that_would_change_the_run(tmp_path):
    run = tmp_path / "run"
    assert bbopt("train", *SMALL, "--env-steps", 800, "--out", run, cwd=tmp_path).returncode == 0
    done = bbopt("train", "--resume", run, "--env", "Hopper-v5", "--population", 8, cwd=tmp_path)
    assert done.returncode == 2
    assert "--env, --population cannot change" in one_line(done.stderr)
