"""Figures of a single run."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from derelayl.core.events import HopRecord  # noqa: E402


def plot_accuracy_vs_hops(history: Sequence[HopRecord], path: Path, title: str = "") -> Path:
    hops = [r.hop for r in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(hops, [r.val_acc for r in history], label="validation", lw=1.5)
    tested = [r for r in history if r.test_acc is not None]
    ax.plot([r.hop for r in tested], [r.test_acc for r in tested], "o-", ms=3, label="test", lw=1)
    rounds = sorted({r.round for r in history})
    for rnd in rounds[1:]:
        first = next(r.hop for r in history if r.round == rnd)
        ax.axvline(first - 0.5, color="grey", lw=0.5, alpha=0.5)
    ax.set_xlabel("hop")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "accuracy against hops (grey lines: round boundaries)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
