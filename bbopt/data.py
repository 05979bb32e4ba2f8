"""Data helpers for the supervised experiments: exact symmetric label noise."""

from __future__ import annotations

import torch

__all__ = ["sine_with_outliers", "symmetric_label_noise"]


def symmetric_label_noise(
    labels: torch.Tensor, rate: float, num_classes: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip exactly ``round(rate * N)`` labels, chosen uniformly, each to one of the *other*
    classes uniformly. Returns ``(noisy_labels, flipped_mask)``; ``labels`` is not modified."""
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"Invalid labels: {labels.dtype} of shape {list(labels.shape)} (expected integer [N])")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Invalid rate: {rate!r} (expected a fraction in [0, 1])")
    if num_classes < 2 or bool((labels < 0).any()) or bool((labels >= num_classes).any()):
        raise ValueError(f"Invalid num_classes: {num_classes} for labels in [{labels.min()}, {labels.max()}]")
    count = round(rate * labels.numel())
    chosen = torch.randperm(labels.numel(), generator=generator)[:count]
    # An offset in 1..C-1 added modulo C never lands on the original class, and is uniform
    # over the other classes.
    offsets = torch.randint(1, num_classes, (count,), generator=generator)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + offsets.to(labels.dtype)) % num_classes
    flipped = torch.zeros(labels.numel(), dtype=torch.bool)
    flipped[chosen] = True
    return noisy, flipped


def sine_with_outliers(
    count: int, *, outlier_fraction: float = 0.2, outlier_range: float = 10.0, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The robust-regression task: ``x ~ U[-6, 6]``, ``y = sin(x)``, with exactly
    ``round(outlier_fraction * count)`` targets replaced by gross outliers ``U[-r, r]``.

    Returns ``(inputs[count, 1], targets[count, 1], outlier_mask[count])``; the inputs are
    ``x / 6`` (in [-1, 1]), the targets use the unscaled ``x``.
    """
    if not 0.0 <= outlier_fraction <= 1.0:
        raise ValueError(f"Invalid outlier_fraction: {outlier_fraction!r} (expected a fraction in [0, 1])")
    x = torch.rand(count, 1, generator=generator) * 12 - 6
    y = torch.sin(x)
    outliers = round(outlier_fraction * count)
    chosen = torch.randperm(count, generator=generator)[:outliers]
    y[chosen] = (torch.rand(outliers, 1, generator=generator) * 2 - 1) * outlier_range
    mask = torch.zeros(count, dtype=torch.bool)
    mask[chosen] = True
    return x / 6, y, mask
