"""Bin-packing instances: validation, seeded generators, lower bounds and the BPPLIB text format.

An `Instance` holds a capacity and integer item sizes. ``optimum`` is set only when it is
known: the triplet generator guarantees it (every bin of its planted packing is exactly full,
so no packing can use fewer bins). ``best_bound`` is the optimum when known, else the larger
of the lower bounds L1 and Martello-Toth L2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Instance",
    "lower_bound_l1",
    "lower_bound_l2",
    "read_bpplib",
    "read_instances",
    "read_optima",
    "triplet",
    "uniform",
    "write_bpplib",
]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True, eq=False)
class Instance:
    """One bin-packing instance: pack ``sizes`` (positive ints, each <= capacity) into as few
    bins of ``capacity`` as possible.

    Args:
        capacity: bin capacity, a positive int.
        sizes: item sizes, a non-empty sequence of positive ints, none larger than capacity.
        name: a label for tables and files.
        optimum: the optimal number of bins, when known (checked against the lower bounds).
        certificate: optionally, a packing that uses ``optimum`` bins (``bin_of[i]`` in
            ``[0, optimum)``); it is checked, so an instance with a certificate and
            ``optimum == lower_bound`` carries its own proof of optimality.
    """

    capacity: int
    sizes: np.ndarray
    name: str = "instance"
    optimum: int | None = None
    certificate: np.ndarray | None = field(default=None, repr=False)
    _bounds: tuple[int, int] = field(init=False, repr=False)

    def __post_init__(self):
        if not _is_int(self.capacity) or self.capacity < 1:
            raise ValueError(f"Invalid capacity: {self.capacity!r} (expected a positive int)")
        raw = np.asarray(self.sizes)
        if raw.ndim != 1 or raw.size == 0:
            raise ValueError(f"Invalid sizes: shape {list(raw.shape)} (expected a non-empty 1-D sequence of ints)")
        integral = raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))
        if raw.dtype.kind not in "iu" and not integral:
            raise ValueError(f"Invalid sizes: dtype {raw.dtype} with non-integer values (expected ints)")
        sizes = raw.astype(np.int64)
        bad = np.flatnonzero(sizes < 1)
        if bad.size:
            shown = bad[:5]
            raise ValueError(f"Invalid sizes: items {shown.tolist()} are not positive (sizes {sizes[shown].tolist()})")
        big = np.flatnonzero(sizes > self.capacity)
        if big.size:
            raise ValueError(
                f"Invalid sizes: items {big[:5].tolist()} (sizes {sizes[big[:5]].tolist()}) exceed the capacity "
                f"{self.capacity}"
            )
        sizes.setflags(write=False)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "capacity", int(self.capacity))
        bounds = (lower_bound_l1(sizes, self.capacity), lower_bound_l2(sizes, self.capacity))
        object.__setattr__(self, "_bounds", bounds)
        if self.optimum is not None:
            if not _is_int(self.optimum) or self.optimum < max(bounds) or self.optimum > sizes.size:
                raise ValueError(
                    f"Invalid optimum: {self.optimum!r} (expected an int between the lower bound {max(bounds)} "
                    f"and the item count {sizes.size})"
                )
            object.__setattr__(self, "optimum", int(self.optimum))
        if self.certificate is not None:
            object.__setattr__(self, "certificate", self._checked_certificate(self.certificate))

    def _checked_certificate(self, certificate) -> np.ndarray:
        if self.optimum is None:
            raise ValueError("Invalid certificate: given without an optimum")
        bin_of = np.asarray(certificate)
        if bin_of.shape != (self.items,) or bin_of.dtype.kind not in "iu":
            raise ValueError(
                f"Invalid certificate: shape {list(bin_of.shape)} {bin_of.dtype} (expected [{self.items}] ints)"
            )
        if bin_of.min() < 0 or bin_of.max() >= self.optimum:
            raise ValueError(f"Invalid certificate: bins outside [0, {self.optimum})")
        loads = np.bincount(bin_of, weights=self.sizes, minlength=self.optimum)
        if loads.max() > self.capacity:
            worst = int(loads.argmax())
            raise ValueError(f"Invalid certificate: bin {worst} holds {int(loads[worst])} > {self.capacity}")
        bin_of = bin_of.astype(np.int64)
        bin_of.setflags(write=False)
        return bin_of

    @property
    def items(self) -> int:
        return int(self.sizes.size)

    @property
    def lower_bound(self) -> int:
        """max(L1, L2): no packing uses fewer bins."""
        return max(self._bounds)

    @property
    def best_bound(self) -> int:
        """The optimum when known, else the lower bound: the bin count that counts as success."""
        return self.optimum if self.optimum is not None else self.lower_bound

    def __repr__(self) -> str:
        return f"Instance({self.name!r}, items={self.items}, capacity={self.capacity}, optimum={self.optimum})"


def lower_bound_l1(sizes, capacity: int) -> int:
    """L1 = ceil(sum of sizes / capacity)."""
    return int(-(-int(np.sum(sizes)) // capacity))


def lower_bound_l2(sizes, capacity: int) -> int:
    """Martello and Toth's L2 (1990): max over K in [0, C/2] of
    |J1| + |J2| + max(0, ceil((sum J3 - (|J2| C - sum J2)) / C)), where J1 holds items > C - K,
    J2 items in (C/2, C - K], J3 items in [K, C/2]. L2 >= L1."""
    sizes = np.sort(np.asarray(sizes, dtype=np.int64))
    best = lower_bound_l1(sizes, capacity)
    candidates = np.unique(np.concatenate([[0], sizes[sizes <= capacity // 2]]))
    for k in candidates:
        j1 = sizes > capacity - k
        j2 = (sizes > capacity / 2) & ~j1
        j3 = (sizes >= k) & (sizes <= capacity / 2)
        n2, s2, s3 = int(j2.sum()), int(sizes[j2].sum()), int(sizes[j3].sum())
        spill = s3 - (n2 * capacity - s2)
        bound = int(j1.sum()) + n2 + (max(0, -(-spill // capacity)))
        best = max(best, bound)
    return best


def _generator(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def uniform(items: int = 120, *, seed=None, low: int = 20, high: int = 100, capacity: int = 150) -> Instance:
    """Falkenauer's "uniform" class: sizes uniform on the integers [low, high], capacity 150
    (the published sets have 120, 250, 500 and 1000 items). The optimum is not known."""
    if not _is_int(items) or items < 1:
        raise ValueError(f"Invalid items: {items!r} (expected a positive int)")
    if not (_is_int(low) and _is_int(high) and 1 <= low <= high <= capacity):
        raise ValueError(f"Invalid sizes range: [{low}, {high}] (expected 1 <= low <= high <= capacity {capacity})")
    sizes = _generator(seed).integers(low, high + 1, size=items)
    return Instance(capacity, sizes, name=f"uniform-{items}")


def triplet(items: int = 60, *, seed=None, capacity: int = 1000) -> Instance:
    """Falkenauer's "triplet" class: ``items / 3`` bins, each filled exactly by three items.

    Per bin: a first item uniform on [380, 490], a second on [250, C - first - 250] and the
    third the rest (so it lies in [250, C - first - 250] too, every item in [250, 500)); the
    items are shuffled. All bins are exactly full, so the optimum is ``items / 3``. The
    published sets have 60, 120, 249 and 501 items. (Ranges scale with ``capacity``.)
    """
    if not _is_int(items) or items < 3 or items % 3:
        raise ValueError(f"Invalid items: {items!r} (expected a positive multiple of 3)")
    if not _is_int(capacity) or capacity < 20:
        raise ValueError(f"Invalid capacity: {capacity!r} (expected an int >= 20)")
    rng = _generator(seed)
    bins = items // 3
    quarter = capacity // 4
    first = rng.integers(round(0.38 * capacity), round(0.49 * capacity) + 1, size=bins)
    second = np.array([rng.integers(quarter, capacity - f - quarter + 1) for f in first])
    third = capacity - first - second
    sizes = np.stack([first, second, third], axis=1).reshape(-1)
    planted = np.repeat(np.arange(bins), 3)
    shuffle = rng.permutation(items)
    return Instance(capacity, sizes[shuffle], name=f"triplet-{items}", optimum=bins, certificate=planted[shuffle])


def write_bpplib(instance: Instance, path) -> Path:
    """Write ``instance`` in the BPPLIB text format: the item count, the capacity, then one
    size per line."""
    path = Path(path)
    lines = [str(instance.items), str(instance.capacity), *map(str, instance.sizes.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_bpplib(path, *, optimum: int | None = None) -> Instance:
    """Read an instance in the BPPLIB text format (item count, capacity, one size per line;
    blank lines ignored; a line may also hold "size count" pairs, as some BPPLIB sets do).

    Raises ``ValueError`` naming the file and line for anything malformed: a non-integer
    token, a count that disagrees with the sizes listed, a size out of range.
    """
    path = Path(path)
    numbered = [(i + 1, line.split()) for i, line in enumerate(path.read_text().splitlines())]
    numbered = [(i, tokens) for i, tokens in numbered if tokens]

    def ints(lineno, tokens):
        try:
            return [int(t) for t in tokens]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected integers, got {' '.join(tokens)!r}") from None

    if len(numbered) < 2:
        raise ValueError(f"{path}: expected the item count, the capacity and the sizes (found {len(numbered)} lines)")
    (count_line, count_tokens), (cap_line, cap_tokens) = numbered[:2]
    if len(count_tokens) != 1 or len(cap_tokens) != 1:
        bad_line = count_line if len(count_tokens) != 1 else cap_line
        raise ValueError(f"{path}:{bad_line}: expected one integer (item count, then capacity)")
    (count,), (capacity,) = ints(count_line, count_tokens), ints(cap_line, cap_tokens)
    if count < 1:
        raise ValueError(f"{path}:{count_line}: item count {count} (expected >= 1)")
    if capacity < 1:
        raise ValueError(f"{path}:{cap_line}: capacity {capacity} (expected >= 1)")
    sizes = []
    for lineno, tokens in numbered[2:]:
        values = ints(lineno, tokens)
        if len(values) == 1:
            size, repeat = values[0], 1
        elif len(values) == 2:
            size, repeat = values
            if repeat < 1:
                raise ValueError(f"{path}:{lineno}: multiplicity {repeat} (expected >= 1)")
        else:
            raise ValueError(f"{path}:{lineno}: expected a size (or 'size count'), got {len(values)} numbers")
        if not 1 <= size <= capacity:
            raise ValueError(f"{path}:{lineno}: size {size} (expected 1..capacity {capacity})")
        sizes.extend([size] * repeat)
    if len(sizes) != count:
        raise ValueError(f"{path}: the header says {count} items, the file lists {len(sizes)}")
    return Instance(capacity, np.array(sizes), name=path.stem, optimum=optimum)


def read_optima(path) -> dict[str, int]:
    """Known optima from a text file: one ``name optimum`` pair per line (whitespace or a comma
    between; ``#`` starts a comment), where name is the instance file's stem."""
    path = Path(path)
    optima = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split("#")[0].replace(",", " ").split()
        if not tokens:
            continue
        if len(tokens) != 2 or not tokens[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'name optimum', got {line.strip()!r}")
        if tokens[0] in optima:
            raise ValueError(f"{path}:{lineno}: {tokens[0]!r} twice")
        optima[tokens[0]] = int(tokens[1])
    return optima


def read_instances(paths, *, optima: dict[str, int] | None = None) -> list[Instance]:
    """Instances from BPPLIB files or directories (every regular file inside, sorted by name,
    not recursive). A directory without files is an error; so is any malformed file, and an
    entry of ``optima`` (instance name -> optimum) that names no instance read."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                raise ValueError(f"{entry}: directory holds no instance files")
            files.extend(found)
        elif entry.is_file():
            files.append(entry)
        else:
            raise FileNotFoundError(f"No such instance file or directory: {entry}")
    optima = dict(optima or {})
    unknown = sorted(set(optima) - {f.stem for f in files})
    if unknown:
        raise ValueError(f"Invalid optima: no instance file named {unknown[:5]}")
    instances = []
    for file in files:
        try:
            instances.append(read_bpplib(file, optimum=optima.get(file.stem)))
        except ValueError as error:
            if str(error).startswith(str(file)):
                raise
            raise ValueError(f"{file}: {error}") from None  # e.g. an optimum below the lower bound
    return instances
