"""The DeRelayL round (SPEC section 2) as a sequence of named phases.

:func:`play_round` runs them in the protocol's order; each phase is a short function of the
parameters, the economy's state and the round's working record (:class:`Round`), and each draws
from the round's own random stream in a fixed order (so a round replays exactly):

1. :func:`assign_roles`: owners (last round's winners), trainers drawn from the other active
   participants, the rest miners;
2. :func:`bid`: trainers bid more the staler their newest model; owners a share of a budget;
3. :func:`match`: owners by quality each take the next k trainers by bid; deposits are taken;
4. :func:`write_deposit_block`;
5. :func:`train_hops`: matched trainers train their owner's model (drop-outs return nothing, a
   diverged hop fails);
6. :func:`commit_models`: the commitment block (hashes; its miner receives the models);
7. :func:`test_models`: the testing block and each model's score on the round's test cases;
8. :func:`settle`: the ranking, winners, refunds, forfeits and what the incentive mints;
   :func:`hand_over`: winners own the next round's models;
9. :func:`book_population`: utilities and churn; :func:`round_metrics`: what is reported.

How a model performs is delegated to a performance model (``random_walk`` or ``trained``,
``derelayl.protocol.quality``): the protocol only sees scores. Relay royalties follow the live
lineages and their shared trunk (``EconomyState.royalties``, ``protocol.royalties``), so a
round costs the size of its live tree, not its depth times the owners times N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derelayl.protocol.behaviours import DROPOUT, HONEST, SYBIL
from derelayl.protocol.incentives import DeRelayLRoyalty, IncentiveScheme, Settlement
from derelayl.protocol.ledger import Ledger, sha256_hex
from derelayl.protocol.params import DeRelayLParams
from derelayl.protocol.population import ChurnParams, book_utility, churn_step, population_metrics
from derelayl.protocol.quality import PerformanceModel
from derelayl.protocol.state import EconomyState
from derelayl.sim.stats import version_shares


@dataclass(frozen=True)
class RoundOutcome:
    round: int
    metrics: dict[str, float]
    blocks: list[dict[str, Any]]


@dataclass
class Round:
    """One round's working record: what each phase hands to the next."""

    index: int  # the protocol's round number r (trains version r + 1)
    rng: np.random.Generator
    received: np.ndarray  # coins minted to each participant this round (for its utility)
    cost: np.ndarray  # each participant's costs this round (training, transfers)
    owners: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    trainers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    miners: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # matched pairs (one entry per pair): trainer, its bid, owner row (into owners), owner, bid
    pair_t: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_bid_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_o: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_bid_o: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # the models that came back (one entry per trained model)
    returned: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per pair
    trained_t: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    trained_o: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    trained_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unchanged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    failed_t: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    parent_hashes: list[str] | None = None
    hashes: list[str] | None = None
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ties: np.ndarray = field(default_factory=lambda: np.zeros(0))
    parent_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # settlement
    eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    win: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    forfeits: np.ndarray | None = None
    minted: np.ndarray | None = None
    # population
    utility: np.ndarray | None = None
    joined: int = 0
    left: int = 0

    @property
    def n_pairs(self) -> int:
        return len(self.pair_t)

    @property
    def n_trained(self) -> int:
        return len(self.trained_t)

    @property
    def gains(self) -> np.ndarray:
        """What each hop did to its parent's score on the round's test cases."""
        return self.scores - self.parent_scores


def _ordered(keys_desc: np.ndarray, rng: np.random.Generator, tiebreak: np.ndarray | None = None):
    """Indices sorting ``keys_desc`` high to low (then ``tiebreak`` low to high), ties random.

    The order ``np.lexsort((noise, tiebreak, -keys))`` gives, computed as a sort by the noise
    (distinct almost surely, so any sort is stable on it) followed by stable sorts: the same
    permutation, faster on the 10^4-10^5 entries of a large economy."""
    noise = rng.random(len(keys_desc))
    order = np.argsort(noise)
    if tiebreak is not None:
        order = order[np.argsort(tiebreak[order], kind="stable")]
    return order[np.argsort(-keys_desc[order], kind="stable")]


