"""Priorities -> packing, vectorized over the samples of an ask.

Three decoders; each reads one priority per item (higher first) and loops over items or
bins only, handling every sample at once on ``[samples, ...]`` arrays:

- ``first_fit``: items in priority order, each into the lowest-numbered bin with room.
- ``best_fit``: items in priority order, each into the bin with the least room left that
  still fits (ties to the lowest number).
- ``completion`` (the default): bin by bin. The highest-priority unpacked item opens a bin;
  the bin is then completed *exactly* if it can be: by one item of exactly the free room, or
  else by two items summing to it (the highest-priority item that has such a partner, then
  its highest-priority partner); otherwise it is filled with the largest unpacked item that
  fits (ties by priority) until nothing fits. Exact completions are what optimal packings of
  tight instances (Falkenauer's triplets, every bin exactly full) are made of; first and best
  fit on a priority order almost never produce them.

Loss (minimized) = bins used + a tie-breaker in [0, 1) that ranks packings with equally
many bins by how concentrated their free space is. With k bins, fills x_b = load_b / C and
T = sum_b x_b, the sum of squares S = sum_b x_b^2 lies between T^2 / k (every bin equally
full) and U = min(T, k - 1 + (T - k + 1)^2) (all bins full but one); the tie-breaker is
0.99 (U - S) / (U - T^2 / k): 0 when the free space sits in a single bin (a perfect packing
included), 0.99 when it is spread evenly. (Falkenauer's fitness S / k, rescaled to use the
whole interval at each bin count: the raw fitness moves by ~1e-2 between packings while a bin
moves the loss by 1, which drowns the tie-breaker for a likelihood-ratio solver.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bbopt.envs.binpacking.instance import Instance

__all__ = ["DECODERS", "Packing", "decode", "fill_tiebreak", "max_bins", "packing_loss"]

DECODERS = ("completion", "best_fit", "first_fit")


@dataclass(frozen=True)
class Packing:
    """Decoded packings of ``samples`` priority vectors: ``bin_of[s, i]`` is item i's bin in
    sample s (bins numbered from 0 in the order they were opened), ``bins[s]`` the bin count,
    ``fill[s, b]`` the load of bin b (0 from ``bins[s]`` on)."""

    bin_of: np.ndarray  # [samples, items] int
    bins: np.ndarray  # [samples] int
    fill: np.ndarray  # [samples, max_bins] int
    capacity: int

    @property
    def loss(self) -> np.ndarray:
        """Bins plus the fill tie-breaker, ``[samples]``."""
        return packing_loss(self.bins, self.fill, self.capacity)


def max_bins(instance: Instance) -> int:
    """An upper bound on the bins any of the decoders uses: none of them opens a bin while an
    item fits an open one, so no two bins end at most half full, and bins <= ceil(2 sum / C)
    (and never more than the items)."""
    total = int(instance.sizes.sum())
    return min(instance.items, -(-2 * total // instance.capacity) + 1)


def _priorities(instance: Instance, priorities) -> np.ndarray:
    if isinstance(priorities, torch.Tensor):
        priorities = priorities.detach().cpu().numpy()
    values = np.asarray(priorities, dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[1] != instance.items:
        raise ValueError(
            f"Invalid priorities: shape {list(np.shape(priorities))} (expected [{instance.items}] or "
            f"[samples, {instance.items}] for {instance.name})"
        )
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise ValueError(f"Invalid priorities: NaN or inf in samples {np.flatnonzero(bad)[:10].tolist()}")
    return values


def decode(instance: Instance, priorities, decoder: str = "completion") -> Packing:
    """Pack ``instance`` once per row of ``priorities`` (``[items]`` or ``[samples, items]``,
    numpy or torch). Equal priorities go to the lower item index first."""
    if decoder not in DECODERS:
        raise ValueError(f"Invalid decoder: {decoder!r} (expected one of {list(DECODERS)})")
    values = _priorities(instance, priorities)
    if decoder == "completion":
        return _completion(instance, values)
    return _item_fit(instance, values, best=decoder == "best_fit")


def _item_fit(instance: Instance, values: np.ndarray, *, best: bool) -> Packing:
    samples, items = values.shape
    capacity = instance.capacity
    order = np.argsort(-values, axis=1, kind="stable")
    sizes = instance.sizes[order]  # [samples, items] in packing order
    room = np.full((samples, max_bins(instance)), capacity, dtype=np.int64)
    placed = np.empty((samples, items), dtype=np.int64)
    rows = np.arange(samples)
    for step in range(items):
        size = sizes[:, step, None]
        fits = room >= size
        target = np.where(fits, room, capacity + 1).argmin(axis=1) if best else fits.argmax(axis=1)
        room[rows, target] -= size[:, 0]
        placed[:, step] = target
    bin_of = np.empty_like(placed)
    np.put_along_axis(bin_of, order, placed, axis=1)
    fill = capacity - room
    return Packing(bin_of, (fill > 0).sum(axis=1), fill, capacity)


class _Bins:
    """State of the completion decoder: who is packed, per-sample counts of unpacked items of
    each distinct size (for exact-partner look-ups), bin loads."""

    def __init__(self, instance: Instance, samples: int):
        self.sizes = instance.sizes
        self.capacity = instance.capacity
        self.distinct, self.kind = np.unique(instance.sizes, return_inverse=True)  # kind[i]: index of size i
        self.count = np.tile(np.bincount(self.kind), (samples, 1))  # [samples, distinct]
        self.unpacked = np.ones((samples, instance.items), dtype=bool)
        self.bin_of = np.full((samples, instance.items), -1, dtype=np.int64)
        self.fill = np.zeros((samples, max_bins(instance)), dtype=np.int64)
        self.rows = np.arange(samples)

    def take(self, rows: np.ndarray, items: np.ndarray, bin: int) -> None:
        """Put ``items[r]`` into ``bin`` for every sample r where ``rows[r]``."""
        r, i = self.rows[rows], items[rows]
        self.unpacked[r, i] = False
        self.bin_of[r, i] = bin
        self.count[r, self.kind[i]] -= 1
        self.fill[r, bin] += self.sizes[i]

    def unpacked_of_size(self, wanted: np.ndarray) -> np.ndarray:
        """How many unpacked items have size ``wanted[r, i]`` in sample r (0 for sizes that no
        item has), same shape as ``wanted``."""
        slot = np.minimum(np.searchsorted(self.distinct, wanted), self.distinct.size - 1)
        found = self.distinct[slot] == wanted
        rows = np.broadcast_to(self.rows.reshape(-1, *([1] * (wanted.ndim - 1))), wanted.shape)
        return np.where(found, self.count[rows, slot], 0)


def _best(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the index of the highest value where ``mask`` (arbitrary where none)."""
    return np.where(mask, values, -np.inf).argmax(axis=1)


