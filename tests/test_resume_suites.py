"""Interrupted suites continue: `bbopt.rows_file.RowsFile` (one fsynced JSON line per finished
run) and `--resume` on `bbopt ioh` and `bbopt binpacking`: the finished runs are kept, only the
rest run, and the rows equal those of an uninterrupted run."""

import json
import subprocess
import sys

import pytest

from bbopt.cli import main
from bbopt.rows_file import RowsFile


def key(row):
    return (row["name"],)


# ------------------------------------------------------------------------ the rows file
def test_a_new_rows_file_is_created_once(tmp_path):
    path = tmp_path / "rows.jsonl"
    with RowsFile(path, key=key) as rows:
        rows.append({"name": "a"})
    with pytest.raises(ValueError, match=r"already holds finished runs .*--resume"):
        RowsFile(path, key=key)
    assert path.read_text() == '{"name": "a"}\n'
    path.write_text("")
    RowsFile(path, key=key).close()  # an empty leftover holds nothing: replaced


def test_resume_reads_the_finished_rows_and_appends(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"name": "a"}\n{"name": "b"}\n')
    with RowsFile(path, key=key, resume=True) as rows:
        assert list(rows.finished) == [("a",), ("b",)]
        rows.append({"name": "c"})
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_line_cut_short_by_a_killed_writer_is_dropped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"name": "a"}\n{"name": "b", "val')
    with pytest.warns(RuntimeWarning, match="dropped an incomplete last line"):
        rows = RowsFile(path, key=key, resume=True)
    rows.append({"name": "b"})
    rows.close()
    assert path.read_text() == '{"name": "a"}\n{"name": "b"}\n'


@pytest.mark.parametrize("text, message", [
    ('{"name": "a"}\nnot json\n{"name": "b"}\n', r"rows.jsonl:2: not a JSON row"),
    ('{"name": "a"}\n[1, 2]\n', r"rows.jsonl:2: not a run row of this command"),
    ('{"name": "a"}\n{"other": 1}\n', r"rows.jsonl:2: not a run row of this command"),
    ('{"name": "a"}\n{"name": "a"}\n', r"rows.jsonl:2: run \('a',\) is there twice"),
    ('{"name": "a"}\n{"name": "\xff\xfe"}\n', r"rows.jsonl:2: not UTF-8 text"),
    ('{"name": "a"}\r{"name": "b"}\n', r"rows.jsonl:1: not a JSON row"),
])  # fmt: skip
def test_a_damaged_rows_file_is_refused_with_its_line(tmp_path, text, message):
    path = tmp_path / "rows.jsonl"
    data = text.encode("latin-1")  # \xff\xfe stay raw bytes: not UTF-8
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message):
        RowsFile(path, key=key, resume=True, check=lambda row: "name" in row)
    assert path.read_bytes() == data  # nothing changed


# ------------------------------------------------------------------------ bin packing
PACKING = ["binpacking", "--items", "30", "--count", "3", "--budget", "300", "--solvers", "ffd,ovlr", "--no-progress"]


def comparable(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def run_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_binpacking_resume_runs_only_the_missing_runs_and_matches_an_uninterrupted_run(tmp_path):
    assert main([*PACKING, "--out", str(tmp_path / "straight")]) == 0
    straight = run_rows(tmp_path / "straight" / "runs.jsonl")
    assert len(straight) == 6
    assert main([*PACKING, "--out", str(tmp_path / "cut")]) == 0
    rows_file = tmp_path / "cut" / "runs.jsonl"
    lines = rows_file.read_text().splitlines(keepends=True)
    rows_file.write_text("".join(lines[:3]) + lines[3][:20])  # three runs finished, a fourth cut mid-write
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        assert main([*PACKING, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    resumed = run_rows(rows_file)
    assert comparable(resumed) == comparable(straight)
    assert resumed[:3] == [json.loads(line) for line in lines[:3]]  # kept as they were, seconds included
    assert json.loads((tmp_path / "cut" / "results.json").read_text())["runs"] == resumed


def test_binpacking_refuses_a_second_run_and_a_resume_with_other_options(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main([*PACKING, "--out", out]) == 0
    config = (tmp_path / "out" / "config.json").read_text()
    assert main([*PACKING, "--out", out]) == 2
    assert "already holds finished runs; continue them with --resume" in capsys.readouterr().err
    assert (tmp_path / "out" / "config.json").read_text() == config  # the first run's config is kept
    changed = [a if a != "300" else "400" for a in PACKING]
    assert main([*changed, "--out", out, "--resume"]) == 2
    assert "these differ: --budget (was 300)" in capsys.readouterr().err
    assert main([*PACKING, "--out", out, "--resume"]) == 0  # everything finished: nothing runs again
    assert len(run_rows(tmp_path / "out" / "runs.jsonl")) == 6


# ------------------------------------------------------------------------ IOH
IOH = ["ioh", "--functions", "1,2,3", "--instances", "1", "--dimensions", "2", "--budget-per-dim", "100",
       "--solvers", "es", "--no-progress"]  # fmt: skip


def test_ioh_resume_matches_an_uninterrupted_run(tmp_path):
    pytest.importorskip("ioh")
    assert main([*IOH, "--out", str(tmp_path / "straight")]) == 0
    assert main([*IOH, "--out", str(tmp_path / "cut")]) == 0
    rows_file = tmp_path / "cut" / "rows.jsonl"
    first = rows_file.read_text().splitlines(keepends=True)[0]
    rows_file.write_text(first)  # one run finished
    assert main([*IOH, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert comparable(run_rows(rows_file)) == comparable(run_rows(tmp_path / "straight" / "rows.jsonl"))
    summaries = [json.loads((tmp_path / name / "summary.json").read_text())["summary"] for name in ("cut", "straight")]
    assert comparable(summaries[0]) == comparable(summaries[1]) and summaries[0][0]["runs"] == 3


def test_ctrl_c_message_says_how_to_continue(tmp_path):
    pytest.importorskip("ioh")
    out = tmp_path / "out"
    process = subprocess.run([sys.executable, "-c", (
        "import bbopt.envs.ioh.suite as s, sys\n"
        "from bbopt.cli import main\n"
        "original = s.get_problem\n"
        "calls = []\n"
        "def interrupting(*a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2: raise KeyboardInterrupt\n"
        "    return original(*a, **k)\n"
        "s.get_problem = interrupting\n"
        f"sys.exit(main({[*IOH, '--out', str(out)]!r}))\n")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert process.returncode == 130, process.stderr
    assert "continue with the same command and --resume" in process.stderr
    assert len(run_rows(out / "rows.jsonl")) == 1
