"""Who the participants are: their economics (costs, value of a better model, reservation
utility), their behaviour (honest or adversarial) and how the population churns.

All draws come from the run's seed (streams "economics", "behaviour", "churn/<round>").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from derelayl.core.errors import ConfigError

BEHAVIOURS = ("honest", "dropout", "free_rider", "label_flip", "noise", "sybil")
HONEST, DROPOUT, FREE_RIDER, LABEL_FLIP, NOISE, SYBIL = range(len(BEHAVIOURS))


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
                raise ConfigError(f"participants.economics.{key} must be >= 0 "
                                  f"(got {getattr(self, key)})")
        for key in ("cost_per_sample_sigma", "cost_per_transfer_sigma", "model_value_sigma",
                    "reservation_std"):
            if getattr(self, key) < 0:
                raise ConfigError(f"participants.economics.{key} must be >= 0 "
                                  f"(got {getattr(self, key)})")


@dataclass(frozen=True)
class Economics:
    cost_per_sample: np.ndarray
    cost_per_transfer: np.ndarray
    model_value: np.ndarray
    reservation: np.ndarray

    @classmethod
    def draw(cls, n: int, p: EconomicsParams, rng: np.random.Generator) -> "Economics":
        def lognormal(median, sigma):
            return median * np.exp(sigma * rng.standard_normal(n))

        return cls(lognormal(p.cost_per_sample, p.cost_per_sample_sigma),
                   lognormal(p.cost_per_transfer, p.cost_per_transfer_sigma),
                   lognormal(p.model_value, p.model_value_sigma),
                   p.reservation_mean + p.reservation_std * rng.standard_normal(n))


def assign_behaviours(n: int, fractions: Mapping[str, float], rng: np.random.Generator,
                      exclude: tuple[int, ...] = ()) -> np.ndarray:
    """Behaviour codes: round(fraction x n) participants of each kind, the rest honest.

    Participants in ``exclude`` (the genesis participant) stay honest.
    """
    total = 0.0
    for name, frac in fractions.items():
        if name not in BEHAVIOURS or name == "honest":
            raise ConfigError(f"unknown participants.behaviour {name!r}; allowed: "
                              f"{', '.join(BEHAVIOURS[1:])}")
        if not 0 <= frac <= 1:
            raise ConfigError(f"participants.behaviour.{name} must be in [0, 1] (got {frac})")
        total += frac
    if total > 1 + 1e-9:
        raise ConfigError(f"participants.behaviour fractions sum to {total:g}; they must sum "
                          f"to at most 1 (the rest is honest)")
    codes = np.full(n, HONEST, dtype=np.int8)
    candidates = rng.permutation(np.setdiff1d(np.arange(n), np.asarray(exclude, dtype=np.int64)))
    start = 0
    for name in BEHAVIOURS[1:]:
        count = int(round(fractions.get(name, 0.0) * n))
        codes[candidates[start:start + count]] = BEHAVIOURS.index(name)
        start += count
    return codes


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
