"""The DeRelayL round: auction, matching, books, lineage royalties, resume, statistics."""

from collections import defaultdict

import numpy as np
import pytest

from conftest import make_incentive
from derelayl.protocol.ledger import Ledger, balances_from_ledger, verify_chain
from derelayl.protocol.params import DeRelayLParams
from derelayl.protocol.quality import RandomWalkPerformance
from derelayl.protocol.round import play_round
from derelayl.protocol.runner import DeRelayLRunner, EconomyObserver
from derelayl.protocol.state import EconomyState
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import numpy_rng
from derelayl.sim.stats import gini, jain, version_shares


class Collect(EconomyObserver):
    def __init__(self):
        self.blocks, self.states = [], []

    def on_blocks(self, blocks):
        self.blocks += blocks

    def on_settled(self, state, perf_state, ledger, history):
        self.states.append((state.round, state.coins.copy(), state.minted, state.burned))


def run_random_walk(n=40, rounds=60, seed=0, incentive=None, **kw):
    params = DeRelayLParams(num_participants=n, rounds=rounds, **kw)
    obs = Collect()
    result = DeRelayLRunner(
        params, RandomWalkPerformance(n), seed, observers=[obs], incentive=incentive
    ).run()
    return params, result, obs


def test_books_balance_after_every_round_and_match_the_ledger():
    params, result, obs = run_random_walk()
    assert verify_chain(obs.blocks).ok
    for rnd, coins, minted, burned in obs.states:
        assert coins.sum() == pytest.approx(minted - burned, rel=1e-12, abs=1e-9)
        assert (coins >= -1e-12).all()
        replay, r_minted, r_burned = balances_from_ledger(
            [b for b in obs.blocks if b["round"] < rnd], params.num_participants
        )
        np.testing.assert_allclose(replay, coins, rtol=1e-12, atol=1e-9)
        assert r_minted == pytest.approx(minted) and r_burned == pytest.approx(burned)


def _walk_ledger(params, obs, pay):
    """Credits of every settlement recomputed from the ledger alone: refunds of the winning
    pairs plus ``pay(winner, parent, trainer, mo)`` (royalties from a walk of parent links)."""
    genesis = RandomWalkPerformance(params.num_participants).hashes[0]
    g = params.genesis_participant
    links = {"parent": {genesis: None}, "trainer": {genesis: g}, "mo": {genesis: g}}
    by_round = defaultdict(dict)
    for b in obs.blocks:
        by_round[b["round"]][b["kind"]] = b
    for r in sorted(by_round):
        blocks = by_round[r]
        for h, ph, trainer, mo, version in blocks["commitment"]["payload"]["models"]:
            links["parent"][h], links["trainer"][h], links["mo"][h] = ph, trainer, mo
            assert version == r + 1
        expected = defaultdict(float)
        committed = {m[0]: m for m in blocks["commitment"]["payload"]["models"]}
        deposits = {(t, o): (bt, bo) for t, bt, o, bo in blocks["deposit"]["payload"]["deposits"]}
        minted = 0.0
        for w in blocks["settlement"]["payload"]["winners"]:
            _, ph, trainer, mo, _ = committed[w]
            bt, bo = deposits[(trainer, mo)]
            expected[trainer] += bt
            expected[mo] += bo
            for who in pay(w, links):
                expected[who] += params.royalty
                minted += params.royalty
        settlement = blocks["settlement"]["payload"]
        assert settlement["royalties_minted"] == pytest.approx(minted, rel=1e-12)
        credits = {int(k): v for k, v in settlement["credits"].items()}
        assert set(credits) == {k for k, v in expected.items() if v != 0}
        for who, amount in credits.items():
            assert amount == pytest.approx(expected[who], rel=1e-12)


def test_royalties_equal_the_authors_walk_of_each_models_owner():
    """The authors' settlement, recomputed from the ledger: 1 coin to the winning model's MO,
    then down the parent links to the genesis model 1 coin to each model's MO (model 0's is the
    genesis participant, which is thus paid twice per win: r + 2 coins at depth r)."""
    params, result, obs = run_random_walk(n=30, rounds=40, seed=2)

    def authors(winner, links):
        m = winner
        while m is not None:
            yield links["mo"][m]
            m = links["parent"][m]

    _walk_ledger(params, obs, authors)


def test_royalties_once_equal_a_walk_up_every_winners_lineage():
    """Our earlier rule (royalty_rule=once), recomputed from the ledger: 1 coin to the owner
    of every model the winner was built on, genesis model included (r + 1 coins)."""
    params, result, obs = run_random_walk(
        n=30, rounds=40, seed=2, incentive=make_incentive("derelayl", royalty_rule="once")
    )

    def once(winner, links):
        a = links["parent"][winner]
        while a is not None:  # +1 coin to the owner of every model on the lineage
            yield links["trainer"][a]
            a = links["parent"][a]

    _walk_ledger(params, obs, once)


