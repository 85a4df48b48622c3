"""Figures of a single run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt


def plot_accuracy(
    history: Sequence[Mapping], path: Path, step: str = "hop", title: str = ""
) -> Path:
    """Validation (every step) and test (where evaluated) accuracy against hops or rounds."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for key, label, style in (("val_acc", "validation", "-"), ("test_acc", "test", "o-")):
        pts = [(r[step], r[key]) for r in history if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, ms=3, lw=1.2, label=label)
    if step == "hop" and history and "round" in history[0]:
        starts = [
            r["hop"] for prev, r in itertools.pairwise(history) if r["round"] != prev["round"]
        ]
        for hop in starts:
            ax.axvline(hop - 0.5, color="grey", lw=0.5, alpha=0.5)
    ax.set_xlabel(step)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
