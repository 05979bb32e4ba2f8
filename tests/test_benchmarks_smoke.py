"""The benchmarks run end to end at tiny sizes and write their JSON (figures come from the full runs)."""

import json

import pytest

from benchmarks import ask_tell, overhead


def test_overhead_benchmark_smoke(tmp_path):
    out = tmp_path / "overhead.json"
    rows = overhead.main(["--models", "mlp", "--samples", "4", "--rounds", "2", "--es-rounds", "1", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert payload["rows"] == rows and payload["commit"]
    row = rows[0]
    assert row["ovlr_bp_time_ratio"] == pytest.approx(row["ovlr_seconds"] / row["bp_seconds"])
    assert row["param_es_memory_mib"] > 0 and row["ovlr_memory_mib"] > 0


def test_ask_tell_benchmark_smoke(tmp_path):
    out = tmp_path / "ask_tell.json"
    rows = ask_tell.main(["--dimensions", "10", "--populations", "8", "--min-seconds", "0", "--min-iterations", "2",
                          "--max-iterations", "2", "--out", str(out)])  # fmt: skip
    assert {r["solver"] for r in rows} == set(ask_tell.SOLVERS)
    assert all(r["iterations"] == 2 and r["us_per_candidate"] > 0 for r in rows), rows
    assert json.loads(out.read_text())["summary"]["ranking"]["d=10,n=8"]
