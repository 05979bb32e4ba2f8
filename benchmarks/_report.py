"""Shared by the benchmarks: configuration + git commit + figures to JSON, and a printed table."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import accumulate
from pathlib import Path

import torch

from bbopt.rollout.checkpoint import write_json

RESULTS = Path(__file__).resolve().parent / "results"


ROOT = Path(__file__).resolve().parent.parent
# `git archive` writes the commit it archives into this file (.gitattributes: export-subst); in a checkout it
# holds the placeholder
ARCHIVED_COMMIT = Path(__file__).with_name("archived_commit.txt")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()


def git_commit() -> str:
    """The code a benchmark runs: HEAD in this repository's checkout (``-dirty`` with changes outside
    benchmarks/results); in a `git archive` copy (as the long runs use, so that the checkout can
    move on), the commit it was made from, ``<sha> (git archive)``; else "unknown"."""
    try:
        if Path(_git("rev-parse", "--show-toplevel")).resolve() == ROOT:  # not a copy inside another checkout
            dirty = _git("status", "--porcelain", "--", ".", ":!benchmarks/results")
            return _git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        archived = ARCHIVED_COMMIT.read_text().strip()
    except OSError:
        return "unknown"
    return f"{archived} (git archive)" if re.fullmatch(r"[0-9a-f]{40}", archived) else "unknown"


def machine() -> dict:
    """What ran a benchmark: CPU times of files from different hosts compare only through it (the
    same 1M-step MuJoCo run has taken 3.5 CPU-minutes on one host of this project's and 7.2 on another)."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name and model number from /proc/cpuinfo (Linux), else `platform.processor()`."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    fields = {}  # the last processor's (they are alike)
    for line in lines:
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip()] = value.strip()
    named = [fields.get("model name"), *(f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields)]
    return " ".join(part for part in named if part) or platform.processor() or "unknown"


class TrainingClock:
    """Wall-clock and CPU seconds (this process, every thread) of training alone: wrap the training
    call in `running()` and each evaluation inside it in `paused()`; `read()` gives (wall, cpu) so far."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._created = time.perf_counter()
        self._marks: tuple[float, float] | None = None

    def _start(self) -> None:
        self._marks = (time.perf_counter(), time.process_time())

    def _stop(self) -> None:
        wall, cpu = self._marks
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self._marks = None

    @contextmanager
    def running(self):
        self._start()
        try:
            yield self
        finally:
            self._stop()

    @contextmanager
    def paused(self):
        if self._marks is None:
            raise RuntimeError("TrainingClock.paused() outside running(): nothing to pause")
        self._stop()
        try:
            yield self
        finally:
            self._start()

    def read(self) -> tuple[float, float]:
        if self._marks is None:
            return self.wall, self.cpu
        wall, cpu = self._marks
        return self.wall + time.perf_counter() - wall, self.cpu + time.process_time() - cpu

    def total(self) -> float:
        """Wall-clock seconds since the clock was made, evaluations included."""
        return time.perf_counter() - self._created

    def state(self) -> dict:
        """What `restore` takes: the seconds so far (between runs of a resumed benchmark run)."""
        wall, cpu = self.read()
        return {"wall": wall, "cpu": cpu, "total": self.total()}

    def restore(self, state: dict) -> None:
        """Go on counting from a `state` (not while running)."""
        if self._marks is not None:
            raise RuntimeError("TrainingClock.restore() while running")
        self.wall, self.cpu = float(state["wall"]), float(state["cpu"])
        self._created = time.perf_counter() - float(state["total"])


def peak_allocated_mib(run: Callable[[], object]) -> float:
    """Peak CPU tensor memory allocated while ``run()`` runs, beyond what was live when it began, in
    MiB: the running sum of the allocator's allocations and frees as torch.profiler records them
    (exact tensor bytes; resident memory, which small models barely move, would be allocator noise).
    What ``run`` frees of what was live before it counts negative, so start from a settled state."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
    if any(e.device_type() != DeviceType.CPU for e in events):
        raise ValueError("peak_allocated_mib measures CPU tensors; this run allocated on another device")
    sizes = [e.nbytes() for e in sorted(events, key=lambda e: e.start_ns())]
    return max(accumulate(sizes, initial=0)) / 2**20