def test_the_authors_rule_pays_the_genesis_participant_one_more_coin_per_win():
    """On the same settlements, the two rules differ by exactly one coin per winner, paid to
    the genesis participant (so the lineage-row trick stays one vector operation)."""
    authors = make_incentive("derelayl", royalty=1.0)
    once = make_incentive("derelayl", royalty=1.0, royalty_rule="once")
    seen = []

    class Both(type(authors)):
        def mint(self, s):
            a, o = authors.mint(s), once.mint(s)
            seen.append((a - o, int(s.winners.sum()), float(o.sum())))
            return a

    params = DeRelayLParams(num_participants=24, rounds=12, genesis_participant=3)
    DeRelayLRunner(params, RandomWalkPerformance(24, genesis=3), 0, incentive=Both()).run()
    assert sum(wins for _, wins, _ in seen) > 0
    for diff, wins, minted_once in seen:
        assert diff[3] == wins and np.delete(diff, 3) == pytest.approx(0)
        assert minted_once >= wins  # once: at least the genesis model's owner per win


@pytest.mark.parametrize("records, per_pair", [("pair", 1), ("deposit", 2)])
def test_deposit_block_fee_per_record(records, per_pair):
    """The authors' deposit block pays fee_per_deposit per record, one record per matched
    owner-trainer pair; ``deposit`` counts each of the pair's two deposits."""
    params, result, obs = run_random_walk(
        n=40, rounds=8, deposit_records=records, fee_per_deposit=0.01
    )
    blocks = [b for b in obs.blocks if b["kind"] == "deposit"]
    assert blocks
    for b in blocks:
        pairs = b["payload"]["deposits"]
        assert b["payload"]["fee"] == pytest.approx(0.01 * per_pair * len(pairs), rel=1e-12)


@pytest.mark.parametrize("rule", ["keep_owners", "reset"])
def test_a_round_with_no_winner(rule):
    """floor(0.2 x 4 trained) = 0 winners in round 0. keep_owners (ours): the genesis owner
    stays and the relay goes on; reset (the authors' code): no owners, the economy stops."""
    params = DeRelayLParams(
        num_participants=16, rounds=4, dropout=0.0, winner_share=0.2, no_winner=rule
    )
    result = DeRelayLRunner(params, RandomWalkPerformance(16), 0).run()
    h = result.history
    assert h[0]["num_winners"] == 0 and h[0]["num_trained"] == 4
    if rule == "keep_owners":
        assert all(r["num_owners"] == 1 and r["num_trained"] == 4 for r in h)
    else:
        assert all(r["num_owners"] == 0 and r["num_matched"] == 0 for r in h[1:])
        assert all(r["coins_minted"] > 0 for r in h[1:])  # miners still write (empty) blocks


def test_auction_and_matching_follow_the_protocol():
    n = 12
    params = DeRelayLParams(num_participants=n, rounds=5, dropout=0.0, trainers_per_owner=2)
    state = EconomyState.initial(params)
    state.round = 4
    state.coins[:] = 100.0
    state.coins[5] = 0.5  # bid capped by coins
    state.own_version[:] = [0, 4, 3, 2, 1, 0, 0, 4, 3, 2, 1, 0]
    state.owners = np.array([1, 7])
    state.own_score[[1, 7]] = [0.2, 0.9]  # owner 7 has the better model: it picks first
    state.royalties.advance(np.array([0, 0]), np.array([0, 0]))  # two owner models
    perf = RandomWalkPerformance(n)
    ledger = Ledger()
    outcome = play_round(params, state, perf, numpy_rng(0, "t"), ledger)
    blocks = {b["kind"]: b for b in outcome.blocks}
    pairs = blocks["deposit"]["payload"]["deposits"]
    assert len(pairs) == 4  # 6 active = 2 owners + 4 trainers, k = 2
    trainers = [t for t, _, _, _ in pairs]
    assert all(t not in (1, 7) for t in trainers)
    for t, bid_t, _o, bid_o in pairs:
        assert bid_t == min(
            100.0 if t != 5 else 0.5, 4 - [0, 4, 3, 2, 1, 0, 0, 4, 3, 2, 1, 0][t] + 1
        )
        assert bid_o == pytest.approx(min(100.0, params.owner_budget) / 2)
    assert [o for _, _, o, _ in pairs] == [7, 7, 1, 1]
    bids = [b for _, b, _, _ in pairs]
    assert bids == sorted(bids, reverse=True)  # best owner takes the highest bidders


