"""Bin packing under hostile input and interruption: BPPLIB files crafted to exhaust memory or
overflow int64, tokens that are not ASCII digits, a fuzzed reader, the bounds at the edge of the
value range, one-line CLI errors (status 2) and Ctrl-C (status 130, every finished run kept)."""

import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bbopt.envs.binpacking import Instance, lower_bound_l1, lower_bound_l2, read_bpplib, read_optima
from bbopt.envs.binpacking.instance import MAX_CAPACITY, MAX_ITEMS, MAX_LINE, MAX_TOTAL
from bbopt.envs.binpacking.runs import read_rows

# ------------------------------------------------------------------ files that cost memory

# Reads each file given on the command line under an address-space ceiling of 1 GiB above what
# the imports hold, and prints one JSON line per file: the outcome, the message, the seconds.
CEILING_SCRIPT = textwrap.dedent("""
    import json, re, resource, sys, time
    from bbopt.envs.binpacking import read_bpplib

    held = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (held + 2**30, held + 2**30))
    for path in sys.argv[1:]:
        began = time.perf_counter()
        try:
            outcome = {"items": read_bpplib(path).items}
        except Exception as error:  # a MemoryError or OverflowError is the failure sought
            outcome = {"error": type(error).__name__, "message": str(error)[:10_000]}
        print(json.dumps({**outcome, "seconds": time.perf_counter() - began}), flush=True)
""")


def read_under_ceiling(paths) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", CEILING_SCRIPT, *map(str, paths)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status")
def test_crafted_files_are_refused_quickly_within_a_memory_ceiling(tmp_path):
    """The 18-byte file whose multiplicity would expand to 300M items, a multiplicity of 10**15,
    a 50 MB single token, a header that promises 10**12 items: each a one-line ValueError at its
    line in well under a second, under a 1 GiB ceiling (before: 4.9 GB, MemoryError, 8.7 GB).
    The largest file accepted (10**7 items) fits under the same ceiling."""
    files = {
        "tiny.txt": (b"3\n100\n5 300000000\n", r"tiny.txt:3: multiplicity 300000000 \(expected 1..3"),
        "huge_count.txt": (b"3\n100\n5 1000000000000000\n", r"huge_count.txt:3: multiplicity 1000000000000000 "),
        "token.txt": (b"7" * 50_000_000, rf"token.txt:1: line longer than {MAX_LINE} bytes \(starts '7{{40}}'\.\.\.\)"),
        "header.txt": (b"1000000000000\n100\n1\n", r"header.txt:1: item count 1000000000000 \(expected 1..10000000\)"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "largest.txt").write_bytes(b"%d\n1000\n1 %d\n" % (MAX_ITEMS, MAX_ITEMS))
    outcomes = read_under_ceiling([tmp_path / name for name in [*files, "largest.txt"]])
    for (name, (_, message)), outcome in zip(files.items(), outcomes, strict=False):
        assert outcome.get("error") == "ValueError", (name, outcome)
        assert re.match(re.escape(str(tmp_path)) + "/" + message, outcome["message"]), outcome["message"]
        assert len(outcome["message"]) < len(str(tmp_path)) + 150 and "\n" not in outcome["message"]
        assert outcome["seconds"] < 1.0, (name, outcome)
    assert outcomes[-1].get("items") == MAX_ITEMS, outcomes[-1]


# ------------------------------------------------------------------ tokens and values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("٣\n100\n5\n5\n5\n", r"bad.txt:1: expected integers, got '٣' \(ASCII digits 0-9 only\)"),  # Arabic-Indic
        ("3\n１００\n5\n5\n5\n", r"bad.txt:2: expected integers, got '１００'"),  # fullwidth
        ("1\n100\n５\n", r"bad.txt:3: expected integers, got '５'"),
        ("1\n1_000\n5\n", r"bad.txt:2: expected integers, got '1_000'"),
        ("1\n+100\n5\n", r"bad.txt:2: expected integers, got '\+100'"),
        ("1\n100\n+5\n", r"bad.txt:3: expected integers, got '\+5'"),
        ("1\n100\n-5\n", r"bad.txt:3: expected integers, got '-5'"),
        ("1\n100\n0x10\n", r"bad.txt:3: expected integers, got '0x10'"),
        ("1\n100\n5\u00a0\n", r"bad.txt:3: expected integers"),  # a no-break space is no separator
        ("2\n100\n5 +2\n", r"bad.txt:3: expected integers, got '5 \+2'"),
        ("1\n9223372036854775808\n1\n", r"bad.txt:2: capacity 9223372036854775808 \(expected 1..9007199254740992\)"),
        ("1\n9007199254740993\n1\n", r"bad.txt:2: capacity 9007199254740993 \(expected 1..9007199254740992\)"),
        ("2\n4611686018427387904\n4611686018427387904 2\n", r"bad.txt:2: capacity 4611686018427387904 \("),
        ("1024\n9007199254740992\n1 1024\n", r"bad.txt:2: capacity 9007199254740992 for 1024 items \(expected items"),
        ("1\n100\n" + "9" * 100 + "\n", r"bad.txt:3: size 9{40}\.\.\. \(expected 1..capacity 100\)"),
        ("1\n100\n5 " + "9" * 100 + "\n", r"bad.txt:3: multiplicity 9{40}\.\.\. \(expected 1..1:"),
        ("1\n100\n" + "x" * 500 + "\n", r"bad.txt:3: expected integers, got 'x{40}'\.\.\. \(ASCII"),
        ("2\n100\n5 2\n5\n", r"bad.txt:4: the header says 2 items, the file lists more"),
        ("3\n100\n5 2\n5 2\n", r"bad.txt:4: multiplicity 2 \(expected 1..1: the header says 3 items, 2 listed"),
        ("1\n100\n" + "1" * (MAX_LINE + 1) + "\n", rf"bad.txt:3: line longer than {MAX_LINE} bytes"),
    ],
)
def test_tokens_and_values_outside_the_format_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as caught:
        read_bpplib(path)
    assert len(str(caught.value)) < len(str(path)) + 150


