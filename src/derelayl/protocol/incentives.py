"""Incentive schemes: the payout rule of DeRelayL's settlement step.

Deposits work the same under every scheme (winners and their owners get theirs back, everybody
else's are burned); a scheme decides what is *minted* on top. A model returned unchanged
(identical to its parent: a free-rider) is never eligible, under any scheme.

- ``derelayl``: the authors' rule (``royalty_rule="authors"``, the default): for every winner,
  +``royalty`` to the winning model's owner (the MO that commissioned it), then down its parent
  links to the genesis model +``royalty`` to *each model's* MO. The genesis participant is the
  MO of model 0 and of every model trained from it (the version-1 models), so it is paid twice
  per win, and a win at depth r (version r + 1) mints r + 2 coins. ``royalty_rule="once"``
  (our earlier rule) pays the owner of each model the winner was built on once, genesis model
  included: r + 1 coins, so a participant's royalty is exactly its number of models on the
  lineage.
- ``derelayl_bounded``: each win mints a fixed ``mint_per_win`` M split along the lineage with
  geometric decay: the owner of the ancestor at distance d (d = 0: the winner's owner) gets
  M * gamma^d / sum_{j<L} gamma^j. Supply grows linearly in rounds; recent contributors weigh
  more (gamma = 1: an equal split).
- ``uniform``: every eligible trained model's trainer gets ``reward``.
- ``data_size``: a pool of ``reward`` per eligible model, split among their trainers in
  proportion to their declared sample counts.
- ``marginal_gain``: ``rate`` x (score - parent's score on the same test cases), nothing for a
  non-positive gain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from derelayl.protocol.royalties import RoyaltyBook
from derelayl.sim.errors import ConfigError

# the schemes' names (``IncentiveScheme.name``; a config builds its scheme from
# ``incentive._target_``, conf/incentive/)
INCENTIVES = ("derelayl", "derelayl_bounded", "uniform", "data_size", "marginal_gain")


@dataclass(frozen=True)
class Settlement:
    """What a scheme may look at when a round is settled (arrays over trained models)."""

    num_participants: int
    trainers: np.ndarray
    owner_rows: np.ndarray  # each model's parent, as an owner row (the royalty book's last level)
    owners: np.ndarray  # each model's MO (the owner that commissioned it)
    eligible: np.ndarray  # bool: changed models (not returned unchanged)
    winners: np.ndarray  # bool
    scores: np.ndarray
    parent_scores: np.ndarray
    declared_samples: np.ndarray  # per participant
    royalties: RoyaltyBook | None = None  # the live lineages (lineage schemes)
    genesis: int = 0  # the genesis participant: the MO of model 0
    # the winners' indices, best first: the order the hand-over records them in (a lineage
    # scheme walks them in it, so the royalty book reuses the walk); default: index order
    ranked_winners: np.ndarray | None = None

    def winner_index(self) -> np.ndarray:
        return np.flatnonzero(self.winners) if self.ranked_winners is None else self.ranked_winners


class IncentiveScheme:
    name = "base"
    needs_decayed_lineage = False
    gamma = 1.0

    def mint(self, s: Settlement) -> np.ndarray:
        """Coins minted to each participant (length N) for this round's models."""
        raise NotImplementedError


def _non_negative(key: str, value: float) -> float:
    if value < 0:
        raise ConfigError(f"incentive.{key} must be >= 0 (got {value})")
    return float(value)


