"""The benchmarks run end to end at tiny sizes and write their JSON (figures come from the full runs)."""

import contextlib
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import ask_tell, overhead, profile_update


def test_overhead_benchmark_smoke(tmp_path):
    out = tmp_path / "overhead.json"
    rows = overhead.main(["--models", "mlp", "--samples", "4", "--rounds", "2", "--es-rounds", "1", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert payload["rows"] == rows and payload["commit"]
    row = rows[0]
    assert row["ovlr_bp_time_ratio"] == pytest.approx(row["ovlr_seconds"] / row["bp_seconds"])
    assert row["param_es_memory_mib"] > 0 and row["ovlr_memory_mib"] > 0


def test_profile_update_benchmark_smoke(tmp_path):
    out = tmp_path / "profile.json"
    rows = profile_update.main(["--models", "mlp", "--samples", "4", "--ask-tell", "10x4", "--rounds", "2",
                                "--trace", str(tmp_path / "trace"), "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text())["rows"] == rows
    ovlr = next(r for r in rows if r["setting"] == "mlp n=4" and r["method"] == "ovlr")
    parts = [ovlr[name] for name in profile_update.PARTS]
    assert ovlr["forward"] > 0 and ovlr["vjp"] > 0 and ovlr["noise"] > 0 and ovlr["optimizer"] > 0
    assert sum(parts) == pytest.approx(ovlr["total"], rel=1e-6)  # parts add up (2 rounds: medians are means)
    assert (tmp_path / "trace" / "mlp.json").stat().st_size > 0


def test_ask_tell_benchmark_smoke(tmp_path):
    out = tmp_path / "ask_tell.json"
    rows = ask_tell.main(["--dimensions", "10", "--populations", "8", "--min-seconds", "0", "--min-iterations", "2",
                          "--max-iterations", "2", "--out", str(out)])  # fmt: skip
    assert {r["solver"] for r in rows} == set(ask_tell.SOLVERS)
    assert all(r["iterations"] == 2 and r["us_per_candidate"] > 0 for r in rows), rows
    assert json.loads(out.read_text())["summary"]["ranking"]["d=10,n=8"]


def test_truncated_sine_benchmark_smoke(tmp_path):
    from benchmarks import truncated_sine

    rows = truncated_sine.main(["--seeds", "1", "--epochs", "2", "--out", str(tmp_path / "sine.json")])
    assert {(r["cap"], r["method"]) for r in rows} == {
        (cap, method) for cap in truncated_sine.Config.caps for method in truncated_sine.METHODS
    }
    assert "reached" in json.loads((tmp_path / "sine.json").read_text())["summary"]


def test_zero_one_noise_benchmark_smoke(tmp_path):
    from benchmarks import zero_one_noise

    out = tmp_path / "zero_one.json"
    rows = zero_one_noise.main(["--seeds", "1", "--epochs", "1", "--rates", "0.6", "--out", str(out)])
    assert [r["method"] for r in rows] == list(zero_one_noise.METHODS)
    assert out.with_suffix(".png").exists()


def test_variance_benchmark_smoke(tmp_path):
    from benchmarks import variance

    out = tmp_path / "variance.json"
    arguments = ["--draws", "3", "--sigmas", "1", "--repetitions", "2", "--qmc-samples", "8", "--out", str(out)]
    rows = variance.main(arguments)
    assert {r["sweep"] for r in rows} == {"sigma", "samples", "noise", "qmc", "layerwise_qmc"}
    assert {r["mode"] for r in rows if r["sweep"] == "qmc"} == {"mc", "qmc"}
    assert {(r["samples"], r["mode"]) for r in rows if r["sweep"] == "layerwise_qmc"} == {
        (n, mode) for n in (8, 32) for mode in ("mc", "qmc")
    }
    factors = json.loads(out.read_text())["summary"]["mc_over_qmc_layerwise_variance"]
    assert set(factors) == {f"n={n} {part}" for n in (8, 32) for part in ("layer layers.0", "layer layers.2", "all")}
    assert all(-1.0 <= r["cosine"] <= 1.0 and r["variance"] >= 0 for r in rows)
    assert out.with_suffix(".png").exists()


def test_allocation_benchmark_smoke(tmp_path):
    from benchmarks import allocation

    out = tmp_path / "allocation.json"
    arguments = ["--draws", "3", "--trace-draws", "2", "--seeds", "1", "--epochs", "1", "--pack-steps", "2",
                 "--pack-held-out", "2", "--out", str(out)]  # fmt: skip
    summary = allocation.main(arguments)
    assert out.exists() and out.with_suffix(".png").exists()
    assert [row["allocator"] for row in summary["training"]] == list(allocation.ALLOCATORS)
    assert [row["allocator"] for row in summary["packing"]] == list(allocation.ALLOCATORS)
    assert all(row["expected_loss_mean"] >= 0 for row in summary["packing"])
    assert 0 < summary["variance"]["predicted_saving"]["parameter"] < 1


def test_ioh_bbob_benchmark_smoke_and_merge(tmp_path):
    from benchmarks import ioh_bbob

    common = ["--functions", "1,3", "--instances", "1", "--dimensions", "2", "--budget-per-dim", "20",
              "--logs", str(tmp_path / "logs")]  # fmt: skip
    solvers = "ovlr,ovlr+diagonal,ovlr+no-restarts,pycma,pycma-bipop,pycma-sep,random"
    ioh_bbob.main(["--solvers", solvers, "--out", str(tmp_path / "a.json"), *common])
    ioh_bbob.main(["--solvers", "cem", "--out", str(tmp_path / "b.json"), *common])
    traces = [str(tmp_path / "logs" / "a.traces.json"), str(tmp_path / "logs" / "b.rows.jsonl")]  # both formats
    summary = ioh_bbob.main(["--merge", *traces, "--out", str(tmp_path / "merged.json"), *common])
    assert {r["solver"] for r in summary} == {*solvers.split(","), "cem"}
    result = json.loads((tmp_path / "merged.json").read_text())
    assert all(r["evaluations"] == 40 for r in result["rows"])  # every solver spends exactly 20 * d
    assert {(r["solver"], r["dimension"]) for r in result["summary"]["evaluations_to_1e-8"]} == {
        (name, 2) for name in [*solvers.split(","), "cem"]
    }
    assert (tmp_path / "merged.png").exists() and (tmp_path / "merged_groups.png").exists()
    assert (tmp_path / "logs" / "a" / "ioh" / "pycma").is_dir()
    with pytest.raises(ValueError, match=r"Invalid variant: 'sparse'"):
        ioh_bbob.runner("ovlr+sparse")


def test_ioh_pbo_benchmark_smoke(tmp_path):
    from benchmarks import ioh_pbo

    rows = ioh_pbo.main(["--runs", "1", "--budget", "50", "--dimension", "16", "--out", str(tmp_path / "pbo.json")])
    assert len(rows) == len(ioh_pbo.PROBLEMS) * len(ioh_pbo.SOLVERS)
    assert all(r["best_mean"] is not None for r in rows)


def test_binpacking_benchmark_smoke(tmp_path):
    from benchmarks import binpacking

    out = tmp_path / "binpacking.json"
    arguments = ["--count", "1", "--budget", "200", "--train-steps", "2", "--no-progress", "--out", str(out)]
    rows = binpacking.main(arguments)
    methods = {"ovlr", "cem", "es", "random", "ffd", "bfd", "ovlr/best_fit", "set-net", "ovlr+warm"}
    assert {(r["family"], r["solver"]) for r in rows} == {(f, m) for f in ("triplet-60", "triplet-120", "uniform-120")
                                                          for m in methods}  # fmt: skip
    summary = json.loads(out.read_text())["summary"]
    assert set(summary["triplet-60"]["decodes_per_second"]) == {"completion", "best_fit", "first_fit"}
    assert out.with_suffix(".png").exists()


def test_mujoco_benchmark_smoke(tmp_path):
    pytest.importorskip("mujoco", reason="MuJoCo is not installed (pip install 'bbopt[mujoco]')")
    from benchmarks import locomotion

    out = tmp_path / "mujoco.json"
    # every method but ES's variants runs (each variant runs with OVLR); ES's variants' settings are those a run records
    described = [m for m in locomotion.METHODS if m.startswith("es-")]
    ran = [m for m in locomotion.METHODS if m not in described]
    trained = locomotion.main(["--budget", "3000", "--envs", "Hopper-v5", "--seeds", "0", "--population", "8",
                               "--pgpe-popsize", "4", "--methods", ",".join(ran), "--milestones", "1000",
                               "--out", str(out)])  # fmt: skip
    assert [r["method"] for r in trained] == ran
    assert all(r["env_steps"] >= 3000 and r["curve"] for r in trained)
    rows = trained + [{"method": m, "settings": locomotion.recorded_settings(
        locomotion.bbopt_config("Hopper-v5", m, 0, 3000, 8))} for m in described]  # fmt: skip
    assert {r["settings"]["credit"] for r in rows if r["method"].endswith(("-togo", "-critic"))} == {"to_go"}
    assert {r["settings"]["credit"] for r in rows if r["method"].endswith("-episode")} == {"episode"}
    assert {r["method"] for r in rows if r["settings"].get("critic") == "state_value"} == {
        "ovlr", "es", "ovlr-critic", "es-critic", "ovlr-slots32", "es-slots32", "ovlr-hold1m", "es-hold1m",
        "ovlr-wide", "es-wide", "ovlr-kl", "es-kl", "ovlr-constant", "es-constant", "ovlr-offset",
        "es-offset", "ovlr-anneal", "es-anneal", "ovlr-ar1", "es-ar1", "ovlr-ar1mild", "es-ar1mild", "ovlr-maxkl",
        "es-maxkl", "ovlr-ppogae", "es-ppogae", "ovlr-gae95",
        "es-gae95", "ovlr-critic256", "es-critic256", "ovlr-policy256", "es-policy256", "ovlr-zoohc",
        "es-zoohc", "ovlr-lambdaret", "es-lambdaret"}  # fmt: skip
    assert {r["method"] for r in rows if r["settings"].get("reuse", 1) > 1} == {
        "ovlr", "es", "ovlr-slots32", "es-slots32", "ovlr-hold1m", "es-hold1m", "ovlr-wide", "es-wide", "ovlr-kl",
        "es-kl", "ovlr-constant", "es-constant", "ovlr-offset", "es-offset", "ovlr-anneal", "es-anneal", "ovlr-ar1",
        "es-ar1", "ovlr-ar1mild", "es-ar1mild", "ovlr-maxkl", "es-maxkl", "ovlr-ppogae", "es-ppogae",
        "ovlr-gae95", "es-gae95", "ovlr-critic256", "es-critic256", "ovlr-policy256", "es-policy256", "ovlr-zoohc",
        "es-zoohc", "ovlr-lambdaret", "es-lambdaret"}  # fmt: skip
    critics = {r["method"]: (r["settings"]["critic_hidden"], r["settings"]["critic_epochs"]) for r in rows
               if r["settings"].get("critic") == "state_value"}  # fmt: skip
    wide_critic = {"ovlr", "es", "ovlr-critic256", "es-critic256", "ovlr-policy256", "es-policy256", "ovlr-zoohc",
                   "es-zoohc", "ovlr-lambdaret", "es-lambdaret"}  # fmt: skip
    targets = {r["method"]: r["settings"]["critic_target"] for r in rows if r["method"] in critics}
    assert {m: t for m, t in targets.items() if t != "to_go"} == {"ovlr-lambdaret": "lambda_return",
                                                                  "es-lambdaret": "lambda_return"}  # fmt: skip
    assert {m for m, c in critics.items() if c != ([64, 64], 5)} == wide_critic
    assert all(critics[m] == ([256, 256], 10) for m in wide_critic)
    policies = {r["method"]: (list(r["settings"]["hidden"]), r["settings"]["lr"]) for r in rows
                if r["method"].partition("-")[0] in ("ovlr", "es")}  # fmt: skip
    wide_policy = ("ovlr", "es", "ovlr-wide", "es-wide", "ovlr-policy256", "es-policy256", "ovlr-zoohc", "es-zoohc",
                   "ovlr-lambdaret", "es-lambdaret")  # fmt: skip
    assert {m: p for m, p in policies.items() if p != ([64, 64], 0.003)} == {
        m: ([256, 256], 0.001) for m in wide_policy
    }  # the policy of the defaults, and of the variants that say so; every other variant pins the 64-64 of then
    bounded = {r["method"]: r["settings"]["max_kl"] for r in rows if r["settings"].get("max_kl")}
    assert bounded == {"ovlr-maxkl": 0.04, "es-maxkl": 0.04}  # twice lr_kl; the rest without the line search
    falling = {r["method"]: (r["settings"]["sigma"], r["settings"]["sigma_final"], r["settings"]["sigma_decay"])
               for r in rows if r["settings"].get("sigma_final") is not None}  # fmt: skip
    assert falling == {"ovlr-anneal": (0.6, 0.3, 200_000), "es-anneal": (0.6, 0.3, 200_000)}
    correlated = {r["method"]: r["settings"]["correlation"] for r in rows if r["settings"].get("correlation")}
    assert correlated == {"ovlr-ar1": 0.8, "es-ar1": 0.8, "ovlr-ar1mild": 0.5, "es-ar1mild": 0.5, "ovlr": 0.5,
                          "es": 0.5, "ovlr-maxkl": 0.5, "es-maxkl": 0.5, "ovlr-ppogae": 0.5,
                          "es-ppogae": 0.5, "ovlr-gae95": 0.5, "es-gae95": 0.5, "ovlr-critic256": 0.5,
                          "es-critic256": 0.5, "ovlr-policy256": 0.5, "es-policy256": 0.5, "ovlr-lambdaret": 0.5,
                          "es-lambdaret": 0.5}  # fmt: skip
    assert ({r["settings"]["correlation"] for r in rows if r["method"].startswith(("ovlr-", "es-"))
            and r["method"].partition("-")[2] not in ("ar1", "ar1mild", "maxkl", "ppogae", "gae95", "critic256",
                                                         "policy256", "lambdaret")}
            == {0.0})  # fmt: skip
    offsets = {r["method"]: r["settings"]["reward_offset"] for r in rows if "reward_offset" in r.get("settings", {})}
    assert {m for m, offset in offsets.items() if offset} == {"ovlr-offset", "es-offset"}  # the zoo's ARS row: -1
    assert {offsets["ovlr-offset"], locomotion.VARIANTS["offset"]("HalfCheetah-v5")["reward_offset"]} == {-1.0, 0.0}
    named = {"ovlr": (0.995, 0.98), "ovlr-maxkl": (0.995, 0.98), "ovlr-ppogae": (0.99, 0.95),
             "es-ppogae": (0.99, 0.95), "ovlr-gae95": (0.995, 0.95), "ovlr-zoohc": (0.98, 0.92)}  # fmt: skip
    assert {r["method"]: (r["settings"]["discount"], r["settings"]["gae_lambda"]) for r in rows
            if r["method"] in named} == named  # fmt: skip
    assert {r["settings"]["lr_decay_after"] for r in rows if r["method"].endswith("-hold1m")} == {1_000_000}
    assert {r["settings"]["horizon"] for r in rows if r["method"].endswith("-slots32")} == {128}
    schedules = {r["method"]: (r["settings"]["lr_schedule"], r["settings"]["lr_kl"]) for r in rows
                 if r["method"].partition("-")[0] in ("ovlr", "es")}  # fmt: skip
    assert {schedules[m] for m in ("ovlr", "es", "ovlr-kl", "es-kl")} == {("kl", 0.02)}  # the default since b3912ec
    assert {schedules[f"{s}-{v}"][0] for s in ("ovlr", "es") for v in ("constant", "slots32", "wide")} == {"constant"}
    rows = trained
    bbopt_rows = [r for r in rows if r["method"] in locomotion.METHODS and "milestones" in r]
    assert {r["method"] for r in bbopt_rows} >= {"ovlr", "es", "cem", "param_es", "ovlr-episode"}
    for r in bbopt_rows:  # evaluated once past 1,000 steps, before the end, with the CPU time then
        steps, value, _, cpu = r["milestones"]["1000"]
        assert 1000 <= steps < r["env_steps"] and cpu < r["cpu_seconds"] and np.isfinite(value)
    with pytest.raises(SystemExit):
        locomotion.main(["--budget", "3000", "--milestones", "3000", "--out", str(tmp_path / "none.json")])
    with pytest.raises(SystemExit):
        locomotion.main(["--methods", "ovlr-bogus", "--out", str(tmp_path / "none.json")])
    assert all(r["cpu_seconds"] > 0 and 0 < r["train_seconds"] <= r["wall_seconds"] for r in rows)
    assert all(len(point) == 4 for r in rows for point in r["curve"])  # env steps, return, wall s, CPU s
    assert {r["method"]: r["settings"].get("zoo") for r in rows if r["method"].startswith("ppo")} == {
        "ppo": True,
        "ppo-default": False,
    }
    table = json.loads(out.read_text())["summary"]["table"]
    assert [row["method"] for row in table] == ran
    assert all(row["equal_cpu_seconds"] == min(r["cpu_seconds_mean"] for r in table) for row in table)
    assert {row["method"] for row in table if "return_at_1000_mean" in row} == {r["method"] for r in bbopt_rows}
    assert out.with_suffix(".png").exists() and not out.with_suffix(".partial.jsonl").exists()
    # --rows reports kept runs without running: a partial JSON-lines file merged with a JSON result
    kept = tmp_path / "kept.partial.jsonl"
    kept.write_text("".join(json.dumps(r) + "\n" for r in rows if r["method"] == "ovlr"))
    rest = tmp_path / "rest.json"
    rest.write_text(json.dumps({"rows": [r for r in rows if r["method"] != "ovlr"]}))
    merged = locomotion.main(["--rows", str(kept), str(rest), "--out", str(tmp_path / "merged.json")])
    remerged = json.loads((tmp_path / "merged.json").read_text())["summary"]["table"]
    assert sorted(remerged, key=lambda row: row["method"]) == sorted(table, key=lambda row: row["method"])
    assert len(merged) == len(rows)
    with pytest.raises(ValueError, match="the same run appears twice"):
        locomotion.main(["--rows", str(kept), str(out), "--out", str(tmp_path / "twice.json")])
    with pytest.raises(ValueError, match="is one of the --rows files"):
        locomotion.main(["--rows", str(kept), str(rest), "--out", str(rest)])
    torn = tmp_path / "torn.partial.jsonl"
    torn.write_text(kept.read_text() + '{"env": "Hopper-v5", "meth')  # killed while writing a run
    with pytest.warns(UserWarning, match="last line is torn"):
        assert len(locomotion.main(["--rows", str(torn), "--out", str(tmp_path / "torn.json")])) == 1
    old_format = tmp_path / "old.json"  # rows from before CPU times were recorded
    old_format.write_text(json.dumps({"rows": [{k: v for k, v in rows[0].items() if k != "cpu_seconds"}]}))
    with pytest.raises(ValueError, match="run 0 is not a run of this benchmark"):
        locomotion.main(["--rows", str(old_format), "--out", str(tmp_path / "old_out.json")])
    # a kept partial file is never overwritten by a new run on the same --out (nor by a second process)
    out.with_suffix(".partial.jsonl").write_text(kept.read_text())
    with pytest.raises(SystemExit, match=r"partial\.jsonl exists"):
        locomotion.main(["--budget", "3000", "--envs", "Hopper-v5", "--methods", "ovlr", "--out", str(out)])
    assert out.with_suffix(".partial.jsonl").read_text() == kept.read_text()
    (tmp_path / "bad.jsonl").write_text("{not json\n{}\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: not a benchmark JSON"):
        locomotion.main(["--rows", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "bad.json")])


@pytest.mark.parametrize(("name", "content"), [
    ("missing.partial.jsonl", None),  # a partial file the finished run replaced by its JSON
    ("binary.json", b"\x89PNG\r\n\x1a\n\xff\xfe"),
    ("folder.json", "a folder"),
    ("no_rows.json", b'{"config": {}}'),
], ids=["missing", "binary", "folder", "no_rows"])  # fmt: skip
def test_locomotion_rows_refuses_a_file_it_cannot_read_and_names_it(tmp_path, name, content):
    from benchmarks import locomotion

    path = tmp_path / name
    if content == "a folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a benchmark JSON or JSON-lines file"):
        locomotion.main(["--rows", str(path), "--out", str(tmp_path / "merged.json")])
    assert not (tmp_path / "merged.json").exists()


def _run_row(env, method, seed, final):
    """A run as `benchmarks.locomotion` keeps it, with made-up figures (for the --rows tests)."""
    curve = [[1000, final / 2, 1.0, 2.0], [2000, final, 2.0, 4.0]]
    return {"env": env, "method": method, "seed": seed, "curve": curve, "final_return": final,
            "env_steps": 2000, "train_seconds": 2.0, "wall_seconds": 2.5, "cpu_seconds": 4.0}  # fmt: skip


def test_locomotion_rows_with_methods_keeps_those_methods_in_that_order(tmp_path):
    from benchmarks import locomotion

    # two files that both hold a run of 'ovlr' on seed 0 (different code, different figures)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"rows": [_run_row("Hopper-v5", "ovlr", 0, 10.0),
                                          _run_row("Hopper-v5", "ovlr-ar1mild", 0, 30.0),
                                          _run_row("Hopper-v5", "ovlr-ar1mild", 1, 50.0)]}))  # fmt: skip
    second.write_text(json.dumps({"rows": [_run_row("Hopper-v5", "ovlr", 0, 20.0),
                                           _run_row("Hopper-v5", "ars", 0, 7.0)]}))  # fmt: skip
    out = tmp_path / "merged.json"
    with pytest.raises(ValueError, match="the same run appears twice"):
        locomotion.main(["--rows", str(first), str(second), "--out", str(out)])
    rows = locomotion.main(["--rows", str(first), str(second), "--methods", "ars,ovlr-ar1mild", "--out", str(out)])
    assert [(r["method"], r["seed"]) for r in rows] == [("ars", 0), ("ovlr-ar1mild", 0), ("ovlr-ar1mild", 1)]
    written = json.loads(out.read_text())
    assert written["config"]["methods"] == ["ars", "ovlr-ar1mild"]
    assert [(row["method"], row["final_return_mean"]) for row in written["summary"]["table"]] == [
        ("ars", 7.0), ("ovlr-ar1mild", 40.0)]  # fmt: skip
    # a method no file holds is a typo, not an empty column: refused, the file's methods named, nothing written
    typo = ["--rows", str(first), str(second), "--methods", "ars,ovlr-ar1", "--out", str(tmp_path / "no.json")]
    named = r"no runs of 'ovlr-ar1' in .*a\.json.*b\.json \(they hold ovlr, ovlr-ar1mild, ars\)"
    with pytest.raises(ValueError, match=named):
        locomotion.main(typo)
    assert not (tmp_path / "no.json").exists()