STARTED_AT = git_commit()  # the code a benchmark ran, taken when it starts (the tree may change during a long run)


def stamp() -> dict:
    """What a result records of its making: the code it ran (`STARTED_AT`), the machine and the date."""
    return {"commit": STARTED_AT, "machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write(path: Path, config: dict, rows: list[dict], summary: dict | None = None) -> None:
    """The result JSON, written whole or not at all (`atomic_write`: Ctrl-C or a full disk leaves
    the previous file as it was)."""
    write_json(path, {"config": config, **stamp(), "rows": rows, "summary": summary or {}})
    print(f"\nwrote {path}")


def partial_path(out: Path) -> Path:
    """Where a benchmark writing ``out`` keeps its finished rows while it runs (`kept_rows`)."""
    return Path(out).with_suffix(".partial.jsonl")


@contextmanager
def kept_rows(out: Path, header: dict | None = None) -> Iterator[Callable[[dict], None]]:
    """``keep(row)`` appends a finished row to ``<out>.partial.jsonl`` as one JSON line, flushed,
    so that a benchmark stopped by Ctrl-C, a crash or a kill keeps every row it finished (report
    them with ``--rows <out>.partial.jsonl``). ``header``, if given, is the file's first line.

    The file is created here or refused: one already there holds an interrupted run's rows, or
    belongs to a second process on the same ``--out``. The caller removes it (`finished`) once
    the whole result is written."""
    partial = partial_path(out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = partial.open("x")
    except FileExistsError:
        raise SystemExit(
            f"{partial} exists: the rows an interrupted benchmark kept (report them with --rows "
            f"{partial}), or another benchmark writing to this --out; move it away first"
        ) from None

    def keep(row: dict) -> None:
        handle.write(json.dumps(row) + "\n")
        handle.flush()

    with handle:
        if header is not None:
            keep(header)
        yield keep


def finished(out: Path) -> None:
    """The result at ``out`` is written: its kept rows are no longer needed."""
    partial_path(out).unlink(missing_ok=True)


def json_lines(text: str, path: Path) -> list:
    """The entries of a `kept_rows` file; a torn last line (the benchmark killed while writing it)
    is skipped with a warning, a torn line before it is an error (json.JSONDecodeError)."""
    lines = [line for line in text.splitlines() if line.strip()]
    entries = []
    for k, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if k < len(lines) - 1:
                raise
            warnings.warn(f"{path}: its last line is torn (a row being written when it stopped); skipped", stacklevel=3)
    return entries


def refuse_overwriting_inputs(out: Path, inputs: list[Path]) -> None:
    """``--rows`` reads ``inputs`` and writes ``out``: refused when ``out`` is one of them (the
    merge would replace a source file)."""
    for path in inputs:
        if Path(out).resolve() == Path(path).resolve():
            raise ValueError(f"--out {out} is one of the --rows files: the merge would replace it; give another --out")


def spread(name: str, values: list[float]) -> dict:
    """``{name}_mean``, ``_std``, ``_min``, ``_max`` and the values themselves, for per-seed results."""
    return {
        f"{name}_mean": statistics.mean(values),
        f"{name}_std": statistics.stdev(values) if len(values) > 1 else 0.0,
        f"{name}_min": min(values),
        f"{name}_max": max(values),
        name: list(values),
    }


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print rows; columns are (key, header, format)."""

    def cell(row, key, spec):
        value = row.get(key)
        return "-" if value is None else format(value, spec)

    widths = [max(len(header), 10, *(len(cell(r, key, spec)) for r in rows)) for key, header, spec in columns]
    print("  ".join(f"{header:>{w}}" for (_, header, _), w in zip(columns, widths, strict=True)))
    for row in rows:
        print(
            "  ".join(f"{cell(row, key, spec):>{width}}" for (key, _, spec), width in zip(columns, widths, strict=True))
        )