def _completion(instance: Instance, values: np.ndarray) -> Packing:
    state = _Bins(instance, values.shape[0])
    sizes = instance.sizes[None]
    bin = 0
    while True:
        open_ = state.unpacked.any(axis=1)
        if not open_.any():
            break
        state.take(open_, _best(state.unpacked, values), bin)
        room = instance.capacity - state.fill[:, bin]
        pending = open_ & (room > 0)
        # one item of exactly the free room
        exact = state.unpacked & (sizes == room[:, None]) & pending[:, None]
        found = exact.any(axis=1)
        state.take(found, _best(exact, values), bin)
        pending &= ~found
        # two items summing to it: the best item with a partner, then its best partner
        need = room[:, None] - sizes
        partners = state.unpacked_of_size(need) - (need == sizes)  # do not pair an item with itself
        first = state.unpacked & (need > 0) & (partners > 0) & pending[:, None]
        found = first.any(axis=1)
        state.take(found, _best(first, values), bin)
        room = instance.capacity - state.fill[:, bin]
        second = state.unpacked & (sizes == room[:, None]) & found[:, None]
        state.take(found, _best(second, values), bin)
        pending &= ~found
        # otherwise: the largest item that fits, ties by priority, until none fits
        while pending.any():
            room = instance.capacity - state.fill[:, bin]
            fits = state.unpacked & (sizes <= room[:, None]) & pending[:, None]
            pending = fits.any(axis=1)
            largest = np.where(fits, sizes, -1).max(axis=1, keepdims=True)
            state.take(pending, _best(fits & (sizes == largest), values), bin)
        bin += 1
    fill = state.fill
    return Packing(state.bin_of, (fill > 0).sum(axis=1), fill, instance.capacity)


def fill_tiebreak(fill: np.ndarray, bins: np.ndarray, capacity: int) -> np.ndarray:
    """The tie-breaker in [0, 0.99] (see the module docstring), ``[samples]``."""
    x = fill / capacity
    k = bins.astype(np.float64)
    total = x.sum(axis=1)
    squares = (x**2).sum(axis=1)
    upper = np.minimum(total, k - 1 + (total - k + 1) ** 2)
    lower = total**2 / k
    span = upper - lower
    ratio = np.where(span > 1e-12, (upper - squares) / np.where(span > 1e-12, span, 1.0), 0.0)
    return 0.99 * np.clip(ratio, 0.0, 1.0)


def packing_loss(bins: np.ndarray, fill: np.ndarray, capacity: int) -> np.ndarray:
    """Bins used plus the fill tie-breaker, ``[samples]``."""
    return bins + fill_tiebreak(fill, bins, capacity)