def test_locomotion_rows_until_reports_each_run_as_it_stood_at_its_milestone(tmp_path):
    from benchmarks import locomotion

    # a 3M run with milestones at 1M and 2M (reached by the first update past them), and a 1M peer run
    long = _run_row("Hopper-v5", "ovlr-policy256", 0, 3000.0) | {"env_steps": 3_002_048, "cpu_seconds": 600.0}
    long["curve"] = [[500_000, 800.0, 50.0, 100.0], [1_000_448, 1900.0, 100.0, 200.0],
                     [2_000_896, 2500.0, 200.0, 400.0], [3_002_048, 2900.0, 300.0, 600.0]]  # fmt: skip
    long["milestones"] = {"1000000": [1_000_448, 2000.0, 101.0, 201.0], "2000000": [2_000_896, 2600.0, 201.0, 401.0]}
    # a 1M run whose last generation ran over (ARS's on HalfCheetah ended at 1,024,000)
    peer = _run_row("Hopper-v5", "ppo", 0, 1500.0) | {"env_steps": 1_024_000, "cpu_seconds": 900.0}
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps({"rows": [long, peer]}))
    out = tmp_path / "at_1m.json"
    mine, theirs = locomotion.main(["--rows", str(rows_file), "--until", "1e6", "--out", str(out)])
    assert mine["final_return"] == 2000.0 and mine["env_steps"] == 1_000_448  # the milestone's 10 test episodes
    assert (mine["train_seconds"], mine["cpu_seconds"]) == (101.0, 201.0)
    assert [p[0] for p in mine["curve"]] == [500_000, 1_000_448] and mine["milestones"] == {}
    assert theirs == peer  # ended at 1M: kept whole
    written = json.loads(out.read_text())
    assert written["config"]["until"] == 1_000_000
    assert [row["final_return_mean"] for row in written["summary"]["table"]] == [2000.0, 1500.0]
    assert long["final_return"] == 3000.0  # the file's rows are not changed
    # 2M: the 1M milestone stays a milestone; the 1M peer run ended long before, and a run cut short is not a run
    # of 2M steps
    with pytest.raises(ValueError, match=r"ppo on Hopper-v5, seed 0, ended at 1,024,000 env steps, before --until "
                                         r"2,000,000"):  # fmt: skip
        locomotion.main(["--rows", str(rows_file), "--until", "2e6", "--out", str(tmp_path / "no.json")])
    (at_2m,) = locomotion.main(["--rows", str(rows_file), "--methods", "ovlr-policy256", "--until", "2e6",
                                "--out", str(tmp_path / "at_2m.json")])  # fmt: skip
    assert at_2m["final_return"] == 2600.0 and list(at_2m["milestones"]) == ["1000000"]
    # a run that went on past --until without being evaluated there cannot be cut: refused, nothing written
    with pytest.raises(ValueError, match=r"ovlr-policy256 on Hopper-v5, seed 0, ran to 3,002,048 env steps with no "
                                         r"milestone at 1,500,000"):  # fmt: skip
        locomotion.main(["--rows", str(rows_file), "--until", "1.5e6", "--out", str(tmp_path / "no.json")])
    assert not (tmp_path / "no.json").exists()
    with pytest.raises(SystemExit):  # --until reports kept runs: it needs --rows
        locomotion.main(["--until", "1e6", "--out", str(tmp_path / "no.json")])
    # a run with a milestone at --until is cut there, even when it ended within RUN_OVER of it
    near = long | {"env_steps": 1_050_000, "milestones": {"1000000": [1_000_448, 2000.0, 101.0, 201.0]}}
    rows_file.write_text(json.dumps({"rows": [near]}))
    (cut,) = locomotion.main(["--rows", str(rows_file), "--until", "1e6", "--out", str(tmp_path / "near.json")])
    assert cut["final_return"] == 2000.0 and cut["env_steps"] == 1_000_448
    # a hostile file's milestones are refused where the file is read, with its name
    for milestones in (None, {"1e6": [1, 2.0, 3.0, 4.0]}, {"²": [1, 2.0, 3.0, 4.0]}, {"1000000": [1, 2.0]},
                       {"1000000": [1, "x", 3.0, 4.0]}):  # fmt: skip
        rows_file.write_text(json.dumps({"rows": [long | {"milestones": milestones}]}))
        with pytest.raises(ValueError, match=rf"{re.escape(str(rows_file))}: run 0's milestones are not"):
            locomotion.main(["--rows", str(rows_file), "--until", "1e6", "--out", str(tmp_path / "no.json")])
    assert not (tmp_path / "no.json").exists()