def _per_trainer(values: np.ndarray, trainers: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(trainers, weights=values, minlength=n) if len(trainers) else np.zeros(n)


ROYALTY_RULES = ("authors", "once")


class DeRelayLRoyalty(IncentiveScheme):
    """Lineage royalties, paid along the live lineages' shared trunk (``RoyaltyBook``).

    The authors' walk (``authors``) pays each model's *MO* from the winner down to model 0: a
    win at depth r (version r + 1) pays r + 2 coins, two of them to the genesis participant, the
    MO of model 0 and of the version-1 model on the lineage. ``once`` (our earlier rule) pays the
    owner of each model the winner was built on once: one coin less to the genesis participant
    per win (r + 1 coins), so a participant's royalty is exactly its number of models on the
    lineage.
    """

    name = "derelayl"

    def __init__(self, royalty: float = 1.0, royalty_rule: str = "authors"):
        self.royalty = _non_negative("royalty", royalty)
        if royalty_rule not in ROYALTY_RULES:
            raise ConfigError(
                f"incentive.royalty_rule must be one of {', '.join(ROYALTY_RULES)} "
                f"(got {royalty_rule!r})"
            )
        self.royalty_rule = royalty_rule

    def mint(self, s):
        win = s.winner_index()
        paid, _ = s.royalties.payout(s.owner_rows[win], s.owners[win])
        if self.royalty_rule == "once":
            paid[s.genesis] -= float(s.winners.sum())
        return paid * self.royalty


class BoundedRoyalty(IncentiveScheme):
    name = "derelayl_bounded"
    needs_decayed_lineage = True

    def __init__(self, mint_per_win: float = 2.0, gamma: float = 0.5):
        if not 0 < gamma <= 1:
            raise ConfigError(f"incentive.gamma must be in (0, 1] (got {gamma})")
        self.mint_per_win, self.gamma = _non_negative("mint_per_win", mint_per_win), float(gamma)

    def mint(self, s):
        win = s.winner_index()
        _, decayed = s.royalties.payout(s.owner_rows[win], s.owners[win])
        return decayed * (self.mint_per_win / s.royalties.decay_norm())


class UniformReward(IncentiveScheme):
    name = "uniform"

    def __init__(self, reward: float = 1.0):
        self.reward = _non_negative("reward", reward)

    def mint(self, s):
        ok = s.eligible
        return _per_trainer(np.full(ok.sum(), self.reward), s.trainers[ok], s.num_participants)


class DataSizeReward(UniformReward):
    name = "data_size"

    def mint(self, s):
        ok = s.eligible
        sizes = s.declared_samples[s.trainers[ok]].astype(np.float64)
        if sizes.sum() <= 0:
            return np.zeros(s.num_participants)
        pool = self.reward * ok.sum()
        return _per_trainer(pool * sizes / sizes.sum(), s.trainers[ok], s.num_participants)


class MarginalGainReward(IncentiveScheme):
    name = "marginal_gain"

    def __init__(self, rate: float = 10.0):
        self.rate = _non_negative("rate", rate)

    def mint(self, s):
        gain = np.where(s.eligible, np.maximum(s.scores - s.parent_scores, 0.0), 0.0)
        return _per_trainer(self.rate * gain, s.trainers, s.num_participants)


class FederatedPayouts:
    """The same schemes applied to FL rounds: a reward per participating client.

    Each round's aggregate plays the part of a winning model, made by that round's clients:
    ``uniform`` pays each of them ``reward``; ``data_size`` splits ``reward`` x |S| by declared
    samples; ``marginal_gain`` pays ``rate`` x the gain of the client's local model over the
    global model before the round (validation accuracy; nothing for a non-positive gain);
    ``derelayl`` pays ``royalty`` to the owner of every earlier aggregate on the global model's
    lineage, once per round each participated in (the current round's clients get theirs from
    later rounds, like a DeRelayL trainer whose model is built on); its ``royalty_rule`` changes
    nothing here: the initial global model is the server's, so there is no genesis participant
    to pay a second time; ``derelayl_bounded`` mints
    ``mint_per_win`` a round, split over that lineage with weight gamma^d for the round d rounds
    back (shared equally by its clients). FL has no deposits: nothing is burned. A round's
    clients here are those paid: a dropout returned nothing and a free-rider's unchanged model
    is never eligible, as in DeRelayL (``core.fl``).
    """

    def __init__(self, scheme: IncentiveScheme, declared_samples: np.ndarray | Sequence[float]):
        self.scheme = scheme
        self.samples = np.asarray(declared_samples, dtype=np.float64)
        n = len(self.samples)
        self.coins = np.zeros(n)
        self.lineage = np.zeros(n)  # rounds each participant contributed to the global model
        self.decayed = np.zeros(n)
        self.minted = 0.0

    def settle(self, selected, gains=()) -> np.ndarray:
        n, s = len(self.coins), self.scheme
        sel = np.asarray(selected, dtype=np.int64)
        credits = np.zeros(n)
        if s.name == "uniform":
            credits[sel] = cast(UniformReward, s).reward
        elif s.name == "data_size":
            sizes = self.samples[sel]
            if sizes.sum() > 0:
                credits[sel] = cast(DataSizeReward, s).reward * len(sel) * sizes / sizes.sum()
        elif s.name == "marginal_gain":
            credits[sel] = cast(MarginalGainReward, s).rate * np.maximum(
                np.asarray(gains, dtype=np.float64), 0.0
            )
        elif s.name == "derelayl":
            credits = cast(DeRelayLRoyalty, s).royalty * self.lineage
        elif s.name == "derelayl_bounded":
            total = self.decayed.sum()
            if total > 0:
                credits = cast(BoundedRoyalty, s).mint_per_win * self.decayed / total
            self.decayed *= s.gamma
            if len(sel):  # a round whose clients were all left unpaid adds nobody
                self.decayed[sel] += 1.0 / len(sel)
        self.lineage[sel] += 1
        self.coins += credits
        self.minted += float(credits.sum())
        return credits
