"""bbopt.seeding: seeds derived through numpy's SeedSequence instead of ad-hoc offsets."""

import ast
from pathlib import Path

import numpy as np
import pytest

from bbopt.seeding import TEST_EPISODES, VALIDATION_EPISODES, derive

ROOT = Path(__file__).resolve().parents[1]


def first_word(sequence: np.random.SeedSequence) -> int:
    return int(sequence.generate_state(1, dtype=np.uint32)[0]) % (2**31 - 1) + 1


@pytest.mark.parametrize("seed", [0, 1, 7919, 2**40])
def test_derive_is_the_spawned_child(seed):
    children = np.random.SeedSequence(seed).spawn(5)
    assert [derive(seed, k) for k in range(5)] == [first_word(child) for child in children]
    grandchild = children[3].spawn(3)[2]
    assert derive(seed, 3, 2) == first_word(grandchild)


def test_streams_are_deterministic_distinct_and_in_range():
    seeds = [derive(seed, k) for seed in range(20) for k in range(50)]
    assert seeds == [derive(seed, k) for seed in range(20) for k in range(50)]
    assert len(set(seeds)) == len(seeds)  # the offsets this replaces collided: seed 1 stream 0 == seed 0 stream 1
    assert all(1 <= s <= 2**31 - 1 for s in seeds)
    assert derive(0, 1) != derive(1, 0) and derive(0, 1, 0) != derive(0, 1)


@pytest.mark.parametrize(("args", "message"), [
    ((-1, 0), "Invalid seed: -1"),
    ((1.5, 0), "Invalid seed: 1.5"),
    ((True, 0), "Invalid seed: True"),
    ((0,), "at least one stream"),
    ((0, -2), r"Invalid stream\[0\]: -2"),
    ((0, 1, "a"), r"Invalid stream\[1\]: 'a'"),
])  # fmt: skip
def test_bad_input_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        derive(*args)


def test_evaluation_ranges_are_apart():
    assert VALIDATION_EPISODES + 10**5 < TEST_EPISODES


def _offsets(path: Path, root: Path = ROOT) -> list[str]:
    """`seed + <number>` (or `<number> + seed`, any name holding "seed") and `<number> * run` in code, not text."""

    def seedish(node) -> bool:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return "seed" in name.lower()

    def number(node) -> bool:
        return (isinstance(node, ast.Constant) and isinstance(node.value, int)) or (
            isinstance(node, ast.BinOp) and number(node.left) and number(node.right)
        )

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            pairs = ((node.left, node.right), (node.right, node.left))
            if any(seedish(a) and number(b) for a, b in pairs):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            pairs = ((node.left, node.right), (node.right, node.left))
            if any(isinstance(a, ast.Name) and a.id == "run" and number(b) for a, b in pairs):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_offset_finder_finds_the_offsets_it_replaced(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('"""seeds ``seed, seed + 1, ...``"""\nTrainer(seed=seed + 7919)\nrun(x, seed + 1000 * run + i)\n'
                       "MLP(seed=config.seed + 1)\nnext = first_seed + k\n")  # fmt: skip
    found = _offsets(planted, root=tmp_path)
    assert sorted(line.split(":")[1] for line in found) == ["2", "3", "4"]  # not the docstring, not first_seed + k


def test_library_derives_seeds_instead_of_adding_offsets():
    found = [hit for folder in ("bbopt", "envs", "policies", "benchmarks", "examples")
             for path in sorted((ROOT / folder).rglob("*.py")) for hit in _offsets(path)]  # fmt: skip
    assert not found, "ad-hoc seed offsets (use bbopt.seeding.derive):\n" + "\n".join(found)


def test_suites_refuse_a_negative_seed_before_anything_runs(tmp_path):
    from bbopt.cli import main
    from bbopt.envs.binpacking import make_instance
    from bbopt.envs.binpacking.runs import run_instances

    rows = tmp_path / "rows.jsonl"
    with pytest.raises(ValueError, match="Invalid seed: -1"):
        run_instances([make_instance("triplet", 9, 0)], ["ffd"], seed=-1, rows_file=rows)
    assert not rows.exists()
    with pytest.raises(SystemExit) as exited:  # the suite commands parse --seed as an int >= 0
        main(["binpacking", "--family", "triplet", "--items", "9", "--count", "1", "--seed", "-1",
              "--out", str(tmp_path / "bp")])  # fmt: skip
    assert exited.value.code == 2 and not (tmp_path / "bp").exists()
    pytest.importorskip("ioh")
    from bbopt.envs.ioh.suite import run_suite

    with pytest.raises(ValueError, match="Invalid seed: -1"):
        run_suite({}, suite="bbob", functions=[1], instances=[1], dimensions=[2], budget_per_dimension=10, runs=1,
                  out=tmp_path / "ioh", seed=-1)  # fmt: skip
    assert not (tmp_path / "ioh").exists()