@pytest.mark.parametrize(("envs", "methods", "message"), [
    ("Ant-v5", "ovlr-offset", r"ovlr-offset on Ant-v5: no RL-zoo hyper-parameters for 'Ant-v5'"),
    ("Hopper-v5,Ant-v5", "ovlr,ars", r"ars on Ant-v5: no RL-zoo hyper-parameters"),
    ("Hopper-v5,Ant-v5", "ppo-default,ppo", r"ppo on Ant-v5: no RL-zoo hyper-parameters"),
    ("Hoper-v5", "ovlr", r"'Hoper-v5' is not a registered Gymnasium id"),
])  # fmt: skip
def test_locomotion_refuses_a_run_it_cannot_make_before_any_runs(tmp_path, capsys, envs, methods, message):
    from benchmarks import locomotion

    out = tmp_path / "never.json"
    with pytest.raises(SystemExit):
        locomotion.main(["--budget", "1000", "--envs", envs, "--methods", methods, "--out", str(out)])
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []  # refused before the kept-rows file or any run


def test_return_at_cpu_is_the_last_policy_evaluated_by_then():
    from benchmarks.locomotion import return_at_cpu

    curve = [(1000, 5.0, 1.0, 2.0), (2000, 9.0, 2.0, 4.0), (3000, 7.0, 3.0, 6.0)]
    assert np.isnan(return_at_cpu(curve, 1.9))  # nothing evaluated yet
    assert [return_at_cpu(curve, s) for s in (2.0, 5.9, 6.0, 60.0)] == [5.0, 9.0, 7.0, 7.0]


