"""The economy's state: everything the protocol needs to continue after a settled round.

State lives in numpy arrays indexed by participant (coins, versions, scores, behaviour,
economics, utility), so a round is a fixed number of vectorised steps whatever its number; the
state is what a checkpoint holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derelayl.protocol.params import DeRelayLParams
from derelayl.protocol.royalties import RoyaltyBook


@dataclass
class EconomyState:
    """Everything the protocol needs to continue after a settled round (checkpointed)."""

    round: int  # rounds settled so far; the next round's index
    coins: np.ndarray
    gained: np.ndarray  # coins received other than refunds (royalties, rewards, fees)
    lost: np.ndarray  # deposits forfeited
    own_version: np.ndarray  # version of the newest model a participant trained (0: none)
    held_version: np.ndarray  # newest model held, trained or received encrypted (-1: none)
    own_score: np.ndarray  # score of the newest trained model (owners are ranked by it)
    best_score: np.ndarray
    matches: np.ndarray
    wins: np.ndarray
    hops: np.ndarray  # models each participant trained and returned (tested)
    hop_gain: np.ndarray  # sum over those of score - parent's score on the round's test cases
    owners: np.ndarray  # this round's model owners (participant ids)
    royalties: RoyaltyBook  # the owners' models' lineages (their MOs), down the shared trunk
    active: np.ndarray  # bool: taking part (churn)
    ever_active: np.ndarray  # bool
    behaviour: np.ndarray  # codes of core.population.BEHAVIOURS
    declared_samples: np.ndarray
    cost_per_sample: np.ndarray
    cost_per_transfer: np.ndarray
    model_value: np.ndarray
    reservation: np.ndarray
    utility: np.ndarray  # cumulative utility: the satisfaction index
    recent_utility: np.ndarray  # (window x N) ring buffer of per-round utilities
    active_rounds: np.ndarray  # rounds each participant has been active for
    minted: float = 0.0
    burned: float = 0.0
    samples_seen: int = 0
    initial_active: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def initial(
        cls,
        params: DeRelayLParams,
        *,
        active: int | None = None,
        behaviour: np.ndarray | None = None,
        economics=None,
        declared_samples: np.ndarray | None = None,
        window: int = 10,
        gamma: float | None = None,
    ) -> EconomyState:
        """A fresh economy; participants ``[0, active)`` take part, the rest wait in the pool."""
        n, g = params.num_participants, params.genesis_participant
        active = n if active is None else int(active)
        held = np.full(n, -1, dtype=np.int64)
        held[g] = 0
        score = np.full(n, -np.inf)
        score[g] = 0.0
        mask = np.zeros(n, dtype=bool)
        mask[:active] = True
        zeros = np.zeros(n)
        return cls(
            round=0,
            coins=zeros.copy(),
            gained=zeros.copy(),
            lost=zeros.copy(),
            own_version=np.zeros(n, dtype=np.int64),
            held_version=held,
            own_score=score,
            best_score=score.copy(),
            matches=np.zeros(n, dtype=np.int64),
            wins=np.zeros(n, dtype=np.int64),
            hops=np.zeros(n, dtype=np.int64),
            hop_gain=zeros.copy(),
            owners=np.array([g], dtype=np.int64),
            royalties=RoyaltyBook.genesis_book(n, g, gamma),
            active=mask,
            ever_active=mask.copy(),
            behaviour=(np.zeros(n, dtype=np.int8) if behaviour is None else behaviour),
            declared_samples=(
                np.ones(n)
                if declared_samples is None
                else np.asarray(declared_samples, dtype=np.float64)
            ),
            cost_per_sample=zeros.copy() if economics is None else economics.cost_per_sample,
            cost_per_transfer=(zeros.copy() if economics is None else economics.cost_per_transfer),
            model_value=zeros.copy() if economics is None else economics.model_value,
            reservation=zeros.copy() if economics is None else economics.reservation,
            utility=zeros.copy(),
            recent_utility=np.zeros((window, n)),
            active_rounds=np.zeros(n, dtype=np.int64),
            initial_active=active,
        )
