"""Rows files: the results of a long command, one JSON line per finished run, written as it ends.

A suite of runs (`bbopt ioh`, `bbopt binpacking`) appends each run's row the moment the run
ends, in one write, fsynced, so a crash, a full disk or Ctrl-C loses only the run in progress.
A new file is created exclusively: the rows of an earlier run or of another process are never
overwritten. With ``resume=True`` the rows already in the file are read back (``finished``,
keyed by the caller's ``key``) and the suite runs only the rest; a last line cut short by a
killed writer (no newline at its end) is dropped, a damaged line anywhere else is refused
with its ``file:line``.

One writer per file: the commands hold their output directory's lock (`bbopt.rollout.lock`)
for the whole suite; a second process appending to the same file through the Python API is not
detected.

Why not a database: the rows are few (one per run), append-only and must be readable by a
person and by ``json``; one line per row is the whole format.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

__all__ = ["RowsFile", "read_rows"]


class RowsFile:
    """``with RowsFile(path, key=..., resume=...) as rows: rows.append(row)``; ``rows.finished``
    holds the rows found in the file on resume (``{key(row): row}``)."""

    def __init__(self, path: Path | str, *, key: Callable[[dict], tuple], resume: bool = False,
                 check: Callable[[dict], bool] = lambda row: True):  # fmt: skip
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.finished: dict[tuple, dict] = {}
        if resume and self.path.exists():
            self.finished = self._read(check)
            flags = os.O_WRONLY | os.O_APPEND
        else:
            if self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()  # an empty leftover holds nothing
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        try:
            self.descriptor = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise ValueError(
                f"Invalid rows file: {self.path} already holds finished runs (an earlier run, or another process); "
                "continue them with --resume, or move the file away"
            ) from None

    def _read(self, check: Callable[[dict], bool]) -> dict[tuple, dict]:
        rows, complete = _parse(self.path, check, torn="drop")
        if complete < self.path.stat().st_size:  # a line cut short by a killed writer: its run did not finish
            warnings.warn(f"{self.path}: dropped an incomplete last line ({self.path.stat().st_size - complete} "
                          "bytes, a run killed while writing); that run is done again", RuntimeWarning,
                          stacklevel=3)  # fmt: skip
            with self.path.open("r+b") as handle:
                handle.truncate(complete)
        finished: dict[tuple, dict] = {}
        for number, row in rows:
            key = self.key(row)
            if key in finished:
                raise ValueError(f"{self.path}:{number}: run {key} is there twice")
            finished[key] = row
        return finished

    def append(self, row: dict) -> None:
        """Write ``row`` as one line, in one call, and fsync it."""
        line = (json.dumps(row) + "\n").encode()
        while line:
            line = line[os.write(self.descriptor, line) :]
        os.fsync(self.descriptor)

    def close(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> RowsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_rows(path: Path | str, *, check: Callable[[dict], bool] = lambda row: True) -> list[dict]:
    """The rows of a rows file, in order; a line that is not JSON, or not a row (``check``), is
    refused with its ``file:line`` (a last line cut short included: reading changes nothing)."""
    return [row for _, row in _parse(Path(path), check, torn="raise")[0]]


def _parse(path: Path, check: Callable[[dict], bool], *, torn: str) -> tuple[list[tuple[int, dict]], int]:
    """``([(line number, row)], bytes of complete lines)``; ``torn="drop"`` leaves out a last
    line without its newline, ``"raise"`` parses it like the others."""
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1 if torn == "drop" else len(data)
    rows = []
    for number, line in enumerate(data[:complete].split(b"\n"), 1):  # the file's own lines, bytes
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{path}:{number}: not UTF-8 text (bytes no writer of rows produces)") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON row ({error.msg}); a run killed while writing?") from None
        if not isinstance(row, dict) or not check(row):
            raise ValueError(f"{path}:{number}: not a run row of this command")
        rows.append((number, row))
    return rows, complete