def test_peer_hyper_parameters_name_the_env_they_lack():
    from benchmarks._locomotion_peers import PPO_ZOO, zoo_row

    assert zoo_row(PPO_ZOO, "Walker2d-v5")["n_epochs"] == 20
    with pytest.raises(ValueError, match=r"no RL-zoo hyper-parameters for .Ant-v5.*HalfCheetah, Hopper, Walker2d"):
        zoo_row(PPO_ZOO, "Ant-v5")


def test_pools_benchmark_smoke(tmp_path):
    pytest.importorskip("mujoco", reason="MuJoCo is not installed (pip install 'bbopt[mujoco]')")
    from benchmarks import pools

    rows = pools.main(["--population", "4", "--steps", "5", "--pools", "serial,process", "--frame-skips", "5",
                            "--trainer-steps", "0", "--out", str(tmp_path / "e.json")])  # fmt: skip
    assert [r["pool"] for r in rows] == ["raw (1 env, plain loop)", "serial", "process"]
    assert all(r["steps_per_second"] > 0 for r in rows)


def test_aloha_benchmark_smoke(tmp_path):
    pytest.importorskip("gym_aloha", reason="gym-aloha is not installed (pip install 'bbopt[aloha]')")
    from benchmarks import aloha

    out = tmp_path / "aloha.json"
    rows = aloha.main(["--tasks", "transfer_cube", "--demos", "3", "--low-data", "2", "--epochs", "1",
                       "--bc-seeds", "2", "--eval-episodes", "1", "--finetune-steps", "300", "--population", "8",
                       "--validation-episodes", "1", "--confirmation-episodes", "2",
                       "--no-progress", "--out", str(out)])  # fmt: skip
    policies = [r["policy"] for r in rows]
    assert policies[:5] == ["scripted (demo seeds)", "scripted", "bc-bp", "bc-bp", "bc-bp+ft-ovlr"]
    assert [r.get("seed") for r in rows[2:4]] == [0, 1] and "bc-ovlr+ft-ovlr" in policies
    assert {p for p in policies if "2 demos" in p} == {
        "bc-bp (2 demos)",
        "bc-ovlr (2 demos)",
        "bc-ovlr (2 demos)+ft-ovlr",
    } | {f"bc-bp (2 demos)+ft-{m}" for m in aloha.LOW_DATA_METHODS}
    assert rows[0]["success_rate"] == 1.0 and rows[1]["success_rate"] == 1.0  # the scripted policy
    payload = json.loads(out.read_text())
    assert payload["rows"] == rows and out.with_suffix(".png").exists()
    assert not out.with_suffix(".partial.jsonl").exists()  # the rows kept while it ran: gone once it is written
    assert payload["summary"]["transfer_cube/bc-bp"]["success"] == [r["success_rate"] for r in rows[2:4]]
    assert (tmp_path / "aloha_curves.png").exists()
    assert [point[0] for point in rows[4]["selection"]["validation_curve"]] == [0, rows[4]["env_steps"]]
    assert [point[0] for point in rows[4]["selection"]["confirmation"]] == [0, 1]  # the start, then the one update
    from bbopt.envs.aloha.finetune import LR, MAX_KL, SIGMA

    config = payload["config"]  # fine-tuning's own defaults: AR(1) noise for OVLR and ES, independent for CEM
    assert (config["ft_sigma"], config["ft_lr"], config["ft_correlation"]) == (SIGMA, LR, None)
    goal = payload["summary"]["transfer_cube/bc-bp+ft-ovlr"]
    assert goal["goal"] == aloha.GOALS["transfer_cube"] and len(goal["reached"]) == 1
    assert "goal" not in payload["summary"]["transfer_cube/bc-bp"]  # imitation rows are not fine-tuned
    assert rows[4]["curve"][-1][0] == rows[4]["env_steps"] and rows[4]["curve"][-1][2] > 0  # steps, return, seconds
    steps, kls = [point[3] for point in rows[4]["curve"]], [point[4] for point in rows[4]["curve"]]
    assert steps[0] == LR and all(math.isfinite(kl) and kl >= 0 for kl in kls)  # the step taken, the passes' KL
    assert config["ft_resolved"]["ovlr"]["max_kl"] == MAX_KL and config["ft_resolved"]["cem"]["max_kl"] is None
    assert all(0 <= point[5] <= 1 for point in rows[4]["curve"])  # the share of the update the line search kept
    with pytest.raises(SystemExit):
        aloha.main(["--confirmation-episodes", "-1", "--out", str(tmp_path / "never.json")])