def _credit(values: np.ndarray, who: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(who, weights=values, minlength=n) if len(who) else np.zeros(n)


# -- 1-3. roles, auction, matching -----------------------------------------------------------------
def assign_roles(p: DeRelayLParams, state: EconomyState, rnd: Round) -> None:
    """Owners are last round's winners; trainers are drawn from the other active participants
    until owners + trainers = active_share x N; the rest are miners. Without a miner to write
    the blocks the round does not happen (no trainers)."""
    n = p.num_participants
    rnd.owners = state.owners
    is_owner = np.zeros(n, dtype=bool)
    is_owner[rnd.owners] = True
    others = np.flatnonzero(~is_owner & state.active)
    n_active = int(state.active.sum())
    n_trainers = int(np.clip(int(p.active_share * n_active) - len(rnd.owners), 0, len(others)))
    trainers = rnd.rng.choice(others, size=n_trainers, replace=False)
    is_miner = ~is_owner & state.active
    is_miner[trainers] = False
    rnd.miners = np.flatnonzero(is_miner)
    rnd.trainers = trainers if len(rnd.miners) else trainers[:0]


def bid(p: DeRelayLParams, state: EconomyState, rnd: Round) -> tuple[np.ndarray, np.ndarray]:
    """Trainers bid ``min(coins, r - v + 1)`` (a sybil's identities bid all they hold, to win
    more matches); owners ``min(coins, owner_budget) / k`` per trainer."""
    coins, trainers = state.coins, rnd.trainers
    bid_t = np.minimum(coins[trainers], rnd.index - state.own_version[trainers] + 1.0)
    sybil = state.behaviour[trainers] == SYBIL
    bid_t[sybil] = coins[trainers[sybil]]
    bid_o = np.minimum(coins[rnd.owners], p.owner_budget) / p.trainers_per_owner
    return bid_t, bid_o


def match(
    p: DeRelayLParams, state: EconomyState, rnd: Round, bid_t: np.ndarray, bid_o: np.ndarray
) -> None:
    """Owners by their newest model's quality each take the next k trainers by bid (ties in
    random order); both sides pay their bids as deposits."""
    owner_rank = _ordered(state.own_score[rnd.owners], rnd.rng)
    trainer_rank = _ordered(bid_t, rnd.rng)
    n_pairs = min(len(rnd.trainers), p.trainers_per_owner * len(rnd.owners))
    rnd.pair_t = rnd.trainers[trainer_rank[:n_pairs]]
    rnd.pair_bid_t = bid_t[trainer_rank[:n_pairs]]
    rnd.pair_row = np.repeat(owner_rank, p.trainers_per_owner)[:n_pairs]  # row into owners
    rnd.pair_o = rnd.owners[rnd.pair_row]
    rnd.pair_bid_o = bid_o[rnd.pair_row]
    state.coins[rnd.pair_t] -= rnd.pair_bid_t
    state.coins -= _credit(rnd.pair_bid_o, rnd.pair_o, p.num_participants)
    state.matches[rnd.pair_t] += 1


# -- the blocks' writers ---------------------------------------------------------------------------
def pick_miner(rnd: Round) -> int:
    """A block's writer: a random miner (-1: nobody to write it)."""
    # (the draw rng.choice(miners) makes, without its ~15 us of argument checks)
    return int(rnd.miners[rnd.rng.integers(0, len(rnd.miners))]) if len(rnd.miners) else -1


def pay_miner(state: EconomyState, rnd: Round, who: int, fee: float) -> float:
    """The block's fee to its writer (minted); returns what was paid."""
    if who < 0:
        return 0.0
    state.coins[who] += fee
    state.gained[who] += fee
    rnd.received[who] += fee
    state.minted += fee
    return fee


# -- 4-7. blocks and hops --------------------------------------------------------------------------
def _ints(a) -> list[int]:
    """Python ints of an array's entries (what ``int(x)`` gives each, in one call)."""
    return np.asarray(a, dtype=np.int64).tolist()


def _floats(a) -> list[float]:
    """Python floats of an array's entries (what ``float(x)`` gives each, in one call)."""
    return np.asarray(a, dtype=np.float64).tolist()


def write_deposit_block(
    p: DeRelayLParams, state: EconomyState, rnd: Round, ledger: Ledger | None
) -> None:
    """One record per pair holding both deposits (or one per deposit, ``deposit_records``)."""
    writer = pick_miner(rnd)
    records = rnd.n_pairs if p.deposit_records == "pair" else 2 * rnd.n_pairs
    fee = pay_miner(state, rnd, writer, p.fee_per_deposit * records)
    if ledger is not None and writer >= 0:
        ledger.append(
            rnd.index,
            "deposit",
            writer,
            {
                "deposits": [
                    list(row)
                    for row in zip(
                        _ints(rnd.pair_t),
                        _floats(rnd.pair_bid_t),
                        _ints(rnd.pair_o),
                        _floats(rnd.pair_bid_o),
                    )
                ],
                "fee": fee,
            },
        )


def train_hops(
    p: DeRelayLParams,
    state: EconomyState,
    rnd: Round,
    perf: PerformanceModel,
    ledger: Ledger | None,
) -> None:
    """Matched trainers train their owner's newest model (version r + 1). Drop-outs (at random,
    and always a ``dropout`` participant) return nothing; a diverged hop (non-finite weights)
    is a model that never came back: it cannot win. Books each one's training and transfer
    costs (a trainer moves two models, an owner one per trainer)."""
    n = p.num_participants
    returned = (rnd.rng.random(rnd.n_pairs) >= p.dropout) & (state.behaviour[rnd.pair_t] != DROPOUT)
    trained_t, trained_o = rnd.pair_t[returned], rnd.pair_o[returned]
    trained_row = rnd.pair_row[returned]
    parent_hashes = perf.model_hashes(trained_o) if ledger is not None else None
    before = perf.samples_seen
    unchanged = np.asarray(
        perf.train(
            rnd.index,
            trained_o,
            trained_t,
            rnd.rng,
            dropped=int(rnd.n_pairs - returned.sum()),
            behaviours=state.behaviour[trained_t],
        ),
        dtype=bool,
    )
    failed = np.asarray(getattr(perf, "failed", np.zeros(len(trained_t))), dtype=bool)
    rnd.failed_t = trained_t[failed]
    if failed.any():
        kept = ~failed
        returned[np.flatnonzero(returned)[failed]] = False
        trained_t, trained_o, trained_row = trained_t[kept], trained_o[kept], trained_row[kept]
        unchanged = unchanged[kept]
        if parent_hashes is not None:
            parent_hashes = [h for h, bad in zip(parent_hashes, failed) if not bad]
    rnd.returned, rnd.unchanged, rnd.parent_hashes = returned, unchanged, parent_hashes
    rnd.trained_t, rnd.trained_o, rnd.trained_row = trained_t, trained_o, trained_row
    state.samples_seen += perf.samples_seen - before
    state.own_version[trained_t] = rnd.index + 1
    state.held_version[trained_t] = rnd.index + 1
    failed_t = rnd.failed_t
    rnd.cost += _credit(
        state.cost_per_sample[trained_t] * perf.samples_of(trained_t)
        + state.cost_per_transfer[trained_t],
        trained_t,
        n,
    )
    rnd.cost += _credit(state.cost_per_transfer[rnd.pair_t], rnd.pair_t, n)
    rnd.cost += _credit(
        state.cost_per_sample[failed_t] * perf.samples_of(failed_t)
        + state.cost_per_transfer[failed_t],
        failed_t,
        n,
    )
    rnd.cost += _credit(state.cost_per_transfer[rnd.pair_o], rnd.pair_o, n)


def commit_models(
    p: DeRelayLParams,
    state: EconomyState,
    rnd: Round,
    perf: PerformanceModel,
    ledger: Ledger | None,
) -> None:
    """The commitment block: the models' hashes and the key they are shared under; its writer
    receives the (encrypted) models, which count for its version share."""
    writer = pick_miner(rnd)
    fee = pay_miner(state, rnd, writer, p.fee_per_commitment * rnd.n_trained)
    if rnd.n_trained and writer >= 0:
        state.held_version[writer] = rnd.index + 1
    if ledger is not None and writer >= 0:
        rnd.hashes = perf.model_hashes(rnd.trained_t)
        assert rnd.parent_hashes is not None  # train_hops hashes the parents with a ledger
        ledger.append(
            rnd.index,
            "commitment",
            writer,
            {
                "models": [
                    [h, ph, t, o, rnd.index + 1]
                    for h, ph, t, o in zip(
                        rnd.hashes, rnd.parent_hashes, _ints(rnd.trained_t), _ints(rnd.trained_o)
                    )
                ],
                "public_key": sha256_hex(f"public-key:{ledger.head}:{rnd.index}"),
                "fee": fee,
            },
        )


def test_models(
    p: DeRelayLParams,
    state: EconomyState,
    rnd: Round,
    perf: PerformanceModel,
    ledger: Ledger | None,
) -> None:
    """The testing block: the round's test cases (published as a digest) score every model and
    its parent; each trainer's newest score and hop gain are booked."""
    writer = pick_miner(rnd)
    rnd.scores, rnd.ties, digest, rnd.parent_scores = perf.test(
        rnd.index, rnd.trained_t, rnd.trained_o, p.num_test_cases, rnd.rng
    )
    fee = pay_miner(
        state,
        rnd,
        writer,
        p.fee_per_test_case * p.num_test_cases + p.fee_per_tested_hash * rnd.n_trained,
    )
    t = rnd.trained_t
    state.own_score[t] = rnd.scores
    state.hops[t] += 1
    state.hop_gain[t] += rnd.gains
    state.best_score[t] = np.maximum(state.best_score[t], rnd.scores)
    if ledger is not None and writer >= 0:
        ledger.append(
            rnd.index,
            "testing",
            writer,
            {"cases_digest": digest, "num_cases": p.num_test_cases, "fee": fee},
        )


# -- 8-9. settlement and payout --------------------------------------------------------------------
def settle(
    p: DeRelayLParams,
    state: EconomyState,
    rnd: Round,
    incentive: IncentiveScheme,
    ledger: Ledger | None,
) -> None:
    """Rank the eligible models (a model returned unchanged never is; with an acceptance margin
    neither is one that scores too far below its parent); the best floor(s x #trained) win.
    Winners and their owners get their deposits back, everybody else's are burned, and the
    incentive scheme mints its payout; the settlement block records it all."""
    n, trained = p.num_participants, rnd.n_trained
    writer = pick_miner(rnd)
    eligible = ~rnd.unchanged
    if p.acceptance_margin is not None:
        eligible &= rnd.scores >= rnd.parent_scores - p.acceptance_margin
    order = _ordered(np.where(eligible, rnd.scores, -np.inf), rnd.rng, rnd.ties)
    n_win = min(int(math.floor(p.winner_share * trained)), int(eligible.sum()))
    win = order[:n_win]
    winners = np.zeros(trained, dtype=bool)
    winners[win] = True
    rnd.eligible, rnd.order, rnd.win = eligible, order, win
    state.wins[rnd.trained_t[win]] += 1
    win_mask = np.zeros(rnd.n_pairs, dtype=bool)
    win_mask[np.flatnonzero(rnd.returned)[win]] = True
    refunds = _credit(rnd.pair_bid_t[win_mask], rnd.pair_t[win_mask], n) + _credit(
        rnd.pair_bid_o[win_mask], rnd.pair_o[win_mask], n
    )
    minted = incentive.mint(
        Settlement(
            num_participants=n,
            trainers=rnd.trained_t,
            owner_rows=rnd.trained_row,
            owners=rnd.trained_o,
            eligible=eligible,
            winners=winners,
            scores=rnd.scores,
            parent_scores=rnd.parent_scores,
            declared_samples=state.declared_samples,
            royalties=state.royalties,
            genesis=p.genesis_participant,
            ranked_winners=win,
        )
    )
    forfeits = _credit(rnd.pair_bid_t[~win_mask], rnd.pair_t[~win_mask], n) + _credit(
        rnd.pair_bid_o[~win_mask], rnd.pair_o[~win_mask], n
    )
    credits = refunds + minted
    state.coins += credits
    state.gained += minted
    rnd.received += minted
    state.lost += forfeits
    state.minted += float(minted.sum())
    state.burned += float(forfeits.sum())
    rnd.minted, rnd.forfeits = minted, forfeits
    fee = pay_miner(
        state,
        rnd,
        writer,
        p.fee_per_ranked_model * trained + p.fee_per_model_case * trained * p.num_test_cases,
    )
    if ledger is not None and writer >= 0:
        ledger.append(rnd.index, "settlement", writer, _settlement(rnd, credits, fee))


def _settlement(rnd: Round, credits: np.ndarray, fee: float) -> dict:
    """The settlement block's payload: the ranking, winners, ineligible models, credits."""
    hashes, scores, order = rnd.hashes, rnd.scores, rnd.order
    assert hashes is not None  # commit_models hashed them (same miners, so a writer too)
    assert rnd.minted is not None and rnd.forfeits is not None  # settle set them
    paid = np.flatnonzero(credits)
    return {
        "ranking": [
            [hashes[i], s, t]
            for i, s, t in zip(_ints(order), _floats(scores[order]), _floats(rnd.ties[order]))
        ],
        "winners": [hashes[i] for i in rnd.win],
        "ineligible": [hashes[i] for i in np.flatnonzero(~rnd.eligible)],
        "credits": dict(zip(map(str, _ints(paid)), _floats(credits[paid]))),
        "royalties_minted": float(rnd.minted.sum()),
        "forfeited": float(rnd.forfeits.sum()),
        "fee": fee,
    }


def hand_over(p: DeRelayLParams, state: EconomyState, rnd: Round) -> None:
    """Winners own the next round's models (the royalty book records their lineages). A round
    without a winner keeps its owners (``no_winner=reset``: the authors' code leaves none, and
    the economy stops)."""
    win = rnd.win
    if len(win):
        state.royalties.advance(rnd.trained_row[win], rnd.trained_o[win])
        state.owners = rnd.trained_t[win].astype(np.int64)
    elif p.no_winner == "reset":
        state.owners = state.owners[:0]


# -- the population --------------------------------------------------------------------------------
def book_population(
    p: DeRelayLParams,
    state: EconomyState,
    rnd: Round,
    perf: PerformanceModel,
    best_quality_before: np.ndarray,
    churn: ChurnParams | None,
    churn_rng: np.random.Generator | None,
) -> None:
    """Utility (coins received + value of a better best model - costs - deposits lost) into the
    satisfaction index; then, with churn, who leaves and who joins (owners serve their round)."""
    gain = np.maximum(held_quality(perf, state.best_score) - best_quality_before, 0.0)
    rnd.utility = book_utility(
        state.utility,
        state.recent_utility,
        state.active_rounds,
        state.active,
        rnd.index,
        rnd.received + state.model_value * gain - rnd.cost - rnd.forfeits,
    )
    if churn is not None and churn.enabled:
        is_owner = np.zeros(p.num_participants, dtype=bool)
        is_owner[state.owners] = True
        rnd.joined, rnd.left = churn_step(
            state.active,
            state.ever_active,
            state.active_rounds,
            state.recent_utility,
            state.reservation,
            churn,
            churn_rng or rnd.rng,
            staying=is_owner,
        )


def round_metrics(
    p: DeRelayLParams,
    state: EconomyState,
    rnd: Round,
    perf: PerformanceModel,
    minted0: float,
    burned0: float,
) -> dict[str, float]:
    """What a round reports: coins, population, roles, version shares, hop gains and the
    performance model's own numbers."""
    coins = state.coins
    latest = int(state.held_version.max())
    held = np.where(state.active, state.held_version, -1)
    shares = version_shares(held[state.active], latest, p.version_depth)
    utility = rnd.utility
    assert utility is not None  # booked by book_population
    metrics = {
        **population_metrics(
            coins, state.utility, state.active, state.ever_active, state.initial_active
        ),
        "coins_minted": state.minted - minted0,
        "coins_burned": state.burned - burned0,
        "coins_issued_total": state.minted,
        "coins_burned_total": state.burned,
        "num_owners": float(len(rnd.owners)),
        "num_trainers": float(len(rnd.trainers)),
        "num_matched": float(rnd.n_pairs),
        "num_trained": float(rnd.n_trained),
        "num_winners": float(len(rnd.win)),
        "num_unchanged": float(rnd.unchanged.sum()),
        "num_failed": float(len(rnd.failed_t)),
        "version_share_latest": float(shares[0]),
        "version_share_within_10": float(shares[: p.version_depth + 1].sum()),
        "version_share_older": float(shares[p.version_depth + 1]),
        "version_share_none": float(shares[p.version_depth + 2]),
        "utility_round_mean": float(utility[state.active].mean()) if state.active.any() else 0.0,
        "joined": float(rnd.joined),
        "left": float(rnd.left),
        "samples_seen": float(state.samples_seen),
        "hop_gain_mean": float(rnd.gains.mean()) if rnd.n_trained else 0.0,
    }
    adversary = state.behaviour != HONEST
    if adversary.any():
        total = coins.sum()
        metrics["adversary_coin_share"] = (
            float(coins[adversary].sum() / total) if total > 0 else 0.0
        )
    for d in range(1, p.version_depth + 1):
        metrics[f"version_share_latest_minus_{d}"] = float(shares[d])
    metrics.update(perf.round_metrics())
    return metrics


def held_quality(perf: PerformanceModel, best_score: np.ndarray) -> np.ndarray:
    """Quality of each participant's best model; 0 for those holding none."""
    q = perf.quality(np.where(np.isfinite(best_score), best_score, 0.0))
    return np.where(np.isfinite(best_score), q, 0.0)


def play_round(
    params: DeRelayLParams,
    state: EconomyState,
    perf: PerformanceModel,
    rng: np.random.Generator,
    ledger: Ledger | None = None,
    incentive: IncentiveScheme | None = None,
    churn: ChurnParams | None = None,
    churn_rng: np.random.Generator | None = None,
) -> RoundOutcome:
    """Run round ``state.round`` in place: roles, auction, deposits, hops, blocks, payout."""
    p, n = params, params.num_participants
    incentive = incentive or DeRelayLRoyalty(p.royalty)
    rnd = Round(index=state.round, rng=rng, received=np.zeros(n), cost=np.zeros(n))
    minted0, burned0 = state.minted, state.burned
    best_quality_before = held_quality(perf, state.best_score)
    assign_roles(p, state, rnd)
    match(p, state, rnd, *bid(p, state, rnd))
    write_deposit_block(p, state, rnd, ledger)
    train_hops(p, state, rnd, perf, ledger)
    commit_models(p, state, rnd, perf, ledger)
    test_models(p, state, rnd, perf, ledger)
    settle(p, state, rnd, incentive, ledger)
    hand_over(p, state, rnd)
    book_population(p, state, rnd, perf, best_quality_before, churn, churn_rng)
    state.round = rnd.index + 1
    metrics = round_metrics(p, state, rnd, perf, minted0, burned0)
    return RoundOutcome(
        round=rnd.index, metrics=metrics, blocks=[] if ledger is None else ledger.take()
    )
