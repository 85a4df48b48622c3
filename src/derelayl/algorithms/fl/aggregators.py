"""How a server combines its clients' models into one: the weighted mean, and robust rules.

Each aggregator takes the clients' returned tensors (one list per client, in the model's
``state_dict`` order) and their weights, and returns the combined floating-point tensors.

- ``mean`` (FedAvg, McMahan et al. 2017): sum_i w_i y_i, accumulated client by client in the
  round's order (so the same run gives the same bits).
- ``median`` (Yin et al., ICML 2018): the coordinate-wise median of the clients' models.
- ``trimmed_mean`` (Yin et al., ICML 2018): per coordinate, the mean of what is left after
  dropping the ``floor(beta n)`` largest and smallest values.
- ``krum`` (Blanchard et al., NeurIPS 2017): the one client model whose summed squared distance
  to its ``n - f - 2`` nearest neighbours is smallest (``f``: the Byzantine clients tolerated).

The robust rules ignore the sample weights (each client counts once): a weight is what a client
declares, which is exactly what an adversary would inflate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from derelayl.sim.errors import ConfigError

AGGREGATORS = ("mean", "median", "trimmed_mean", "krum")
Tensors = Sequence[torch.Tensor]


def weighted_mean(
    states: Sequence[Tensors], weights: Sequence[float], template: Tensors
) -> list[torch.Tensor]:
    """sum_i w_i y_i over the floating-point tensors (others: ``template``'s, unchanged)."""
    out = [torch.zeros_like(t) if t.is_floating_point() else t.clone() for t in template]
    with torch.no_grad():
        for state, w in zip(states, weights):
            for acc, t in zip(out, state):
                if acc.is_floating_point():
                    acc.add_(t, alpha=float(w))
    return out


def _stacked(states: Sequence[Tensors], j: int) -> torch.Tensor:
    return torch.stack([s[j] for s in states])


def coordinate_median(states: Sequence[Tensors], template: Tensors) -> list[torch.Tensor]:
    """The coordinate-wise median (the mean of the two middle values for an even count)."""
    out = []
    for j, t in enumerate(template):
        if not t.is_floating_point():
            out.append(t.clone())
            continue
        values = _stacked(states, j).sort(dim=0).values
        n = values.shape[0]
        mid = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
        out.append(mid)
    return out


def trimmed_mean(states: Sequence[Tensors], template: Tensors, beta: float) -> list[torch.Tensor]:
    """Per coordinate, the mean after dropping the floor(beta n) largest and smallest values
    (beta < 0.5 leaves at least one)."""
    n = len(states)
    k = int(math.floor(beta * n))
    out = []
    for j, t in enumerate(template):
        if not t.is_floating_point():
            out.append(t.clone())
            continue
        values = _stacked(states, j).sort(dim=0).values
        out.append(values[k : n - k].mean(dim=0))
    return out


def krum_index(states: Sequence[Tensors], f: int) -> int:
    """Krum's choice: argmin_i sum of squared distances to its n - f - 2 nearest others."""
    n = len(states)
    flat = torch.stack(
        [torch.cat([t.reshape(-1).double() for t in s if t.is_floating_point()]) for s in states]
    )
    dist = torch.cdist(flat, flat).pow(2)
    neighbours = max(n - f - 2, 1)
    scores = []
    for i in range(n):
        others = torch.cat([dist[i, :i], dist[i, i + 1 :]])
        scores.append(float(others.sort().values[:neighbours].sum()) if len(others) else 0.0)
    return int(min(range(n), key=lambda i: (scores[i], i)))


def aggregate(
    rule: str,
    states: Sequence[Tensors],
    weights: Sequence[float],
    template: Tensors,
    trim_fraction: float = 0.1,
    krum_f: int = 1,
) -> list[torch.Tensor]:
    """The combined model of ``states`` under ``rule`` (one of :data:`AGGREGATORS`)."""
    if rule == "mean":
        return weighted_mean(states, weights, template)
    if rule == "median":
        return coordinate_median(states, template)
    if rule == "trimmed_mean":
        return trimmed_mean(states, template, trim_fraction)
    if rule == "krum":
        chosen = states[krum_index(states, krum_f)]
        return [t.clone() for t in chosen]
    raise ConfigError(f"unknown algorithm.aggregator {rule!r}; allowed: {', '.join(AGGREGATORS)}")