def test_aloha_benchmark_keeps_the_rows_it_finished_when_stopped(tmp_path, monkeypatch):
    pytest.importorskip("gym_aloha", reason="gym-aloha is not installed (pip install 'bbopt[aloha]')")
    from benchmarks import aloha

    def interrupted(*args, **kwargs):  # Ctrl-C in the first fine-tuning, after the imitation rows
        raise KeyboardInterrupt

    monkeypatch.setattr(aloha, "finetune_row", interrupted)
    out = tmp_path / "aloha.json"
    argv = ["--tasks", "transfer_cube", "--demos", "2", "--low-data", "2", "--low-data-only", "--epochs", "1",
            "--bc-seeds", "2", "--eval-episodes", "1", "--finetune-steps", "300", "--population", "8",
            "--no-progress", "--out", str(out)]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        aloha.main(argv)
    kept = out.with_suffix(".partial.jsonl")
    assert not out.exists() and kept.exists()
    header, *rows = [json.loads(line) for line in kept.read_text().splitlines()]
    assert header["config"]["finetune_steps"] == 300 and header["commit"] and header["date"]
    assert [(r["policy"], r.get("seed")) for r in rows] == [
        ("scripted (demo seeds)", None),
        ("scripted", None),
        ("bc-bp (2 demos)", 0),
        ("bc-bp (2 demos)", 1),
    ]
    before = kept.read_bytes()  # a new run on that --out is refused before it runs anything
    with pytest.raises(SystemExit, match=r"aloha\.partial\.jsonl exists: the rows an interrupted benchmark kept"):
        aloha.main(argv)
    assert kept.read_bytes() == before
    merged = tmp_path / "merged.json"  # --rows reports the kept rows, with the run's settings
    assert aloha.main(["--rows", str(kept), "--out", str(merged)]) == rows
    payload = json.loads(merged.read_text())
    assert payload["config"]["rows_from"][0]["config"] == header["config"]
    assert payload["summary"]["transfer_cube/bc-bp (2 demos)"]["success"] == [r["success_rate"] for r in rows[2:]]
    torn = tmp_path / "torn.partial.jsonl"  # killed while writing a row: the rows before it stand
    torn.write_text(before.decode() + '{"task": "transfer_cube", "poli')
    with pytest.warns(UserWarning, match="last line is torn"):
        assert aloha.main(["--rows", str(torn), "--out", str(tmp_path / "torn.json")]) == rows
    for text in ("", '["a list, not a header"]\n'):
        (tmp_path / "bad.jsonl").write_text(text)
        with pytest.raises(ValueError, match=r"bad\.jsonl: not a benchmarks\.aloha JSON or kept-rows file"):
            aloha.main(["--rows", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "never.json")])


