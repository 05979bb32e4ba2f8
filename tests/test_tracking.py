"""Experiment tracking (bbopt.tracking): the Tracker interface in bbopt.fit and the rollout
Trainer, TensorBoard event files read back, a resumed run's purge, the CLI's --tensorboard."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import bbopt
from bbopt import cli
from bbopt.envs.ioh.suite import read_rows
from bbopt.losses import ZeroOneLoss
from bbopt.policies import MLP
from bbopt.rollout import driver
from bbopt.tracking import TensorBoard, scalars_of, tensorboard_or_none
from bbopt.training import accuracy

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

SMALL_TRAIN = ["--env", "Pendulum-v1", "--population", "4", "--hidden", "8", "--pool", "serial",
               "--eval-every", "1", "--eval-episodes", "1", "--checkpoint-every", "1", "--no-progress",
               "--horizon", "200"]  # 4 slots x 200 steps per update, the 200 steps of a Pendulum episode  # fmt: skip


class ListTracker:
    def __init__(self):
        self.logged = []

    def log(self, scalars, step):
        self.logged.append((step, dict(scalars)))

    def close(self):
        pass


def read_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag under ``directory`` (all event files), as (step, value) in step order,
    what TensorBoard shows (purged steps hidden)."""
    accumulator = event_accumulator.EventAccumulator(str(directory))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def blobs():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
    labels = torch.arange(3).repeat(30)
    return centers[labels] + 0.3 * torch.randn(90, 2, generator=generator), labels


def test_scalars_keep_finite_real_numbers_only():
    record = {"a": 1, "b": 2.5, "c": None, "d": math.nan, "e": math.inf, "f": "text", "g": True, "h": np.float32(3)}
    assert scalars_of(record, "x/") == {"x/a": 1.0, "x/b": 2.5, "x/h": 3.0}


def test_train_logs_each_epoch_record_at_its_epoch():
    inputs, labels = blobs()
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=30)
    model = MLP(2, 3, hidden=(8,), seed=0)
    solver = bbopt.OVLR(model, torch.optim.Adam(model.parameters(), lr=0.01), sigma=1.0, samples=8, seed=0)
    tracker = ListTracker()
    history = bbopt.fit(model, ZeroOneLoss(), loader, epochs=3, solver=solver, eval_data=[(inputs, labels)],
                        metrics={"accuracy": accuracy}, progress=False, tracker=tracker)  # fmt: skip
    assert [step for step, _ in tracker.logged] == [1, 2, 3]
    assert [scalars for _, scalars in tracker.logged] == history


def test_train_refuses_a_tracker_without_log_and_close():
    inputs, labels = blobs()
    model = MLP(2, 3)
    solver = bbopt.OVLR(model, torch.optim.SGD(model.parameters(), lr=0.1), samples=4)
    with pytest.raises(ValueError, match="Invalid tracker: list"):
        bbopt.fit(model, ZeroOneLoss(), [(inputs, labels)], epochs=1, solver=solver, tracker=[])


def test_tensorboard_event_files_read_back(tmp_path):
    with TensorBoard(tmp_path / "tb", prefix="run/") as tracker:
        for step in range(1, 4):
            tracker.log({"loss": 1.0 / step, "sigma": None, "note": "skipped"}, step=step)
    assert read_scalars(tmp_path / "tb") == {"run/loss": [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]}
    with pytest.raises(RuntimeError, match=r"log\(\) after close\(\)"):
        tracker.log({"loss": 1.0}, step=4)


def test_a_resumed_run_hides_what_the_last_session_logged_past_its_checkpoint(tmp_path):
    with TensorBoard(tmp_path) as first:  # crashed after step 5; its checkpoint holds step 3
        for step in range(1, 6):
            first.log({"value": float(step)}, step=step)
    with TensorBoard(tmp_path, purge_step=4) as second:  # redoes 4 and 5 with other values
        for step in range(4, 7):
            second.log({"value": 10.0 * step}, step=step)
    assert read_scalars(tmp_path)["value"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]


def test_a_missing_tensorboard_package_is_a_one_line_error_naming_the_option(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ModuleNotFoundError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    with pytest.raises(ImportError, match=r"pip install 'bbopt\[tracking\]'"):
        TensorBoard(tmp_path)
    with pytest.raises(ValueError, match=r"Invalid --tensorboard: .*bbopt\[tracking\]"):
        tensorboard_or_none(tmp_path)
    with tensorboard_or_none(None) as nothing:
        assert nothing is None


def test_a_tensorboard_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        TensorBoard(tmp_path / "file")


def test_cli_binpacking_and_ioh_log_each_finished_run(tmp_path):
    packing = ["binpacking", "--count", "2", "--items", "30", "--budget", "100", "--solvers", "ovlr,ffd",
               "--no-progress", "--out", str(tmp_path / "bp"), "--tensorboard", str(tmp_path / "tb-bp")]  # fmt: skip
    assert cli.main(packing) == 0
    scalars = read_scalars(tmp_path / "tb-bp")
    assert [step for step, _ in scalars["ovlr/bins_above_bound"]] == [0, 1]
    assert {"ffd/success", "ffd/evaluations", "ovlr/seconds"} <= scalars.keys()
    ioh = ["ioh", "--functions", "1,2", "--instances", "1", "--dimensions", "2", "--budget-per-dim", "20",
           "--solvers", "ovlr", "--no-progress", "--out", str(tmp_path / "ioh"),
           "--tensorboard", str(tmp_path / "tb")]  # fmt: skip
    assert cli.main(ioh) == 0
    scalars = read_scalars(tmp_path / "tb")
    assert [step for step, _ in scalars["ovlr/d2/score"]] == [0, 1]
    rows = read_rows(tmp_path / "ioh" / "rows.jsonl")
    expected = [math.log10(row["best_precision"]) for row in rows]
    assert [value for _, value in scalars["ovlr/d2/log10_precision"]] == pytest.approx(expected, rel=1e-6)


def test_cli_train_logs_each_update_at_its_env_steps_and_a_resume_hides_the_redone_steps(tmp_path, monkeypatch):
    """The first session is stopped (Ctrl-C) while checkpointing its second update, after that
    update was logged: the resume redoes it, and TensorBoard shows each env step once."""
    board, real_save = tmp_path / "tb", driver.save_checkpoint
    saves = []

    def stopped_at_the_second(state, path, **options):
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt
        return real_save(state, path, **options)

    monkeypatch.setattr(driver, "save_checkpoint", stopped_at_the_second)
    run = ["train", *SMALL_TRAIN, "--env-steps", "1600", "--out", str(tmp_path / "run"), "--tensorboard", str(board)]
    assert cli.main(run) == 130
    first = read_scalars(board)
    assert [step for step, _ in first["return_mean"]] == [800, 1600]  # 4 episodes x 200 steps per update
    assert {"eval_return", "sigma", "env_steps_per_second", "update"} <= first.keys()
    monkeypatch.setattr(driver, "save_checkpoint", real_save)
    resume = ["train", "--resume", str(tmp_path / "run"), "--env-steps", "2400", "--tensorboard", str(board)]
    assert cli.main(resume) == 0
    assert [step for step, _ in read_scalars(board)["return_mean"]] == [800, 1600, 2400]
