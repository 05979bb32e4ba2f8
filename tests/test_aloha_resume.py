"""A fine-tuning run stopped mid-way goes on from its last kept state as if never stopped: `finetune`'s
``checkpoint``/``resume`` and ``bbopt aloha finetune --resume``."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import torch

pytest.importorskip("gym_aloha", reason="the ALOHA tests need gym-aloha: pip install -e '.[aloha]'")

import bbopt.envs.aloha.finetune as finetune_module
from bbopt.cli import main
from bbopt.envs.aloha.demos import generate_demos, save_demos
from bbopt.envs.aloha.finetune import finetune
from bbopt.envs.aloha.imitation import make_chunk_policy
from bbopt.envs.aloha.policy_files import load_chunk_policy, save_chunk_policy
from bbopt.envs.aloha.selection import Selection, unselected

# 4 updates of 2 episodes, a screen after each, the imitation term and demo starts (their generators kept too)
OPTIONS = {"method": "ovlr", "env_steps": 2400, "population": 2, "validate_every": 1, "validation_episodes": 1,
           "confirmation_episodes": 1, "demo_starts": 0.5, "progress": False}  # fmt: skip


@pytest.fixture(scope="module")
def demos():
    return generate_demos("transfer_cube", 2, progress=False)


@pytest.fixture(scope="module")
def start(demos):
    return make_chunk_policy(demos, chunk=2, hidden=(16,))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()  # a resume is bit-identical at the thread count of the run
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stop_at_the_second_save(monkeypatch):
    """Ctrl-C just after the run kept its state after its first update."""
    saves, save = [], finetune_module.save_checkpoint

    def save_then_stop(state, path, **options):
        if saves:
            raise KeyboardInterrupt
        saves.append(state["trainer"]["env_steps"])
        return save(state, path, **options)

    monkeypatch.setattr(finetune_module, "save_checkpoint", save_then_stop)
    return saves


def _weights(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.state_dict().values()]


def test_a_stopped_fine_tuning_goes_on_with_the_history_screens_and_weights_of_one_never_stopped(
    tmp_path, monkeypatch, demos, start
):
    policy, history, selection = finetune(copy.deepcopy(start), "transfer_cube", demos=demos, **OPTIONS)
    state, curve = tmp_path / "run.state.pt", tmp_path / "run.csv"
    with monkeypatch.context() as patch:
        saves = _stop_at_the_second_save(patch)
        with pytest.raises(KeyboardInterrupt):
            finetune(copy.deepcopy(start), "transfer_cube", demos=demos, checkpoint=state, resume=True, curve=curve,
                     **OPTIONS)  # fmt: skip
    assert saves == [history[0]["env_steps"]] and state.is_file()
    resumed, resumed_history, resumed_selection = finetune(copy.deepcopy(start), "transfer_cube", demos=demos,
                                                           checkpoint=state, resume=True, curve=curve,
                                                           **OPTIONS)  # fmt: skip
    assert [(r["env_steps"], r["return_mean"]) for r in resumed_history] == [
        (r["env_steps"], r["return_mean"]) for r in history
    ]
    assert resumed_selection == selection and len(selection["validation_curve"]) == 1 + len(history)  # start, screens
    assert all(torch.equal(a, b) for a, b in zip(_weights(resumed), _weights(policy), strict=True))
    assert len(curve.read_text().splitlines()) == 1 + len(history)  # the header and each update once


@pytest.mark.parametrize(("changed", "value"), [("lr", 3e-4), ("population", 4), ("seed", 1)])
def test_a_checkpoint_of_other_settings_is_refused_before_anything_runs(tmp_path, monkeypatch, start, changed, value):
    state = tmp_path / "run.state.pt"
    options = {k: v for k, v in OPTIONS.items() if k != "demo_starts"}
    with monkeypatch.context() as patch:
        _stop_at_the_second_save(patch)
        with pytest.raises(KeyboardInterrupt):
            finetune(copy.deepcopy(start), "transfer_cube", checkpoint=state, resume=True, **options)
    before = state.read_bytes()
    calls = []
    monkeypatch.setattr(finetune_module.Selection, "screen", lambda *args: calls.append(args))
    with pytest.raises(ValueError, match=rf"run\.state\.pt holds a run of other settings: {changed} "):
        finetune(copy.deepcopy(start), "transfer_cube", checkpoint=state, resume=True, **(options | {changed: value}))
    assert state.read_bytes() == before and not calls
    with pytest.raises(ValueError, match="Invalid resume: it continues from a checkpoint file"):
        finetune(copy.deepcopy(start), "transfer_cube", resume=True, **options)


def test_cli_resume_goes_on_with_a_stopped_run_and_refuses_to_start_over_it(tmp_path, monkeypatch, capsys, demos,
                                                                           start):  # fmt: skip
    policy_file = tmp_path / "bc.pt"
    save_chunk_policy(start, policy_file, task="transfer_cube", trained_by="bc-bp")
    demos_file = tmp_path / "demos.npz"
    save_demos(demos, demos_file)

    def finetune_command(out, *extra):
        return ["aloha", "finetune", "--policy", str(policy_file), "--env-steps", "2400", "--population", "2",
                "--validate-every", "1", "--validation-episodes", "1", "--confirmation-episodes", "1",
                "--eval-episodes", "0", "--demos", str(demos_file), "--out", str(out), "--no-progress",
                *extra]  # fmt: skip

    whole = tmp_path / "whole.pt"
    assert main(finetune_command(whole)) == 0
    tuned = tmp_path / "ft.pt"
    assert main(finetune_command(tuned, "--resume")) == 2
    assert "--resume: no stopped run at" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        _stop_at_the_second_save(patch)
        assert main(finetune_command(tuned)) == 130  # Ctrl-C: one line, the state kept
    assert "ft.state.pt; go on with the same command and --resume" in capsys.readouterr().err
    assert tuned.with_suffix(".state.pt").is_file() and not tuned.exists()
    assert main(finetune_command(tuned)) == 2  # a new run would lose the stopped one
    assert "holds a fine-tuning run that was stopped: go on with it with --resume" in capsys.readouterr().err
    assert main(finetune_command(tuned, "--lr", "3e-4", "--resume")) == 2
    assert "holds a run of other settings: lr 0.0001 (now 0.0003)" in capsys.readouterr().err
    assert main(finetune_command(tuned, "--resume")) == 0
    assert not tuned.with_suffix(".state.pt").exists() and not tuned.with_name("ft.state.prev.pt").exists()
    assert _curve(tuned) == _curve(whole)
    kept, meta = load_chunk_policy(tuned)
    reference, reference_meta = load_chunk_policy(whole)
    assert meta["selection"] == reference_meta["selection"]
    assert all(torch.equal(a, b) for a, b in zip(_weights(kept), _weights(reference), strict=True))


def _curve(policy_file) -> list[dict]:
    """A run's curve CSV but its clock columns (wall-clock and CPU seconds differ run to run)."""
    with open(policy_file.with_suffix(".csv"), newline="") as handle:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(handle)]