def test_aloha_reached_takes_the_earliest_confirmed_update_at_the_level():
    pytest.importorskip("gym_aloha", reason="gym-aloha is not installed (pip install 'bbopt[aloha]')")
    from benchmarks import aloha

    curve = [[1000 * update, 0.0, 2.0 * update] for update in range(1, 31)]  # update u: 1,000 u steps, 2 u s
    confirmation = [[0, 0.90, 3.8], [30, 0.99, 4.0], [10, 0.95, 3.9], [20, 0.94, 3.9]]  # [update, success, stage]
    row = {"task": "transfer_cube", "policy": "bc-bp+ft-ovlr", "success_rate": 0.97, "curve": curve,
           "selection": {"confirmation": confirmation}}  # fmt: skip
    assert aloha.reached(row, 0.95) == {"update": 10, "env_steps": 10_000, "seconds": 20.0}  # not 30: the earliest
    assert aloha.reached(row, 0.99) == {"update": 30, "env_steps": 30_000, "seconds": 60.0}
    assert aloha.reached(row, 0.90) == {"update": 0, "env_steps": 0, "seconds": 0.0}  # the start was there
    assert aloha.reached(row, 1.0) is None
    old = row | {"curve": [point[:2] for point in curve]}  # a row written before the curve held seconds
    assert aloha.reached(old, 0.95) == {"update": 10, "env_steps": 10_000, "seconds": None}
    summary = aloha.summarize([row, row | {"selection": {"confirmation": [[0, 0.5, 2.0]]}}])
    assert summary["transfer_cube/bc-bp+ft-ovlr"]["reached"] == [aloha.reached(row, 0.95), None]
    with pytest.raises(ValueError, match="update 30 confirmed, but its curve holds 20 updates"):
        aloha.reached(row | {"curve": curve[:20]}, 0.99)
    unconfirmed = aloha.summarize([row | {"selection": {"update": 3}}])  # --confirmation-episodes 0
    assert "goal" not in unconfirmed["transfer_cube/bc-bp+ft-ovlr"]


