"""Participants' economics (costs, value of a better model, reservation utility), utility
bookkeeping (the satisfaction index), permissionless churn and the per-behaviour metrics.

All draws come from the run's seed (streams "economics", "churn/<round>"). DeRelayL's economy
and the FL baselines share everything here; behaviours themselves are ``protocol.behaviours``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from derelayl.protocol.behaviours import BEHAVIOURS, HONEST
from derelayl.sim.errors import ConfigError
from derelayl.sim.stats import gini, jain


@dataclass(frozen=True)
class EconomicsParams:
    """Log-normal medians and spreads of each participant's costs and values, in coins.

    Defaults (reasoning in the README, "Participants' economics"): training 100 samples costs
    about 0.01 coin, a model transfer 0.005 (a few MB on a metered link), a full point of
    accuracy gained is worth 5 coins to its holder, and a participant expects a per-round
    utility around 0 (normal, std 0.01) to stay.
    """

    cost_per_sample: float = 1e-4
    cost_per_sample_sigma: float = 0.5
    cost_per_transfer: float = 0.005
    cost_per_transfer_sigma: float = 0.5
    model_value: float = 5.0
    model_value_sigma: float = 0.5
    reservation_mean: float = 0.0
    reservation_std: float = 0.01

    def __post_init__(self):
        for key in ("cost_per_sample", "cost_per_transfer", "model_value"):
            if getattr(self, key) < 0:
                raise ConfigError(
                    f"participants.economics.{key} must be >= 0 (got {getattr(self, key)})"
                )
        for key in (
            "cost_per_sample_sigma",
            "cost_per_transfer_sigma",
            "model_value_sigma",
            "reservation_std",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(
                    f"participants.economics.{key} must be >= 0 (got {getattr(self, key)})"
                )


@dataclass(frozen=True)
class Economics:
    cost_per_sample: np.ndarray
    cost_per_transfer: np.ndarray
    model_value: np.ndarray
    reservation: np.ndarray

    @classmethod
    def draw(cls, n: int, p: EconomicsParams, rng: np.random.Generator) -> Economics:
        def lognormal(median, sigma):
            return median * np.exp(sigma * rng.standard_normal(n))

        return cls(
            lognormal(p.cost_per_sample, p.cost_per_sample_sigma),
            lognormal(p.cost_per_transfer, p.cost_per_transfer_sigma),
            lognormal(p.model_value, p.model_value_sigma),
            p.reservation_mean + p.reservation_std * rng.standard_normal(n),
        )


@dataclass(frozen=True)
class ChurnParams:
    """Permissionless churn (off by default: the authors' fixed population).

    A participant active for at least ``window`` rounds leaves when its mean utility over the
    last ``window`` rounds is below its reservation utility (a model owner serves its round
    first). Newcomers arrive from a pool of ``pool_factor`` x N identities at a Poisson rate of
    ``join_rate`` x active x max(0, tanh(expected / join_scale)), where ``expected`` is the mean
    recent utility of the active participants: joining grows with what joining is worth.
    """

    enabled: bool = False
    window: int = 10
    join_rate: float = 0.05
    join_scale: float = 0.01
    pool_factor: float = 2.0

    def __post_init__(self):
        if self.window < 1:
            raise ConfigError(f"churn.window must be >= 1 (got {self.window})")
        if self.join_rate < 0:
            raise ConfigError(f"churn.join_rate must be >= 0 (got {self.join_rate})")
        if not self.join_scale > 0:
            raise ConfigError(f"churn.join_scale must be > 0 (got {self.join_scale})")
        if self.pool_factor < 1:
            raise ConfigError(f"churn.pool_factor must be >= 1 (got {self.pool_factor})")

    def pool_size(self, num_participants: int) -> int:
        return int(round(num_participants * self.pool_factor)) if self.enabled else num_participants


def book_utility(
    utility: np.ndarray,
    recent_utility: np.ndarray,
    active_rounds: np.ndarray,
    active: np.ndarray,
    round_: int,
    this_round: np.ndarray,
) -> np.ndarray:
    """Add a round's utilities (zero for the inactive) to the satisfaction index, in place."""
    this_round = np.where(active, this_round, 0.0)
    utility += this_round
    recent_utility[round_ % len(recent_utility)] = this_round
    active_rounds[active] += 1
    return this_round


def churn_step(
    active: np.ndarray,
    ever_active: np.ndarray,
    active_rounds: np.ndarray,
    recent_utility: np.ndarray,
    reservation: np.ndarray,
    churn: ChurnParams,
    rng: np.random.Generator,
    staying: np.ndarray | None = None,
) -> tuple[int, int]:
    """Leavers (recent utility below reservation) and joiners (from the never-active pool).

    Updates the arrays in place; ``staying`` marks who may not leave this round (DeRelayL's
    model owners serve their round first). Returns (joined, left).
    """
    window = len(recent_utility)
    recent = recent_utility.mean(axis=0)
    leaving = active & (active_rounds >= window) & (recent < reservation)
    if staying is not None:
        leaving &= ~staying
    active[leaving] = False
    pool = np.flatnonzero(~ever_active)
    n_active = int(active.sum())
    expected = float(recent[active].mean()) if n_active else 0.0
    rate = churn.join_rate * max(n_active, 1) * max(0.0, math.tanh(expected / churn.join_scale))
    joining = min(int(rng.poisson(rate)), len(pool))
    newcomers = pool[:joining]
    active[newcomers] = True
    ever_active[newcomers] = True
    recent_utility[:, newcomers] = 0.0
    return joining, int(leaving.sum())


def population_metrics(
    coins: np.ndarray,
    utility: np.ndarray,
    active: np.ndarray,
    ever_active: np.ndarray,
    initial_active: int,
) -> dict[str, float]:
    """A round's coin and population figures (coins' Gini and Jain over the active)."""
    active_coins = coins[active]
    return {
        "coins_gini": gini(active_coins),
        "coins_jain": jain(active_coins),
        "coins_total": float(coins.sum()),
        "coins_mean": float(active_coins.mean()) if active.any() else 0.0,
        "coins_max": float(coins.max()),
        "utility_positive_share": float((utility[ever_active] > 0).mean()),
        "active_participants": float(active.sum()),
        "retention": float(active[:initial_active].mean()),
    }


def behaviour_metrics(
    behaviour: np.ndarray,
    ever_active: np.ndarray,
    coins: np.ndarray,
    matches: np.ndarray,
    wins: np.ndarray | None = None,
    hops: np.ndarray | None = None,
    hop_gain: np.ndarray | None = None,
) -> dict[str, float]:
    """Per behaviour present: population share, coin share, matches (and wins; and, given each
    participant's tested ``hops`` and the sum of their score changes over the parents,
    ``hop_gain``: the mean, over all hops as ``hop_gain`` and per behaviour)."""
    total = float(coins.sum())
    ever = ever_active
    out = {"adversary_coin_share": 0.0, "adversary_population_share": 0.0}
    if hops is not None:
        out["hop_gain"] = _mean_gain(hops, hop_gain, ever)
    adversary = (behaviour != HONEST) & ever
    if adversary.any():
        out["adversary_coin_share"] = float(coins[adversary].sum() / total) if total else 0.0
        out["adversary_population_share"] = float(adversary.sum() / ever.sum())
    for code, name in enumerate(BEHAVIOURS):
        mask = (behaviour == code) & ever
        if not mask.any() or (code == HONEST and not adversary.any()):
            continue
        out[f"{name}_population_share"] = float(mask.sum() / ever.sum())
        out[f"{name}_coin_share"] = float(coins[mask].sum() / total) if total else 0.0
        out[f"{name}_matches"] = int(matches[mask].sum())
        if wins is not None:
            out[f"{name}_wins"] = int(wins[mask].sum())
        if hops is not None:
            out[f"{name}_hop_gain"] = _mean_gain(hops, hop_gain, mask)
    return out


def _mean_gain(hops: np.ndarray, gain: np.ndarray | None, mask: np.ndarray) -> float:
    count = int(hops[mask].sum())
    if not count:
        return 0.0
    assert gain is not None, "behaviour_metrics: hop_gain comes with hops"
    return float(gain[mask].sum() / count)
