"""The DeRelayL round (SPEC section 2), simulated with array operations.

State lives in numpy arrays indexed by participant; one round is a fixed number of vectorised
steps whatever the round number. Relay royalties use lineage owner histograms: the row of a
model owner holds, per participant, how many models on the lineage of that owner's newest model
the participant trained (genesis included). A win pays that row (+1 coin per ancestor owner) in
one vector add, and a new owner's row is its parent's row plus itself: no walk up the lineage.

How a model performs is delegated to a performance model (``random_walk`` or ``trained``,
see ``core.performance``); the protocol only sees scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from derelayl.sim.errors import ConfigError
from derelayl.protocol.incentives import DeRelayLRoyalty, IncentiveScheme, Settlement
from derelayl.protocol.ledger import Ledger, sha256_hex
from derelayl.sim.stats import version_shares
from derelayl.protocol.population import (DROPOUT, HONEST, SYBIL, ChurnParams, book_utility,
                                      churn_step, population_metrics)


DEPOSIT_RECORDS = ("pair", "deposit")
NO_WINNER_RULES = ("keep_owners", "reset")


@dataclass(frozen=True)
class DeRelayLParams:
    """Every protocol constant; defaults are the authors' simulation values."""

    num_participants: int = 256
    rounds: int = 100
    active_share: float = 0.5  # (model owners + trainers) / N
    trainers_per_owner: int = 4  # k
    owner_budget: float = 0.001
    winner_share: float = 0.5  # s: the best floor(s * #trained) models win
    dropout: float = 0.1
    num_test_cases: int = 100
    royalty: float = 1.0  # coins to the owner of every model on a winner's lineage
    fee_per_deposit: float = 0.001  # deposit block, per deposit record
    # what a deposit record is: "pair" (the authors': one record per matched owner-trainer pair,
    # holding both deposits) or "deposit" (ours before: one per deposit, two per pair)
    deposit_records: str = "pair"
    fee_per_commitment: float = 0.001  # commitment block, per model hash
    fee_per_test_case: float = 0.001  # testing block, per case ...
    fee_per_tested_hash: float = 0.001  # ... and per model hash
    fee_per_ranked_model: float = 0.001  # settlement block, per model ...
    fee_per_model_case: float = 0.001  # ... and per model x case
    genesis_participant: int = 0
    version_depth: int = 10  # version shares: latest, latest-1 .. latest-depth, older, none
    # participants taking part at the start (0: all); with churn the rest are the join pool
    initial_active: int = 0
    # verification (our extension; None = the authors' protocol): a model is eligible to win
    # only if its score is at least its parent's score on the same test cases minus this margin
    acceptance_margin: float | None = None
    # a round in which no model wins: "keep_owners" (ours: last round's owners stay owners and
    # try again next round) or "reset" (the authors' code: the owner list is rebuilt from the
    # winners, so it is left empty and the economy stops)
    no_winner: str = "keep_owners"

    def __post_init__(self):
        n = self.initial_active or self.num_participants
        if self.rounds < 1:
            raise ConfigError(f"derelayl.rounds must be >= 1 (got {self.rounds})")
        if not 0 < self.winner_share <= 1:
            raise ConfigError(f"derelayl.winner_share (s) must be in (0, 1] (got {self.winner_share})")
        if self.trainers_per_owner < 1:
            raise ConfigError(f"derelayl.trainers_per_owner (k) must be >= 1 (got {self.trainers_per_owner})")
        if not 0 < self.active_share < 1:
            raise ConfigError(
                f"derelayl.active_share (owners + trainers share) must be in (0, 1) (got {self.active_share})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"derelayl.dropout must be in [0, 1) (got {self.dropout})")
        if self.num_test_cases < 1:
            raise ConfigError(f"derelayl.num_test_cases must be >= 1 (got {self.num_test_cases})")
        active = int(self.active_share * n)
        if active < 2 or n - active < 1:
            raise ConfigError(
                f"num_participants={n} is too small for the roles: with active_share="
                f"{self.active_share} there must be at least one owner, one trainer and one miner "
                f"(need int(active_share * N) >= 2 and N - int(active_share * N) >= 1)")
        if self.acceptance_margin is not None and self.acceptance_margin < 0:
            raise ConfigError(f"derelayl.acceptance_margin must be >= 0 or null "
                              f"(got {self.acceptance_margin})")
        if self.deposit_records not in DEPOSIT_RECORDS:
            raise ConfigError(f"derelayl.deposit_records must be one of "
                              f"{', '.join(DEPOSIT_RECORDS)} (got {self.deposit_records!r})")
        if self.no_winner not in NO_WINNER_RULES:
            raise ConfigError(f"derelayl.no_winner must be one of {', '.join(NO_WINNER_RULES)} "
                              f"(got {self.no_winner!r})")
        if self.initial_active > self.num_participants:
            raise ConfigError("initial_active exceeds num_participants")
        if not 0 <= self.genesis_participant < n:
            raise ConfigError(f"derelayl.genesis_participant must be in [0, {n}) "
                              f"(got {self.genesis_participant})")
        for f in fields(self):
            if f.name.startswith("fee_") or f.name in ("owner_budget", "royalty"):
                if getattr(self, f.name) < 0:
                    raise ConfigError(f"derelayl.{f.name} must be >= 0 (got {getattr(self, f.name)})")


class PerformanceModel(Protocol):
    """How trained models perform. Participants index their own newest model."""

    samples_seen: int

    def train(self, round_: int, parents: np.ndarray, trainers: np.ndarray,
              rng: np.random.Generator, dropped: int = 0,
              behaviours: np.ndarray | None = None) -> np.ndarray:
        """Each trainer trains the newest model of its parent (an owner): version round+1.
        ``dropped`` matched trainers received a model but returned nothing. Returns, per
        trainer, whether its model came back unchanged (identical to the parent)."""

    def test(self, round_: int, trainers: np.ndarray, parents: np.ndarray, num_cases: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
        """Scores (higher is better), tie-breaks (lower is better), digest of the test cases,
        and the parents' scores on the same cases."""

    def model_hashes(self, participants: np.ndarray) -> list[str]: ...

    def quality(self, scores: np.ndarray) -> np.ndarray:
        """Scores on the scale a participant values (accuracy, or sigmoid(perf))."""

    def samples_of(self, participants: np.ndarray) -> np.ndarray:
        """Sample passes each participant's last hop took (for its training cost)."""

    def round_metrics(self) -> dict[str, float]: ...

    def release_unused(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
    lineage: np.ndarray  # (owners x N) owner histograms of the owners' newest models (counts)
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
    lineage_decay: np.ndarray | None = None  # (owners x N) geometrically decayed lineage rows
    minted: float = 0.0
    burned: float = 0.0
    samples_seen: int = 0
    initial_active: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def initial(cls, params: DeRelayLParams, *, active: int | None = None,
                behaviour: np.ndarray | None = None, economics=None,
                declared_samples: np.ndarray | None = None, window: int = 10,
                gamma: float | None = None) -> "EconomyState":
        """A fresh economy; participants ``[0, active)`` take part, the rest wait in the pool."""
        n, g = params.num_participants, params.genesis_participant
        active = n if active is None else int(active)
        held = np.full(n, -1, dtype=np.int64)
        held[g] = 0
        # counts are integers; float32 holds them (and the royalty sums) exactly below 2**24,
        # and its BLAS matrix-vector product is ~50x faster than numpy's integer one
        exact32 = n * params.rounds < 2 ** 24
        lineage = np.zeros((1, n), dtype=np.float32 if exact32 else np.float64)
        lineage[0, g] = 1
        score = np.full(n, -np.inf)
        score[g] = 0.0
        mask = np.zeros(n, dtype=bool)
        mask[:active] = True
        zeros = np.zeros(n)
        decay = None
        if gamma is not None:
            decay = np.zeros((1, n))
            decay[0, g] = 1.0
        return cls(round=0, coins=zeros.copy(), gained=zeros.copy(), lost=zeros.copy(),
                   own_version=np.zeros(n, dtype=np.int64), held_version=held,
                   own_score=score, best_score=score.copy(),
                   matches=np.zeros(n, dtype=np.int64), wins=np.zeros(n, dtype=np.int64),
                   hops=np.zeros(n, dtype=np.int64), hop_gain=zeros.copy(),
                   owners=np.array([g], dtype=np.int64), lineage=lineage,
                   active=mask, ever_active=mask.copy(),
                   behaviour=(np.zeros(n, dtype=np.int8) if behaviour is None else behaviour),
                   declared_samples=(np.ones(n) if declared_samples is None
                                     else np.asarray(declared_samples, dtype=np.float64)),
                   cost_per_sample=zeros.copy() if economics is None else economics.cost_per_sample,
                   cost_per_transfer=zeros.copy() if economics is None else economics.cost_per_transfer,
                   model_value=zeros.copy() if economics is None else economics.model_value,
                   reservation=zeros.copy() if economics is None else economics.reservation,
                   utility=zeros.copy(), recent_utility=np.zeros((window, n)),
                   active_rounds=np.zeros(n, dtype=np.int64), lineage_decay=decay,
                   initial_active=active)


def balances_from_ledger(blocks, num_participants: int) -> tuple[np.ndarray, float, float]:
    """Replay every coin movement recorded in the blocks: (coins, minted, burned)."""
    coins = np.zeros(num_participants)
    minted = burned = 0.0
    for block in blocks:
        pay = block["payload"]
        coins[block["writer"]] += pay["fee"]
        minted += pay["fee"]
        if block["kind"] == "deposit":
            for trainer, bid_t, owner, bid_o in pay["deposits"]:
                coins[trainer] -= bid_t
                coins[owner] -= bid_o
        elif block["kind"] == "settlement":
            for who, amount in pay["credits"].items():
                coins[int(who)] += amount
            minted += pay["royalties_minted"]
            burned += pay["forfeited"]
    return coins, minted, burned


@dataclass(frozen=True)
class RoundOutcome:
    round: int
    metrics: dict[str, float]
    blocks: list[dict[str, Any]]


def _ordered(keys_desc: np.ndarray, rng: np.random.Generator, tiebreak: np.ndarray | None = None):
    """Indices sorting ``keys_desc`` high to low (then ``tiebreak`` low to high), ties random."""
    noise = rng.random(len(keys_desc))
    if tiebreak is None:
        return np.lexsort((noise, -keys_desc))
    return np.lexsort((noise, tiebreak, -keys_desc))


def _credit(values: np.ndarray, who: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(who, weights=values, minlength=n) if len(who) else np.zeros(n)


def play_round(params: DeRelayLParams, state: EconomyState, perf: PerformanceModel,
               rng: np.random.Generator, ledger: Ledger | None = None,
               incentive: IncentiveScheme | None = None, churn: ChurnParams | None = None,
               churn_rng: np.random.Generator | None = None) -> RoundOutcome:
    """Run round ``state.round`` in place: roles, auction, deposits, hops, blocks, payout."""
    p, n, r = params, params.num_participants, state.round
    incentive = incentive or DeRelayLRoyalty(p.royalty)
    coins = state.coins
    owners = state.owners
    minted0, burned0 = state.minted, state.burned
    received = np.zeros(n)  # coins minted to each participant this round (utility)
    cost = np.zeros(n)
    best_quality_before = _held_quality(perf, state.best_score)

    # 1. roles (among the active participants)
    is_owner = np.zeros(n, dtype=bool)
    is_owner[owners] = True
    others = np.flatnonzero(~is_owner & state.active)
    n_active = int(state.active.sum())
    n_trainers = int(np.clip(int(p.active_share * n_active) - len(owners), 0, len(others)))
    trainers = rng.choice(others, size=n_trainers, replace=False)
    is_miner = ~is_owner & state.active
    is_miner[trainers] = False
    miners = np.flatnonzero(is_miner)
    if len(miners) == 0:  # nobody to write the blocks: the round does not happen
        n_trainers, trainers = 0, trainers[:0]

    # 2. auction: trainers bid more the staler their newest model; owners bid a budget share;
    #    a sybil's identities bid everything they hold, to win more matches
    bid_t = np.minimum(coins[trainers], r - state.own_version[trainers] + 1.0)
    sybil = state.behaviour[trainers] == SYBIL
    bid_t[sybil] = coins[trainers[sybil]]
    bid_o = np.minimum(coins[owners], p.owner_budget) / p.trainers_per_owner

    # 3. matching: owners by their newest model's quality, each takes the next k trainers by bid
    owner_rank = _ordered(state.own_score[owners], rng)
    trainer_rank = _ordered(bid_t, rng)
    n_pairs = min(n_trainers, p.trainers_per_owner * len(owners))
    pair_t = trainers[trainer_rank[:n_pairs]]
    pair_bid_t = bid_t[trainer_rank[:n_pairs]]
    pair_row = np.repeat(owner_rank, p.trainers_per_owner)[:n_pairs]  # row into owners/lineage
    pair_o = owners[pair_row]
    pair_bid_o = bid_o[pair_row]
    coins[pair_t] -= pair_bid_t
    coins -= _credit(pair_bid_o, pair_o, n)
    state.matches[pair_t] += 1

    def miner() -> int:
        return int(rng.choice(miners)) if len(miners) else -1

    def pay_miner(who: int, fee: float) -> float:
        if who < 0:
            return 0.0
        coins[who] += fee
        state.gained[who] += fee
        received[who] += fee
        state.minted += fee
        return fee

    # 4. deposit block: one record per pair (both deposits), or one per deposit
    m_dep = miner()
    records = n_pairs if p.deposit_records == "pair" else 2 * n_pairs
    fee = pay_miner(m_dep, p.fee_per_deposit * records)
    if ledger is not None and m_dep >= 0:
        ledger.append(r, "deposit", m_dep, {
            "deposits": [[int(t), float(bt), int(o), float(bo)]
                         for t, bt, o, bo in zip(pair_t, pair_bid_t, pair_o, pair_bid_o)],
            "fee": fee})

    # 5. training hops (drop-outs: at random, and always for `dropout` participants)
    returned = (rng.random(n_pairs) >= p.dropout) & (state.behaviour[pair_t] != DROPOUT)
    trained_t, trained_o, trained_row = pair_t[returned], pair_o[returned], pair_row[returned]
    parent_hashes = perf.model_hashes(trained_o) if ledger is not None else None
    before = perf.samples_seen
    unchanged = np.asarray(perf.train(r, trained_o, trained_t, rng,
                                      dropped=int(n_pairs - returned.sum()),
                                      behaviours=state.behaviour[trained_t]), dtype=bool)
    # a diverged hop (non-finite weights) is a model that never came back: it cannot win
    failed = np.asarray(getattr(perf, "failed", np.zeros(len(trained_t))), dtype=bool)
    failed_t = trained_t[failed]
    if failed.any():
        kept = ~failed
        returned[np.flatnonzero(returned)[failed]] = False
        trained_t, trained_o, trained_row = trained_t[kept], trained_o[kept], trained_row[kept]
        unchanged = unchanged[kept]
        if parent_hashes is not None:
            parent_hashes = [h for h, bad in zip(parent_hashes, failed) if not bad]
    state.samples_seen += perf.samples_seen - before
    state.own_version[trained_t] = r + 1
    state.held_version[trained_t] = r + 1
    n_trained = len(trained_t)
    # costs: a trainer trains and moves two models (down, up); an owner sends one per trainer
    cost += _credit(state.cost_per_sample[trained_t] * perf.samples_of(trained_t)
                    + state.cost_per_transfer[trained_t], trained_t, n)
    cost += _credit(state.cost_per_transfer[pair_t], pair_t, n)
    cost += _credit(state.cost_per_sample[failed_t] * perf.samples_of(failed_t)
                    + state.cost_per_transfer[failed_t], failed_t, n)
    cost += _credit(state.cost_per_transfer[pair_o], pair_o, n)

    # 6. commitment block: hashes and the key the models are shared under; the writer gets them
    m_com = miner()
    fee = pay_miner(m_com, p.fee_per_commitment * n_trained)
    if n_trained and m_com >= 0:
        state.held_version[m_com] = r + 1
    if ledger is not None and m_com >= 0:
        hashes = perf.model_hashes(trained_t)
        ledger.append(r, "commitment", m_com, {
            "models": [[h, ph, int(t), int(o), r + 1]
                       for h, ph, t, o in zip(hashes, parent_hashes, trained_t, trained_o)],
            "public_key": sha256_hex(f"public-key:{ledger.head}:{r}"), "fee": fee})

    # 7. testing block
    m_test = miner()
    scores, ties, digest, parent_scores = perf.test(r, trained_t, trained_o,
                                                    p.num_test_cases, rng)
    fee = pay_miner(m_test, p.fee_per_test_case * p.num_test_cases
                    + p.fee_per_tested_hash * n_trained)
    state.own_score[trained_t] = scores
    gains = scores - parent_scores  # what a hop did to its parent on the same test cases
    state.hops[trained_t] += 1
    state.hop_gain[trained_t] += gains
    state.best_score[trained_t] = np.maximum(state.best_score[trained_t], scores)
    if ledger is not None and m_test >= 0:
        ledger.append(r, "testing", m_test, {"cases_digest": digest,
                                             "num_cases": p.num_test_cases, "fee": fee})

    # 8. settlement: rank (a model returned unchanged is never eligible), then 9. payout
    m_set = miner()
    eligible = ~unchanged
    if p.acceptance_margin is not None:
        eligible &= scores >= parent_scores - p.acceptance_margin
    order = _ordered(np.where(eligible, scores, -np.inf), rng, ties)
    n_win = min(int(math.floor(p.winner_share * n_trained)), int(eligible.sum()))
    win = order[:n_win]
    winners = np.zeros(n_trained, dtype=bool)
    winners[win] = True
    win_t, win_row = trained_t[win], trained_row[win]
    state.wins[win_t] += 1
    win_mask = np.zeros(n_pairs, dtype=bool)
    win_mask[np.flatnonzero(returned)[win]] = True
    refunds = (_credit(pair_bid_t[win_mask], pair_t[win_mask], n)
               + _credit(pair_bid_o[win_mask], pair_o[win_mask], n))
    minted = incentive.mint(Settlement(
        num_participants=n, trainers=trained_t, owner_rows=trained_row, eligible=eligible,
        winners=winners, scores=scores, parent_scores=parent_scores,
        declared_samples=state.declared_samples, lineage=state.lineage,
        lineage_decay=state.lineage_decay, genesis=p.genesis_participant))
    forfeits = (_credit(pair_bid_t[~win_mask], pair_t[~win_mask], n)
                + _credit(pair_bid_o[~win_mask], pair_o[~win_mask], n))
    credits = refunds + minted
    coins += credits
    state.gained += minted
    received += minted
    state.lost += forfeits
    state.minted += float(minted.sum())
    state.burned += float(forfeits.sum())
    fee = pay_miner(m_set, p.fee_per_ranked_model * n_trained
                    + p.fee_per_model_case * n_trained * p.num_test_cases)
    if ledger is not None and m_set >= 0:
        paid = np.flatnonzero(credits)
        ledger.append(r, "settlement", m_set, {
            "ranking": [[hashes[i], float(scores[i]), float(ties[i])] for i in order],
            "winners": [hashes[i] for i in win],
            "ineligible": [hashes[i] for i in np.flatnonzero(~eligible)],
            "credits": {str(int(i)): float(credits[i]) for i in paid},
            "royalties_minted": float(minted.sum()), "forfeited": float(forfeits.sum()),
            "fee": fee})

    # winners own the next round's models; a new owner's lineage row = parent's row + itself
    if n_win:
        lineage = state.lineage[win_row]
        lineage[np.arange(n_win), win_t] += 1
        if state.lineage_decay is not None:
            decay = incentive.gamma * state.lineage_decay[win_row]
            decay[np.arange(n_win), win_t] += 1.0
            state.lineage_decay = decay
        state.owners, state.lineage = win_t.astype(np.int64), lineage
    elif p.no_winner == "reset":  # the authors' code: no winners, no owners (the economy stops)
        state.owners = state.owners[:0]
        state.lineage = state.lineage[:0]
        if state.lineage_decay is not None:
            state.lineage_decay = state.lineage_decay[:0]

    # utility: coins received + value of a better best model - costs - deposits lost
    gain = np.maximum(_held_quality(perf, state.best_score) - best_quality_before, 0.0)
    utility = book_utility(state.utility, state.recent_utility, state.active_rounds,
                           state.active, r, received + state.model_value * gain - cost - forfeits)
    joined = left = 0
    if churn is not None and churn.enabled:
        is_owner = np.zeros(n, dtype=bool)
        is_owner[state.owners] = True
        joined, left = churn_step(state.active, state.ever_active, state.active_rounds,
                                  state.recent_utility, state.reservation, churn,
                                  churn_rng or rng, staying=is_owner)
    state.round = r + 1

    latest = int(state.held_version.max())
    held = np.where(state.active, state.held_version, -1)
    shares = version_shares(held[state.active], latest, p.version_depth)
    adversary = state.behaviour != HONEST
    metrics = {
        **population_metrics(coins, state.utility, state.active, state.ever_active,
                             state.initial_active),
        "coins_minted": state.minted - minted0, "coins_burned": state.burned - burned0,
        "coins_issued_total": state.minted, "coins_burned_total": state.burned,
        "num_owners": float(len(owners)), "num_trainers": float(n_trainers),
        "num_matched": float(n_pairs), "num_trained": float(n_trained), "num_winners": float(n_win),
        "num_unchanged": float(unchanged.sum()), "num_failed": float(len(failed_t)),
        "version_share_latest": float(shares[0]),
        "version_share_within_10": float(shares[:p.version_depth + 1].sum()),
        "version_share_older": float(shares[p.version_depth + 1]),
        "version_share_none": float(shares[p.version_depth + 2]),
        "utility_round_mean": float(utility[state.active].mean()) if state.active.any() else 0.0,
        "joined": float(joined), "left": float(left),
        "samples_seen": float(state.samples_seen),
        "hop_gain_mean": float(gains.mean()) if n_trained else 0.0,
    }
    if adversary.any():
        total = coins.sum()
        metrics["adversary_coin_share"] = float(coins[adversary].sum() / total) if total > 0 else 0.0
    for d in range(1, p.version_depth + 1):
        metrics[f"version_share_latest_minus_{d}"] = float(shares[d])
    metrics.update(perf.round_metrics())
    return RoundOutcome(round=r, metrics=metrics,
                        blocks=[] if ledger is None else ledger.take())


def _held_quality(perf: PerformanceModel, best_score: np.ndarray) -> np.ndarray:
    """Quality of each participant's best model; 0 for those holding none."""
    q = perf.quality(np.where(np.isfinite(best_score), best_score, 0.0))
    return np.where(np.isfinite(best_score), q, 0.0)