def test_aloha_rows_merges_side_by_side_processes_and_refuses_two_runs_under_one_name(tmp_path, recwarn):
    pytest.importorskip("gym_aloha", reason="gym-aloha is not installed (pip install 'bbopt[aloha]')")
    from benchmarks import aloha

    def tuned(method, seed, success, seconds):
        return {"task": "insertion", "policy": f"bc-bp (10 demos)+ft-{method}", "demos": 10, "seed": seed,
                "success_rate": success, "mean_stage": 2.0, "train_seconds": seconds, "env_steps": 2000,
                "curve": [[1000, 1.5, seconds / 2], [2000, 1.7, seconds]],
                "selection": {"confirmation": [[0, 0.45, 2.0], [2, success, 2.1]],
                              "validation_curve": [[0, 0.5], [2000, success]]}}  # fmt: skip

    def start(seed, seconds):  # trained alike by every process: only its timings differ
        return {
            "task": "insertion",
            "policy": "bc-bp (10 demos)",
            "demos": 10,
            "seed": seed,
            "success_rate": 0.45,
            "mean_stage": 2.1,
            "final_chunk_l1": 0.015,
            "train_seconds": seconds,
            "eval_seconds": seconds,
        }

    config = {"finetune_steps": 2000, "ft_sigma": 0.05, "out": "x", "progress": False}
    files = {}
    for method, success, seconds in (("ovlr", 0.5, 10.0), ("es", 0.48, 12.0)):
        files[method] = tmp_path / f"{method}.json"
        files[method].write_text(json.dumps({
            "config": config | {"ft_methods": [method], "out": str(files[method])}, "commit": f"c-{method}",
            "date": "2026-12-05", "rows": [start(0, seconds), tuned(method, 0, success, seconds)],
        }))  # fmt: skip
    out = tmp_path / "merged.json"
    rows = aloha.main(["--rows", str(files["ovlr"]), str(files["es"]), "--out", str(out)])
    assert [(r["policy"], r["train_seconds"]) for r in rows] == [
        ("bc-bp (10 demos)", 10.0),  # once, the first file's
        ("bc-bp (10 demos)+ft-ovlr", 10.0),
        ("bc-bp (10 demos)+ft-es", 12.0),
    ]
    assert not recwarn.list  # the files differ only in what picks their rows
    payload = json.loads(out.read_text())
    assert [(s["path"], s["commit"]) for s in payload["config"]["rows_from"]] == [
        (str(files["ovlr"]), "c-ovlr"),
        (str(files["es"]), "c-es"),
    ]
    assert payload["summary"] == json.loads(json.dumps(aloha.summarize(rows)))
    assert out.with_suffix(".png").exists() and (tmp_path / "merged_curves.png").exists()
    other = tmp_path / "other.json"  # another setting: the warning names it, the file records it
    other.write_text(json.dumps({"config": config | {"ft_sigma": 0.07}, "rows": [tuned("cem", 0, 0.4, 9.0)]}))
    with pytest.warns(UserWarning, match=r"differ in ft_sigma \[0.05, 0.05, 0.07\]"):
        aloha.main(["--rows", str(files["ovlr"]), str(files["es"]), str(other), "--out", str(out)])
    assert json.loads(out.read_text())["config"]["differing"] == {"ft_sigma": [0.05, 0.05, 0.07]}
    rerun = tmp_path / "rerun.json"  # the same name, another result: refused, nothing written
    rerun.write_text(json.dumps({"config": config, "rows": [tuned("ovlr", 0, 0.52, 10.0)]}))
    with pytest.raises(ValueError, match=r"rerun\.json: row 0 \(insertion, bc-bp \(10 demos\)\+ft-ovlr, 10, 0\) "
                       r"differs from the same row in .*ovlr\.json"):  # fmt: skip
        aloha.main(["--rows", str(files["ovlr"]), str(rerun), "--out", str(tmp_path / "never.json")])
    assert not (tmp_path / "never.json").exists()
    for text, message in (("{not json", "not a benchmarks.aloha JSON or kept-rows file"),
                          (json.dumps({"config": {}, "rows": [{"task": "insertion"}]}), "row 0 is not a row"),
                          (json.dumps({"config": {}, "rows": []}), "no rows in")):  # fmt: skip
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            aloha.main(["--rows", str(tmp_path / "bad.json"), "--out", str(tmp_path / "never.json")])
    (tmp_path / "hostile.json").write_text(json.dumps({"config": {}, "rows": [tuned("ovlr", [0], 0.5, 1.0)]}))
    with pytest.raises(ValueError, match=r"row 0 names its run by .* \(expected text and whole numbers\)"):
        aloha.main(["--rows", str(tmp_path / "hostile.json"), "--out", str(tmp_path / "never.json")])
    before = files["es"].read_bytes()
    with pytest.raises(ValueError, match="is one of the --rows files"):  # the merge would replace a source
        aloha.main(["--rows", str(files["ovlr"]), str(files["es"]), "--out", str(files["es"])])
    assert files["es"].read_bytes() == before
    with pytest.raises(ValueError, match=r"missing\.json: not a benchmarks\.aloha JSON or kept-rows file"):
        aloha.main(["--rows", str(tmp_path / "missing.json"), "--out", str(tmp_path / "never.json")])


def test_aloha_benchmark_fine_tunes_every_seed_with_the_mixed_options(tmp_path, capsys):
    pytest.importorskip("gym_aloha", reason="gym-aloha is not installed (pip install 'bbopt[aloha]')")
    from benchmarks import aloha

    rows = aloha.main(["--tasks", "transfer_cube", "--demos", "2", "--low-data", "2", "--low-data-only", "--epochs",
                       "1", "--bc-seeds", "2", "--first-seed", "1", "--finetune-seeds", "2", "--eval-episodes", "1",
                       "--finetune-steps",
                       "300", "--population", "2", "--validation-episodes", "1", "--confirmation-episodes", "1",
                       "--ft-methods", "ovlr,es",
                       "--ft-starts", "bp",
                       "--ft-credit", "to_go", "--ft-critic",
                       "state_value", "--ft-correlation", "0.5", "--ft-imitation-weight", "0.5",
                       "--ft-demo-starts", "0.5", "--ft-chunk-noise", "shared", "--bc-members", "2", "--no-progress",
                       "--out", str(tmp_path / "aloha.json")])  # fmt: skip
    config = json.loads((tmp_path / "aloha.json").read_text())["config"]
    assert config["ft_demo_starts"] == 0.5 and config["ft_chunk_noise"] == "shared" and config["bc_members"] == 2
    # no reuse over a shared draw, so no KL bound
    shared = {"reuse": 1, "correlation": 0.5, "lr_schedule": "constant", "lr_kl": None, "max_kl": None}
    assert config["ft_resolved"] == {"ovlr": shared, "es": shared}  # what ran, where the options were finetune's
    tuned = [row for row in rows if row["policy"] == "bc-bp x2 (2 demos)+ft-ovlr"]
    assert [row["seed"] for row in tuned] == [1, 2]  # each from its own imitation seed, from --first-seed
    assert not any(row["policy"] == "bc-bp x2" for row in rows)  # the full-data setting skipped
    assert {row["members"] for row in rows if row["policy"].startswith("bc-") and "+ft-" not in row["policy"]} == {2}
    assert {row["policy"] for row in rows if "+ft-" in row["policy"]} == {
        "bc-bp x2 (2 demos)+ft-ovlr",
        "bc-bp x2 (2 demos)+ft-es",
    }  # BC-OVLR's start not fine-tuned: --ft-starts bp; the starts are ensembles of 2
    with pytest.raises(SystemExit):  # CEM learns its sigma: AR(1) noise refused before anything runs
        aloha.main(["--ft-correlation", "0.5", "--out", str(tmp_path / "never.json")])
    assert "fine-tuning by cem: Invalid correlation" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # CEM learns its sigma: noise shared over the chunk refused before anything runs
        aloha.main(["--ft-chunk-noise", "shared", "--out", str(tmp_path / "never.json")])
    assert "fine-tuning by cem: Invalid chunk_noise: 'shared' keeps sigma fixed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        aloha.main(["--first-seed", "-1", "--out", str(tmp_path / "never.json")])
    assert "--first-seed -1 (expected >= 0)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        aloha.main(["--bc-members", "0", "--out", str(tmp_path / "never.json")])
    assert "--bc-members 0 (expected >= 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # member seeds pass the 31-bit range: refused before the demos
        aloha.main(["--first-seed", str(2**30), "--bc-members", "2", "--out", str(tmp_path / "never.json")])
    assert "the last imitation seed would pass 2147483647" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # past the seeds torch takes: refused before the demos, not after
        aloha.main(["--first-seed", str(2**64), "--out", str(tmp_path / "never.json")])
    assert "the last imitation seed would pass 2147483647" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        aloha.main(["--ft-demo-starts", "1.5", "--out", str(tmp_path / "never.json")])
    assert "--ft-demo-starts 1.5 (a fraction in [0, 1])" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # segments without the critic that closes them: refused before any imitation
        aloha.main(["--ft-methods", "ovlr", "--ft-credit", "to_go", "--ft-horizon", "100",
                    "--out", str(tmp_path / "never.json")])  # fmt: skip
    assert "fine-tuning by ovlr: Invalid horizon: segments of episodes need a critic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        aloha.main(["--ft-methods", "ovlr", "--ft-credit", "to_go", "--ft-critic-warmup", "1e4",
                    "--out", str(tmp_path / "never.json")])  # fmt: skip
    assert "fine-tuning by ovlr: Invalid critic_warmup: it trains the critic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        aloha.main(["--ft-methods", "ovlr", "--ft-reuse", "1", "--ft-lr-schedule", "kl",
                    "--out", str(tmp_path / "never.json")])  # fmt: skip
    assert "fine-tuning by ovlr: Invalid lr_schedule: 'kl' adapts the step" in capsys.readouterr().err


