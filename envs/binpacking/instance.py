"""Bin-packing instances: validation, seeded generators, lower bounds and the BPPLIB text format.

An `Instance` holds a capacity and integer item sizes. ``optimum`` is set only when it is
known: the triplet generator guarantees it (every bin of its planted packing is exactly full,
so no packing can use fewer bins). ``best_bound`` is the optimum when known, else the larger
of the lower bounds L1 and Martello-Toth L2.

Value range: a capacity in ``1..MAX_CAPACITY`` (2**53: every size and load is exact as a float64,
which the decoders' loss and the set network's features use) and ``items * capacity <= MAX_TOTAL``
(2**63 - 1: every sum of sizes that the bounds and decoders compute is a sum of at most ``items``
sizes, each at most ``capacity``, so it fits int64). `read_bpplib` also caps the item count at
``MAX_ITEMS`` (10**7: an 80 MB array) and reads one bounded line at a time, so no file, however
crafted, costs more than that.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bbopt.rollout.checkpoint import write_text

__all__ = [
    "MAX_CAPACITY",
    "MAX_ITEMS",
    "MAX_LINE",
    "MAX_TOTAL",
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


MAX_CAPACITY = 2**53  # capacities and sizes: exact in float64
MAX_TOTAL = 2**63 - 1  # items * capacity: every sum of sizes fits int64
MAX_ITEMS = 10**7  # items in a BPPLIB file (an 80 MB int64 array)
MAX_LINE = 1024  # bytes in one line of a BPPLIB or optima file (two numbers need 40)
SHOWN = 40  # characters of an offending token or value echoed in an error


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _shown(value) -> str:
    """``value`` for an error message, at most SHOWN characters then "...": text (str, or a
    file's bytes) quoted, anything else as its repr (a file's token or a caller's int may be
    megabytes long; an int of more than 4300 digits has no repr at all)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return repr(value[:SHOWN]) + "..." * (len(value) > SHOWN)
    if isinstance(value, int) and value.bit_length() > 4 * SHOWN:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text[:SHOWN] + "..." * (len(text) > SHOWN)


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
        if not _is_int(self.capacity) or not 1 <= self.capacity <= MAX_CAPACITY:
            raise ValueError(f"Invalid capacity: {_shown(self.capacity)} (expected an int in 1..2**53)")
        capacity = int(self.capacity)
        sizes = _checked_sizes(self.sizes, capacity)
        if sizes.size * capacity > MAX_TOTAL:
            raise ValueError(
                f"Invalid capacity: {capacity} for {sizes.size} items (expected items * capacity < 2**63, "
                "so that every sum of sizes fits int64)"
            )
        sizes.setflags(write=False)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "capacity", capacity)
        bounds = (lower_bound_l1(sizes, self.capacity), lower_bound_l2(sizes, self.capacity))
        object.__setattr__(self, "_bounds", bounds)
        if self.optimum is not None:
            if not _is_int(self.optimum) or self.optimum < max(bounds) or self.optimum > sizes.size:
                raise ValueError(
                    f"Invalid optimum: {_shown(self.optimum)} (expected an int between the lower bound {max(bounds)} "
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


def _checked_sizes(sizes, capacity: int) -> np.ndarray:
    """``sizes`` as a new int64 array, each checked to lie in ``1..capacity`` before the cast (a
    float or uint64 beyond int64 would wrap)."""
    raw = np.asarray(sizes)
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(f"Invalid sizes: shape {list(raw.shape)} (expected a non-empty 1-D sequence of ints)")
    if raw.dtype.kind == "O" and all(map(_is_int, raw)):  # Python ints beyond int64 and uint64
        outside = [i for i, value in enumerate(raw) if not 1 <= value <= capacity]
        if outside:
            raise ValueError(f"Invalid sizes: items {outside[:5]} lie outside 1..capacity {capacity}")
        raw = raw.astype(np.int64)
    integral = raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))
    if raw.dtype.kind not in "iu" and not integral:
        raise ValueError(f"Invalid sizes: dtype {raw.dtype} with non-integer values (expected ints)")
    bad = np.flatnonzero(raw < 1)
    if bad.size:
        shown = bad[:5]
        raise ValueError(f"Invalid sizes: items {shown.tolist()} are not positive (sizes {raw[shown].tolist()})")
    big = np.flatnonzero(raw > capacity)
    if big.size:
        raise ValueError(
            f"Invalid sizes: items {big[:5].tolist()} (sizes {raw[big[:5]].tolist()}) exceed the capacity {capacity}"
        )
    return raw.astype(np.int64)