def test_the_value_range_edges_read_and_bound_exactly(tmp_path):
    """Capacity 2**53 with 1023 full items (items * capacity just below 2**63) reads, and its
    bounds are exact: before, sizes near 2**62 wrapped int64 and the bounds came out 0."""
    path = tmp_path / "edge.txt"
    path.write_text(f"1023\n{2**53}\n{2**53} 1022\n{2**53 - 1}\n")
    instance = read_bpplib(path)
    assert instance.capacity == MAX_CAPACITY and instance.lower_bound == 1023
    (tmp_path / "line.txt").write_text("1\n100\n" + " " * (MAX_LINE - 4) + "5\r\n")  # MAX_LINE bytes before \n
    assert read_bpplib(tmp_path / "line.txt").sizes.tolist() == [5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a ٣\n", r"optima.txt:1: expected 'name optimum', got 'a ٣'"),
        ("a +3\n", r"optima.txt:1: expected 'name optimum'"),
        ("a 1_0\n", r"optima.txt:1: expected 'name optimum'"),
        ("a " + "9" * 80 + "\n", r"optima.txt:1: optimum 9{40}\.\.\. \(expected at most 10000000 bins\)"),
        ("a 3\n" + "b" * 5000 + " 3\n", rf"optima.txt:2: line longer than {MAX_LINE} bytes"),
    ],
)
def test_optima_files_take_ascii_digits_only(tmp_path, text, message):
    (tmp_path / "optima.txt").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_optima(tmp_path / "optima.txt")


def test_non_utf8_optima_name_the_line(tmp_path):
    (tmp_path / "optima.txt").write_bytes(b"a 3\n\xff\xfe 4\n")
    with pytest.raises(ValueError, match=r"optima.txt:2: not UTF-8 text"):
        read_optima(tmp_path / "optima.txt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(capacity=2**63, sizes=[1]), r"Invalid capacity: 9223372036854775808 \(expected an int in 1..2\*\*53\)"),
        (dict(capacity=2**53 + 1, sizes=[1]), r"Invalid capacity: 9007199254740993"),
        (dict(capacity=2**4000, sizes=[1]), r"Invalid capacity: an int of 4001 bits"),
        (dict(capacity=2**62, sizes=[2**62] * 3), r"Invalid capacity: 4611686018427387904"),
        (dict(capacity=2**53, sizes=[1] * 1024), r"Invalid capacity: 9007199254740992 for 1024 items"),
        (dict(capacity=10, sizes=[2**64]), r"Invalid sizes: items \[0\] lie outside 1..capacity 10"),
        (dict(capacity=10, sizes=np.array([2**63], dtype=np.uint64)), r"\(sizes \[9223372036854775808\]\) exceed"),
        (dict(capacity=10, sizes=[1e30]), r"items \[0\] \(sizes \[1e\+30\]\) exceed the capacity 10"),
        (dict(capacity=10, sizes=[4], optimum=10**5000), r"Invalid optimum: an int of 16610 bits"),
    ],
)  # fmt: skip
def test_instances_outside_the_value_range_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Instance(**kwargs)


def test_bounds_refuse_sums_that_could_overflow():
    with pytest.raises(ValueError, match=r"Invalid capacity: 4611686018427387904 for 3 items"):
        lower_bound_l1([2**62] * 3, 2**62)
    with pytest.raises(ValueError, match=r"Invalid sizes: beyond int64"):
        lower_bound_l2([2**64], 10)


