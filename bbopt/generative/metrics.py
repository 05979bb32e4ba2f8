"""Sample-quality metrics on classifier features: Frechet distance and class coverage.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to the features of
real and generated images, ``|m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``. On MNIST the
features are Inception's; here they are whatever network the caller gives, so the values
compare runs with the same feature network only.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["class_coverage", "frechet_distance"]


def frechet_distance(features_a, features_b) -> float:
    """The Frechet distance between Gaussians fitted to ``features_a[N, k]`` and ``features_b[M, k]``."""
    a, b = (_as_features(x, name) for x, name in ((features_a, "features_a"), (features_b, "features_b")))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Invalid features: widths {a.shape[1]} and {b.shape[1]} (expected equal)")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    covariance_a, covariance_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr (C_a C_b)^(1/2) = tr (S C_b S)^(1/2) with S = C_a^(1/2): symmetric, so eigh is exact and
    # stable where sqrtm of the non-symmetric product is not (singular or tiny covariances)
    values, vectors = np.linalg.eigh(covariance_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ covariance_b @ root_a), 0.0, None)).sum()
    distance = ((mean_a - mean_b) ** 2).sum() + np.trace(covariance_a) + np.trace(covariance_b) - 2 * trace_root
    return float(max(distance, 0.0))


def class_coverage(labels, classes: int, *, minimum_share: float = 0.25) -> int:
    """How many of ``classes`` the predicted ``labels[N]`` cover: a class counts when at least
    ``minimum_share`` of its fair share ``N / classes`` of the samples is predicted as it."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point() or len(labels) == 0:
        raise ValueError(f"Invalid labels: {labels.dtype} of shape {list(labels.shape)} (expected integer [N], N > 0)")
    if bool((labels < 0).any()) or bool((labels >= classes).any()):
        raise ValueError(f"Invalid labels: values in [{int(labels.min())}, {int(labels.max())}] for {classes} classes")
    if not 0.0 < minimum_share <= 1.0:
        raise ValueError(f"Invalid minimum_share: {minimum_share!r} (expected a fraction in (0, 1])")
    counts = torch.bincount(labels, minlength=classes)
    return int((counts >= minimum_share * len(labels) / classes).sum())


def _as_features(values, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"Invalid {name}: shape {list(array.shape)} (expected [N, k] with N >= 2)")
    if not np.isfinite(array).all():
        raise ValueError(f"Invalid {name}: non-finite values")
    return array
