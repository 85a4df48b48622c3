"""Inequality and version-share statistics (numpy)."""

from __future__ import annotations

import numpy as np


def gini(x: np.ndarray) -> float:
    """G = sum_i sum_j |x_i - x_j| / (2 n^2 mean(x)); 0 for an all-zero vector."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    # sorted form of the double sum: sum_i (2i - n - 1) x_i / (n * total)
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def jain(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    denom = len(x) * (x**2).sum()
    return float(x.sum() ** 2 / denom) if denom > 0 else 1.0


def version_shares(held_version: np.ndarray, latest: int, depth: int = 10) -> np.ndarray:
    """Shares of participants whose newest model is latest, latest-1 .. latest-depth, older, none.

    ``held_version`` is -1 for participants holding no model. Returns ``depth + 3`` shares.
    """
    held = np.asarray(held_version)
    n = len(held)
    counts = np.zeros(depth + 3, dtype=np.int64)
    has = held >= 0
    lag = latest - held[has]
    np.add.at(counts, np.minimum(lag, depth + 1), 1)
    counts[depth + 2] = n - has.sum()
    return counts / max(n, 1)