def reference_l2(sizes, capacity):
    """Martello-Toth L2 in Python ints, one K at a time, as the definition reads."""
    best = -(-sum(sizes) // capacity)
    for k in {0, *(s for s in sizes if 2 * s <= capacity)}:
        j1 = [s for s in sizes if s > capacity - k]
        j2 = [s for s in sizes if 2 * s > capacity and s <= capacity - k]
        j3 = [s for s in sizes if k <= s and 2 * s <= capacity]
        spill = sum(j3) - (len(j2) * capacity - sum(j2))
        best = max(best, len(j1) + len(j2) + max(0, -(-spill // capacity)))
    return best


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_l2_matches_its_definition_up_to_the_value_range(data):
    capacity = data.draw(st.one_of(st.integers(1, 20), st.integers(1, MAX_CAPACITY)))
    sizes = data.draw(st.lists(st.integers(1, capacity), min_size=1, max_size=12))
    assert lower_bound_l2(sizes, capacity) == reference_l2(sizes, capacity)
    assert lower_bound_l1(sizes, capacity) == -(-sum(sizes) // capacity)


# ------------------------------------------------------------------ the reader, fuzzed

TOKENS = ["0", "1", "2", "3", "5", "10", "100", "-1", "+1", "1_0", "٣", "３", "1.5", "x", "9" * 45, str(2**53),
          str(2**63), "", " ", "\t", "\x00", "\r", "\x0c", "\u00a0"]  # fmt: skip
token_lines = st.lists(st.lists(st.sampled_from(TOKENS), max_size=3).map(" ".join), max_size=8).map("\n".join)
near_valid = st.tuples(st.integers(0, 6), st.integers(0, 12), st.lists(st.tuples(st.integers(0, 13), st.integers(0, 3)),
                       max_size=6)).map(lambda f: f"{f[0]}\n{f[1]}\n" + "".join(f"{s} {c}\n" if c else f"{s}\n"
                                                                                  for s, c in f[2]))  # fmt: skip


@given(st.one_of(st.binary(max_size=300), token_lines.map(str.encode), near_valid.map(str.encode)))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_reader_returns_a_valid_instance_or_names_the_file_and_line(tmp_path, data):
    path = tmp_path / "fuzz.txt"
    path.write_bytes(data)
    try:
        instance = read_bpplib(path)
    except ValueError as error:  # anything else (MemoryError, OverflowError, UnicodeError...) fails
        message = str(error)
        assert re.match(re.escape(str(path)) + r"(:\d+)?: \S", message), message
        assert "\n" not in message and len(message) < len(str(path)) + 150, message
    else:
        assert 1 <= instance.capacity <= MAX_CAPACITY and instance.items * instance.capacity <= MAX_TOTAL
        assert instance.sizes.min() >= 1 and instance.sizes.max() <= instance.capacity
        assert lower_bound_l1(instance.sizes, instance.capacity) <= instance.lower_bound <= instance.items


# ------------------------------------------------------------------ the CLI


def bbopt_binpacking(*arguments):
    return [sys.executable, "-m", "bbopt.cli", "binpacking", *map(str, arguments), "--no-progress"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--instances", "{tmp}/tiny.txt"], r"tiny.txt:3: multiplicity 300000000 \(expected 1..3"),
        (["--instances", "{tmp}/missing.txt"], r"No such instance file or directory: .*missing.txt"),
        (["--budget", "0"], r"argument --budget: expected an int >= 1, got 0 \(see bbopt binpacking --help\)"),
        (["--out", "{tmp}/tiny.txt"], r"tiny.txt is not a directory"),
    ],
)
def test_cli_input_errors_are_one_line_with_status_2(tmp_path, arguments, message):
    (tmp_path / "tiny.txt").write_bytes(b"3\n100\n5 300000000\n")
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    out = [] if "--out" in arguments else ["--out", tmp_path / "out"]
    done = subprocess.run(bbopt_binpacking(*arguments, *out, "--solvers", "ffd"), capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bbopt binpacking: ") and re.search(message, lines[0]), done.stderr


def test_cli_refuses_an_out_that_holds_runs(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs.jsonl").write_text('{"instance": "a", "solver": "ffd", "bins": 3}\n')
    done = subprocess.run(bbopt_binpacking("--count", 1, "--solvers", "ffd", "--out", tmp_path / "out"),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "runs.jsonl already holds finished runs" in done.stderr
    assert len(read_rows(tmp_path / "out" / "runs.jsonl")) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_stops_with_status_130_and_keeps_every_finished_run(tmp_path):
    """Ctrl-C (SIGINT) once some runs have finished: one line on stderr, status 130, and
    runs.jsonl holds exactly the runs the line reports (before: nothing was written)."""
    rows_file = tmp_path / "out" / "runs.jsonl"
    process = subprocess.Popen(bbopt_binpacking("--items", 60, "--count", 40, "--budget", 20_000, "--solvers",
                                                "ffd,random", "--out", tmp_path / "out"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if rows_file.exists() and rows_file.read_text().count("\n") >= 3:
                break
            time.sleep(0.05)
        seen = rows_file.read_text().count("\n")
        assert process.poll() is None and seen >= 3, "no runs finished in time, or all of them did"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    stop = re.fullmatch(r"bbopt binpacking: interrupted: (\d+) of 80 runs finished, kept in (\S+); continue with the "
                        r"same command and --resume", lines[0])  # fmt: skip
    assert stop and stop.group(2) == str(rows_file), lines[0]
    rows = read_rows(rows_file)
    assert len(rows) == int(stop.group(1)) and seen <= len(rows) < 80
    assert [row["solver"] for row in rows] == ["ffd", "random"] * (len(rows) // 2) + ["ffd"] * (len(rows) % 2)
    assert not (tmp_path / "out" / "results.json").exists()