def test_winners_are_the_top_share_and_become_owners():
    params = DeRelayLParams(num_participants=40, rounds=3, dropout=0.0, winner_share=0.5)
    perf = RandomWalkPerformance(40)
    state = EconomyState.initial(params)
    ledger = Ledger()
    for _ in range(3):
        outcome = play_round(params, state, perf, numpy_rng(1, "w", state.round), ledger)
        blocks = {b["kind"]: b for b in outcome.blocks}
        ranking = blocks["settlement"]["payload"]["ranking"]
        winners = blocks["settlement"]["payload"]["winners"]
        assert len(winners) == len(ranking) // 2
        assert winners == [h for h, _, _ in ranking[: len(winners)]]
        scores = [s for _, s, _ in ranking]
        assert scores == sorted(scores, reverse=True)
        trainer_of = {m[0]: m[2] for m in blocks["commitment"]["payload"]["models"]}
        assert sorted(state.owners.tolist()) == sorted(trainer_of[w] for w in winners)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"winner_share": 0.0}, "winner_share"),
        ({"winner_share": 1.5}, "winner_share"),
        ({"trainers_per_owner": 0}, "trainers_per_owner"),
        ({"active_share": 1.0}, "active_share"),
        ({"active_share": 0.0}, "active_share"),
        ({"num_participants": 3}, "too small for the roles"),
        ({"dropout": 1.0}, "dropout"),
        ({"rounds": 0}, "rounds"),
        ({"fee_per_deposit": -1}, "fee_per_deposit"),
        ({"deposit_records": "block"}, "deposit_records must be one of pair, deposit"),
        ({"no_winner": "stop"}, "no_winner must be one of keep_owners, reset"),
    ],
)
def test_bad_parameters(kw, message):
    with pytest.raises(ConfigError, match=message):
        DeRelayLParams(**kw)


def test_random_walk_reproduces_the_authors_shapes():
    """N = 256 (their default): coins spread out and inequality falls; a stable share holds the
    latest model; nearly everyone holds a recent one after the first tens of rounds."""
    params = DeRelayLParams(num_participants=256, rounds=400)
    result = DeRelayLRunner(
        params, RandomWalkPerformance(256, hashing=False), 0, keep_ledger=False
    ).run()
    h = result.history
    assert [r["round"] for r in h[:3]] == [1, 2, 3]
    assert h[399]["coins_gini"] < h[100]["coins_gini"] < h[30]["coins_gini"]
    latest = [r["version_share_latest"] for r in h[50:]]
    assert 0.2 < np.mean(latest) < 0.45 and np.std(latest) < 0.05
    assert min(r["version_share_within_10"] for r in h[50:]) > 0.9
    assert h[-1]["version_share_none"] < 0.01


def test_same_seed_same_economy_and_different_seed_differs():
    _, a, _ = run_random_walk(seed=5)
    _, b, _ = run_random_walk(seed=5)
    _, c, _ = run_random_walk(seed=6)
    assert np.array_equal(a.state.coins, b.state.coins)
    assert not np.array_equal(a.state.coins, c.state.coins)


def test_statistics():
    assert gini(np.zeros(5)) == 0.0
    assert gini(np.array([1.0, 1, 1, 1])) == pytest.approx(0.0)
    x = np.array([0.0, 0, 0, 4])
    brute = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert gini(x) == pytest.approx(brute) == pytest.approx(0.75)
    assert jain(np.array([2.0, 2, 2])) == pytest.approx(1.0)
    shares = version_shares(np.array([5, 5, 4, -1, 0, 3]), latest=5, depth=2)
    # latest, latest-1, latest-2, older, none
    assert shares.tolist() == pytest.approx([2 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6])


@pytest.mark.parametrize("incentive", ["derelayl", "derelayl_bounded"])
def test_a_rounds_payout_and_hand_over_share_one_lineage_walk(monkeypatch, incentive):
    # (the payout and the hand-over walk the same winners: walking them twice cost an economy
    # of N = 100,000 a sixth of its time)
    from derelayl.protocol.royalties import RoyaltyBook

    walks = []
    original = RoyaltyBook._walk_levels

    def counted(self, rows, mos):
        walks.append(len(rows))
        return original(self, rows, mos)

    monkeypatch.setattr(RoyaltyBook, "_walk_levels", counted)
    _, result, _ = run_random_walk(rounds=30, incentive=make_incentive(incentive))
    rounds_with_winners = sum(1 for row in result.history if row["num_winners"] > 0)
    assert rounds_with_winners > 20 and len(walks) == rounds_with_winners
