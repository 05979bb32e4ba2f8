"""A benchmark result names the code it ran, also from a `git archive` copy (how the long runs are made)."""

import io
import shutil
import subprocess
import sys
import tarfile

import pytest

from benchmarks import _report

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (_report.ROOT / ".git").exists(), reason="needs git and this repository"
)


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=_report.ROOT).stdout.strip()  # fmt: skip


def _commit_seen_from(directory) -> str:
    code = "from benchmarks._report import STARTED_AT; print(STARTED_AT)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=directory).stdout.strip()  # fmt: skip


def test_a_checkout_names_its_head():
    assert _report.git_commit().removesuffix("-dirty") == _head()


@pytest.mark.parametrize("inside_another_checkout", [False, True])
def test_a_git_archive_copy_names_the_commit_it_was_made_from(tmp_path, inside_another_checkout):
    archive = subprocess.run(["git", "archive", "HEAD"], capture_output=True, check=True, cwd=_report.ROOT).stdout
    if inside_another_checkout:  # a copy under some other repository names its own commit, not that one's
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    copy = tmp_path / "copy"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(copy, filter="data")
    assert _commit_seen_from(copy) == f"{_head()} (git archive)"
    (copy / "benchmarks" / "archived_commit.txt").write_text("$Format:%H$\n")  # a copy made without export-subst
    assert _commit_seen_from(copy) == "unknown"
