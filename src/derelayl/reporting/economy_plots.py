"""The authors' two kinds of economy figure: coins per participant, version shares by round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_coins(coins: np.ndarray, path: Path, title: str = "") -> Path:
    """One line per participant: its balance after every round."""
    rounds = np.arange(coins.shape[0])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    step = max(1, coins.shape[0] // 1000)  # at most ~1,000 points a line (the figure: 840 px)
    ax.plot(rounds[::step], coins[::step], lw=0.4 if coins.shape[1] > 50 else 1.0, alpha=0.6)
    ax.set_xlabel("round")
    ax.set_ylabel("coins")
    ax.set_title(title or f"coins per participant ({coins.shape[1]} lines)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_version_shares(
    history: Sequence[Mapping[str, float]],
    path: Path,
    depth: int = 10,
    max_bars: int = 100,
    title: str = "",
) -> Path:
    """Stacked bars: share holding the latest model, latest-1 .. latest-depth, older, none.

    Each layer is one filled step outline (``stairs``) over the sampled rounds: the same bars,
    drawn as ``depth + 3`` shapes instead of one rectangle per bar and layer."""
    step = max(1, len(history) // max_bars)
    rows = history[::step]
    rounds = [r["round"] for r in rows]
    layers = [("latest", [r["version_share_latest"] for r in rows])]
    layers += [
        (f"latest-{d}", [r[f"version_share_latest_minus_{d}"] for r in rows])
        for d in range(1, depth + 1)
    ]
    layers += [
        ("older", [r["version_share_older"] for r in rows]),
        ("none", [r["version_share_none"] for r in rows]),
    ]
    colors = list(plt.cm.viridis(np.linspace(0.0, 0.95, depth + 1))) + ["#bbbbbb", "#ffffff"]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    bottom = np.zeros(len(rows))
    edges = np.append(np.asarray(rounds, dtype=float), rounds[-1] + step) - step / 2
    for (label, values), color in zip(layers, colors):
        top = bottom + np.asarray(values, dtype=float)
        ax.stairs(
            top,
            edges,
            baseline=bottom,
            fill=True,
            facecolor=color,
            edgecolor="#888888" if label == "none" else color,
            linewidth=0.2,
            label=label,
        )
        bottom = top
    ax.set_xlabel("round")
    ax.set_ylabel("share of participants")
    ax.set_ylim(0, 1)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="newest model")
    ax.set_title(title or "version of each participant's newest model")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_reward_vs_shapley(
    coins: np.ndarray,
    shapley: np.ndarray,
    path: Path,
    behaviour: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Each participant's coins against its Shapley value (adversaries marked)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    if behaviour is None:
        ax.scatter(shapley, coins, s=14)
    else:
        from derelayl.protocol.behaviours import BEHAVIOURS

        for code in np.unique(behaviour):
            m = behaviour == code
            ax.scatter(shapley[m], coins[m], s=14, label=BEHAVIOURS[code])
        ax.legend(fontsize=8)
    ax.set_xlabel("Shapley value (test accuracy contributed to the best model)")
    ax.set_ylabel("coins")
    ax.grid(alpha=0.3)
    ax.set_title(title or "reward against contribution")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_series_by_group(
    series: Mapping[str, Sequence[Sequence[float]]],
    path: Path,
    ylabel: str,
    title: str = "",
    xlabel: str = "round",
) -> Path:
    """One line per group: the mean over its runs (shaded: min to max), against rounds 1..R."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, runs in series.items():
        length = min(len(r) for r in runs)
        arr = np.array([r[:length] for r in runs], dtype=np.float64)
        x = np.arange(1, length + 1)
        ax.plot(x, arr.mean(axis=0), lw=1.5, label=f"{label} ({len(runs)} runs)")
        ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