@pytest.mark.parametrize(
    "state",
    [
        {"start": None},  # no screens, no record
        {"start": None, "screened": [{"key": (1.0, 2.0), "update": 3, "state": {}}], "record": unselected(0)},
        {"start": {"key": (1.0,), "update": 0, "state": {}}, "screened": [], "record": unselected(0)},
        "not a dict",
    ],
    ids=["missing", "screens-without-a-start", "short-key", "not-a-dict"],
)
def test_a_selection_refuses_a_state_that_is_not_its_screens_and_stays_as_it_was(state):
    selection = Selection(torch.nn.Linear(1, 1), lambda episodes, seed: {}, 1, 1)
    with pytest.raises(ValueError, match="Invalid selection state"):
        selection.load_state_dict(state)
    assert selection.start is None and selection.screened == [] and selection.record == unselected(0)


def test_the_benchmark_with_state_goes_on_with_a_stopped_fine_tuning_and_reports_ended_ones(tmp_path, monkeypatch):
    from benchmarks import aloha

    def argv(out, *extra):
        return ["--tasks", "transfer_cube", "--demos", "2", "--low-data", "2", "--low-data-only", "--epochs", "1",
                "--bc-seeds", "1", "--eval-episodes", "1", "--finetune-steps", "1200", "--population", "2",
                "--validate-every", "1", "--validation-episodes", "1", "--confirmation-episodes", "1",
                "--ft-starts", "bp", "--ft-methods", "ovlr", "--no-progress", "--out", str(tmp_path / out),
                *extra]  # fmt: skip

    whole = aloha.main(argv("whole.json"))
    state = ["--state", str(tmp_path / "state")]
    with monkeypatch.context() as patch:
        _stop_at_the_second_save(patch)
        with pytest.raises(KeyboardInterrupt):
            aloha.main(argv("resumed.json", *state))
    assert not (tmp_path / "resumed.partial.jsonl").exists()  # the run directory keeps the fine-tuning
    (run_dir,) = (tmp_path / "state").iterdir()
    assert (run_dir / "state.pt").is_file() and not (run_dir / "row.json").exists()
    resumed = aloha.main(argv("resumed.json", *state))
    (tuned,) = [r for r in resumed if "+ft-" in r["policy"]]
    (reference,) = [r for r in whole if "+ft-" in r["policy"]]
    assert tuned["resumed_at"] == [reference["curve"][0][0]] and "commits" not in tuned
    for key in ("success_rate", "selection", "env_steps", "start_success_rate"):
        assert tuned[key] == reference[key], key
    assert [point[:2] for point in tuned["curve"]] == [point[:2] for point in reference["curve"]]

    def never(*args, **kwargs):
        raise AssertionError("an ended fine-tuning ran again")

    monkeypatch.setattr(aloha, "finetune", never)
    again = aloha.main(argv("again.json", *state))
    assert [r for r in again if "+ft-" in r["policy"]] == [json.loads(json.dumps(tuned))]


def test_cli_resume_refuses_a_state_file_that_is_not_a_fine_tuning_runs(tmp_path, capsys, start):
    from bbopt.rollout.checkpoint import save_checkpoint

    policy_file, tuned = tmp_path / "bc.pt", tmp_path / "ft.pt"
    save_chunk_policy(start, policy_file, task="transfer_cube", trained_by="bc-bp")
    save_checkpoint({"weights": torch.zeros(2)}, tuned.with_suffix(".state.pt"))  # verified, but another kind
    assert main(["aloha", "finetune", "--policy", str(policy_file), "--env-steps", "600", "--population", "2",
                 "--eval-episodes", "0", "--out", str(tuned), "--no-progress", "--resume"]) == 2  # fmt: skip
    assert "ft.state.pt: not a fine-tuning run's checkpoint" in capsys.readouterr().err