def test_randomized_vjp_benchmark_smoke(tmp_path):
    from benchmarks import randomized_vjp

    out = tmp_path / "randomized_vjp.json"
    rows = randomized_vjp.main(["--rounds", "1", "--draws", "1", "--seeds", "1", "--epochs", "1", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == rows and len(rows) == 7
    assert rows[0]["setting"] == "exact" and rows[0]["backward_vs_exact"] == 1.0
    assert all(0 <= r["bp_digits_accuracy"] <= 1 for r in rows) and "ovlr_digits_accuracy" in rows[1]


def test_every_benchmark_imports_as_a_module_of_the_benchmarks_package():
    """`python -m benchmarks.NAME`: each imports the others and _report as a package, with no
    run-as-a-script fallback."""
    import importlib
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert len(names) >= 16
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        source = (folder / f"{name}.py").read_text()
        assert "run as a script" not in source and "python benchmarks/" not in source, name
        assert name.startswith("_") or callable(getattr(module, "main", None)), name


def test_layerwise_benchmark_smoke(tmp_path):
    from benchmarks import layerwise

    out = tmp_path / "layerwise.json"
    rows = layerwise.main(["--seeds", "1", "--epochs", "1", "--models", "mlp", "--out", str(out)])
    assert [row["method"] for row in rows] == list(layerwise.METHODS)
    assert all(0 <= row[f"{c}_mean"] <= 1 for row in rows for c in layerwise.CONDITIONS + layerwise.TRANSFERS)
    backprop = rows[0]  # attacks crafted on the model itself: the transfer columns are its white-box ones
    assert all(backprop[f"transfer_{kind}_mean"] == backprop[f"{kind}_mean"] for kind in ("fgsm", "ifgsm"))
    memory = {row["method"]: row["peak_memory_mib"] for row in rows}
    # at least Adam's two moments + the gradient of the 9,610 weights; layer-wise keeps 32 copies' activations
    assert all(value >= 3 * 9_610 * 4 / 2**20 for value in memory.values()), memory
    assert memory["layerwise"] > 4 * memory["backprop"], memory
    assert out.exists() and out.with_suffix(".png").exists()


def test_peak_allocated_mib_counts_what_a_run_allocates_at_its_peak():
    from benchmarks._report import peak_allocated_mib

    def run():
        first = torch.zeros(2**18)  # 1 MiB
        second = torch.zeros(2**18)  # 2 MiB live: the peak
        del first, second
        third = torch.zeros(2**17)  # 0.5 MiB after the frees
        return third

    assert peak_allocated_mib(run) == pytest.approx(2.0, abs=0.01)
    assert peak_allocated_mib(lambda: None) == 0.0
    kept = torch.zeros(2**18)
    assert peak_allocated_mib(lambda: kept.add_(1)) < 0.001  # in place: only the scalar 1 is allocated


def test_generative_benchmark_smoke(tmp_path):
    from benchmarks import generative

    out = tmp_path / "generative.json"
    features = tmp_path / "features.pt"  # trained here: the saved one is not touched
    rows = generative.main(["--seeds", "1", "--gan-steps", "4", "--evaluate-every", "2", "--refitted-seeds", "1",
                            "--refitted-steps", "2", "--vae-epochs", "1", "--eval-samples", "50",
                            "--features", str(features), "--out", str(out)])  # fmt: skip
    assert [(row["part"], row["method"]) for row in rows] == [
        ("gan", "backprop"), ("gan", "ovlr"), ("refitted", "ovlr"), ("vae", "backprop"), ("vae", "ovlr")
    ]  # fmt: skip
    assert all(row["fid_mean"] >= 0 and 1 <= row["classes_mean"] <= 10 for row in rows)
    assert features.exists() and out.exists() and out.with_name("generative.png").exists()
    assert json.loads(out.read_text())["summary"]["feature_accuracy"] > 0.9


def test_a_result_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import os

    from benchmarks import _report

    out = tmp_path / "result.json"
    _report.write(out, {"run": 1}, [{"a": 1}])
    before = out.read_bytes()

    def interrupted(descriptor):
        raise KeyboardInterrupt  # Ctrl-C while the new file is being flushed

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _report.write(out, {"run": 2}, [{"a": 2}])
    assert out.read_bytes() == before and [path.name for path in tmp_path.iterdir()] == ["result.json"]


def _process_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc ('R', 'S', 'Z', ...), or '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _running(pids: list[int]) -> dict:
    """The processes of ``pids`` still running (not gone, not a zombie), with their states."""
    return {pid: state for pid in pids if (state := _process_state(pid)) not in ("", "Z")}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_locomotion_workers_exit_when_the_benchmark_is_killed(signal_name):
    """A benchmark killed mid-run (kill, the OOM killer) cannot terminate its pool: its workers,
    each in a run, must not go on for hours, the cores busy with runs nobody will keep."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, multiprocessing, time
        from benchmarks import locomotion
        pool = locomotion.worker_pool(2)
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]  # the workers work: the watch does not end them
        busy = [pool.apply_async(time.sleep, (120,)) for _ in range(2)]  # each worker in a long run
        time.sleep(0.5)
        print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
        time.sleep(120)
    """)], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)  # fmt: skip
    workers = []
    try:
        workers = json.loads(child.stdout.readline())
        assert len(workers) >= 2 and len(_running(workers)) == len(workers)
        child.send_signal(getattr(signal, signal_name))
        child.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _running(workers):
            time.sleep(0.1)
        assert _running(workers) == {}, f"the workers outlived the benchmark ({signal_name})"
    finally:
        child.kill()
        for pid in workers:  # a failing run leaves nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_result_files_name_the_processor_their_cpu_times_were_measured_on(tmp_path):
    from benchmarks import _report

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\nflags\t\t: fpu\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\n")  # fmt: skip
    assert _report.cpu_model(cpuinfo) == "AMD EPYC cpu family 25 model 17"
    assert _report.cpu_model(tmp_path / "missing") == (platform.processor() or "unknown")  # not Linux
    info = _report.machine()
    assert info["cpu"] and isinstance(info["cpus"], int) and info["cpus"] >= 1