def _bound_sizes(sizes, capacity: int) -> np.ndarray:
    """``sizes`` as int64 for the bounds, refused where a sum of them might not fit int64."""
    try:
        sizes = np.asarray(sizes, dtype=np.int64)
    except OverflowError:
        raise ValueError("Invalid sizes: beyond int64 (expected 1..capacity)") from None
    if not 1 <= capacity <= MAX_CAPACITY or sizes.size * capacity > MAX_TOTAL:
        raise ValueError(f"Invalid capacity: {_shown(capacity)} for {sizes.size} items (expected 1..2**53 "
                         "and items * capacity < 2**63)")  # fmt: skip
    if sizes.size and (sizes.min() < 1 or sizes.max() > capacity):
        raise ValueError(f"Invalid sizes: outside 1..capacity {capacity}")
    return sizes


def lower_bound_l1(sizes, capacity: int) -> int:
    """L1 = ceil(sum of sizes / capacity). The sum is at most items * capacity < 2**63."""
    return int(-(-int(np.sum(_bound_sizes(sizes, capacity))) // capacity))


def lower_bound_l2(sizes, capacity: int) -> int:
    """Martello and Toth's L2 (1990): max over K in [0, C/2] of
    |J1| + |J2| + max(0, ceil((sum J3 - (|J2| C - sum J2)) / C)), where J1 holds items > C - K,
    J2 items in (C/2, C - K], J3 items in [K, C/2]. L2 >= L1.

    Every K at once, from prefix sums of the sorted sizes (O(n log n), not O(n) per K); integers
    only (an item is > C/2 iff it is > C // 2), and every sum is at most items * capacity < 2**63.
    """
    sizes = np.sort(_bound_sizes(sizes, capacity))
    prefix = np.concatenate([[0], np.cumsum(sizes)])  # prefix[i]: the sum of the i smallest items
    half = capacity // 2
    ks = np.unique(np.concatenate([[0], sizes[sizes <= half]]))
    j1_from = np.searchsorted(sizes, capacity - ks, side="right")  # J1 = sizes[j1_from:]
    j2_from = np.searchsorted(sizes, half, side="right")  # J2 = sizes[j2_from:j1_from] (K <= C/2 <= C - K)
    j3_from = np.searchsorted(sizes, ks, side="left")  # J3 = sizes[j3_from:j2_from]
    n2 = j1_from - j2_from
    s2 = prefix[j1_from] - prefix[j2_from]
    s3 = prefix[j2_from] - prefix[j3_from]
    spill = s3 - (n2 * capacity - s2)
    bounds = (sizes.size - j1_from) + n2 + np.maximum(0, -(-spill // capacity))
    return max(lower_bound_l1(sizes, capacity), int(bounds.max()))


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
    return write_text(path, "\n".join(lines) + "\n")


_DIGITS = re.compile(rb"[0-9]+")  # ASCII digits only: no sign, no "_", no other script's digits


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for each line of ``path``, read one at a time and at most MAX_LINE
    bytes at a time: a longer line is refused before it is read whole."""
    with path.open("rb") as handle:
        for lineno in itertools.count(1):
            line = handle.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                raise ValueError(f"{path}:{lineno}: line longer than {MAX_LINE} bytes (starts {_shown(line)})")
            yield lineno, line


def _number(token: bytes) -> str:
    """A token of ASCII digits for an error message, cut to SHOWN digits then "..."."""
    return token[:SHOWN].decode("ascii") + "..." * (len(token) > SHOWN)


def _ints(where: str, tokens: list[bytes]) -> list[int]:
    """The tokens of one line as ints; each must be ASCII digits (at most MAX_LINE of them)."""
    if not all(_DIGITS.fullmatch(token) for token in tokens):
        raise ValueError(f"{where}: expected integers, got {_shown(b' '.join(tokens))} (ASCII digits 0-9 only)")
    return [int(token) for token in tokens]


def _header(path: Path, line: tuple[int, list[bytes]], what: str, maximum: int) -> int:
    """The item count or the capacity: one integer in ``1..maximum`` on its own line."""
    lineno, tokens = line
    if len(tokens) != 1:
        raise ValueError(f"{path}:{lineno}: expected one integer (item count, then capacity)")
    (value,) = _ints(f"{path}:{lineno}", tokens)
    if not 1 <= value <= maximum:
        raise ValueError(f"{path}:{lineno}: {what} {_number(tokens[0])} (expected 1..{maximum})")
    return value


def _size_line(where: str, tokens: list[bytes], capacity: int, count: int, listed: int) -> tuple[int, int]:
    """(size, multiplicity) of a "size" or "size count" line, the multiplicity checked against the
    items the header has left (``count - listed``) before anything is expanded."""
    values = _ints(where, tokens)
    if len(values) > 2:
        raise ValueError(f"{where}: expected a size (or 'size count'), got {len(values)} numbers")
    if not 1 <= values[0] <= capacity:
        raise ValueError(f"{where}: size {_number(tokens[0])} (expected 1..capacity {capacity})")
    left = count - listed
    if left == 0:
        raise ValueError(f"{where}: the header says {count} items, the file lists more")
    repeat = values[1] if len(values) == 2 else 1
    if not 1 <= repeat <= left:
        raise ValueError(
            f"{where}: multiplicity {_number(tokens[1])} (expected 1..{left}: the header says {count} items, "
            f"{listed} listed before this line)"
        )
    return values[0], repeat


def read_bpplib(path, *, optimum: int | None = None) -> Instance:
    """Read an instance in the BPPLIB text format (item count, capacity, one size per line;
    blank lines ignored; a line may also hold "size count" pairs, as some BPPLIB sets do).

    Streams the file one bounded line at a time into an array of the header's item count, so
    memory stays within MAX_ITEMS int64s and MAX_LINE bytes whatever the file holds. Raises
    ``ValueError`` naming the file and line (a token echoed to at most SHOWN characters) for
    anything malformed: a token that is not ASCII digits (a sign, "_", other scripts' digits),
    an item count outside ``1..MAX_ITEMS``, a capacity outside ``1..MAX_CAPACITY`` or with
    items * capacity > MAX_TOTAL, a size outside ``1..capacity``, more items than the header's
    count (a multiplicity is checked before it is expanded), fewer items, a line longer than
    MAX_LINE bytes.
    """
    path = Path(path)
    lines = ((lineno, line.split()) for lineno, line in _lines(path))
    lines = ((lineno, tokens) for lineno, tokens in lines if tokens)
    header = list(itertools.islice(lines, 2))
    if len(header) < 2:
        raise ValueError(f"{path}: expected the item count, the capacity and the sizes (found {len(header)} lines)")
    count = _header(path, header[0], "item count", MAX_ITEMS)
    capacity = _header(path, header[1], "capacity", MAX_CAPACITY)
    if count * capacity > MAX_TOTAL:
        raise ValueError(
            f"{path}:{header[1][0]}: capacity {capacity} for {count} items (expected items * capacity < 2**63, "
            "so that every sum of sizes fits int64)"
        )
    sizes = np.empty(count, dtype=np.int64)
    listed = 0
    for lineno, tokens in lines:
        size, repeat = _size_line(f"{path}:{lineno}", tokens, capacity, count, listed)
        sizes[listed : listed + repeat] = size
        listed += repeat
    if listed != count:
        raise ValueError(f"{path}: the header says {count} items, the file lists {listed}")
    return Instance(capacity, sizes, name=path.stem, optimum=optimum)


def read_optima(path) -> dict[str, int]:
    """Known optima from a text file: one ``name optimum`` pair per line (whitespace or a comma
    between; ``#`` starts a comment), where name is the instance file's stem and optimum ASCII
    digits (at most MAX_ITEMS). Read one bounded line at a time, like `read_bpplib`."""
    path = Path(path)
    optima = {}
    for lineno, raw in _lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}:{lineno}: not UTF-8 text: {_shown(raw)}") from None
        tokens = line.split("#")[0].replace(",", " ").split()
        if not tokens:
            continue
        if len(tokens) != 2 or not _DIGITS.fullmatch(tokens[1].encode()):
            raise ValueError(f"{path}:{lineno}: expected 'name optimum', got {_shown(line.strip())}")
        digits = tokens[1].encode()
        if int(digits) > MAX_ITEMS:
            raise ValueError(f"{path}:{lineno}: optimum {_number(digits)} (expected at most {MAX_ITEMS} bins)")
        if tokens[0] in optima:
            raise ValueError(f"{path}:{lineno}: {_shown(tokens[0])} twice")
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
