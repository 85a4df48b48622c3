"""Incentive schemes, participants' economics, churn and adversaries in the DeRelayL economy."""

import numpy as np
import pytest

from conftest import make_incentive
from derelayl.protocol.behaviours import BEHAVIOURS, FREE_RIDER, LABEL_FLIP, assign_behaviours
from derelayl.protocol.incentives import INCENTIVES, Settlement
from derelayl.protocol.ledger import balances_from_ledger
from derelayl.protocol.params import DeRelayLParams
from derelayl.protocol.population import ChurnParams, Economics, EconomicsParams
from derelayl.protocol.quality import RandomWalkPerformance
from derelayl.protocol.royalties import RoyaltyBook
from derelayl.protocol.runner import DeRelayLRunner, EconomyObserver
from derelayl.protocol.state import EconomyState
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import numpy_rng

PARAMS = {
    "derelayl": {},
    "derelayl_bounded": {"mint_per_win": 2.0, "gamma": 0.5},
    "uniform": {"reward": 1.0},
    "data_size": {"reward": 1.0},
    "marginal_gain": {"rate": 10.0},
}


class Books(EconomyObserver):
    def __init__(self):
        self.blocks, self.checks = [], []

    def on_blocks(self, blocks):
        self.blocks += blocks

    def on_settled(self, state, perf_state, ledger, history):
        self.checks.append((state.round, state.coins.copy(), state.minted, state.burned))


def run(scheme, n=40, rounds=40, seed=0, behaviour=None, churn=None, **kw):
    params = DeRelayLParams(
        num_participants=n, rounds=rounds, initial_active=kw.pop("initial_active", 0)
    )
    incentive = make_incentive(scheme, **PARAMS[scheme])
    economics = Economics.draw(n, EconomicsParams(), numpy_rng(seed, "economics"))
    state = EconomyState.initial(
        params,
        active=params.initial_active or n,
        behaviour=behaviour,
        economics=economics,
        window=(churn.window if churn else 10),
        gamma=incentive.gamma if incentive.needs_decayed_lineage else None,
    )
    books = Books()
    perf = RandomWalkPerformance(n, samples=np.full(n, 64.0))
    result = DeRelayLRunner(
        params, perf, seed, observers=[books], incentive=incentive, churn=churn
    ).run(state)
    return result, books


@pytest.mark.parametrize("scheme", INCENTIVES)
def test_every_scheme_balances_the_books_every_round(scheme):
    result, books = run(scheme)
    n = len(result.state.coins)
    for rnd, coins, minted, burned in books.checks:
        assert coins.sum() == pytest.approx(minted - burned, rel=1e-12, abs=1e-9)
        replay, _, _ = balances_from_ledger([b for b in books.blocks if b["round"] < rnd], n)
        np.testing.assert_allclose(replay, coins, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("scheme", INCENTIVES)
def test_no_scheme_pays_a_free_riders_unchanged_model(scheme):
    n = 40
    behaviour = assign_behaviours(n, {"free_rider": 0.3}, numpy_rng(0, "b"), exclude=(0,))
    result, books = run(scheme, n=n, behaviour=behaviour)
    riders = set(np.flatnonzero(behaviour == FREE_RIDER).tolist())
    trained_by = {}
    for b in books.blocks:
        if b["kind"] == "commitment":
            for h, ph, t, _o, _ in b["payload"]["models"]:
                trained_by[(b["round"], h)] = (t, h == ph)
        if b["kind"] == "settlement":
            r = b["round"]
            for h in b["payload"]["winners"]:
                t, same = trained_by[(r, h)]
                assert t not in riders and not same
            assert all(trained_by[(r, h)][0] in riders for h in b["payload"]["ineligible"])
    # free riders are matched, but win nothing
    assert result.state.matches[list(riders)].sum() > 0
    assert result.state.wins[list(riders)].sum() == 0


def test_unit_payouts_by_hand():
    # lineages: model 0 (MO 0) -> A, B (MO 0) -> C from A (MO 1), D from B (MO 2); the owners'
    # models are C (row 0) and D (row 1). This round: X from C (MO 3), Y and Z from D (MO 1).
    book = RoyaltyBook.genesis_book(4, 0, gamma=0.5)
    book.advance(np.array([0, 0]), np.array([0, 0]))
    book.advance(np.array([0, 1]), np.array([1, 2]))
    s = Settlement(
        num_participants=4,
        trainers=np.array([3, 2, 1]),
        owner_rows=np.array([0, 1, 1]),
        owners=np.array([3, 1, 1]),
        eligible=np.array([True, True, False]),
        winners=np.array([True, True, False]),
        scores=np.array([0.9, 0.5, 0.7]),
        parent_scores=np.array([0.6, 0.6, 0.6]),
        declared_samples=np.array([0, 10, 30, 10.0]),
        royalties=book,
    )
    # X pays the MOs of X, C, A, model 0: 3, 1, 0, 0; Y those of Y, D, B, model 0: 1, 2, 0, 0
    np.testing.assert_allclose(make_incentive("derelayl", royalty=1.0).mint(s), [4, 2, 1, 1])
    # ours pays the genesis participant once per win
    np.testing.assert_allclose(
        make_incentive("derelayl", royalty=1.0, royalty_rule="once").mint(s), [2, 2, 1, 1]
    )
    bounded = make_incentive("derelayl_bounded", mint_per_win=2.0, gamma=0.5).mint(s)
    # gamma^d from the winner's own model, model 0 left out: X: 3 (1), 1 (.5), 0 (.25); Y: 1 (1),
    # 2 (.5), 0 (.25); each win's weights sum to 1.75 and it mints 2
    np.testing.assert_allclose(bounded, np.array([0.5, 1.5, 0.5, 1.0]) * 2 / 1.75)
    assert bounded.sum() == pytest.approx(4.0)  # fixed amount per win
    np.testing.assert_allclose(make_incentive("uniform", reward=1.0).mint(s), [0, 0, 1, 1])
    np.testing.assert_allclose(make_incentive("data_size", reward=1.0).mint(s), [0, 0, 1.5, 0.5])
    np.testing.assert_allclose(make_incentive("marginal_gain", rate=10.0).mint(s), [0, 0, 0, 3])


def test_bounded_supply_grows_linearly_and_the_authors_quadratically():
    auth, _ = run("derelayl", n=64, rounds=200)
    bounded, _ = run("derelayl_bounded", n=64, rounds=200)

    def issued(result, r):
        return result.history[r - 1]["coins_issued_total"]

    # doubling the rounds: about 2x the issue for bounded, about 4x for the authors' rule
    assert 1.6 < issued(bounded, 200) / issued(bounded, 100) < 2.4
    assert issued(auth, 200) / issued(auth, 100) > 3.0


def test_churn_is_off_by_default_and_moves_people_when_on():
    fixed, _ = run("derelayl", n=40)
    assert all(r["active_participants"] == 40 and r["retention"] == 1.0 for r in fixed.history)
    churn = ChurnParams(enabled=True, window=5, join_rate=0.2, join_scale=0.01)
    moving, _ = run("uniform", n=80, initial_active=40, churn=churn, rounds=60)
    h = moving.history
    assert sum(r["left"] for r in h) > 0 and sum(r["joined"] for r in h) > 0
    assert h[-1]["retention"] < 1.0
    # leavers and joiners: only the active ones take roles
    assert all(r["num_owners"] + r["num_trainers"] <= r["active_participants"] for r in h)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: EconomicsParams(cost_per_sample=-1), "cost_per_sample must be >= 0"),
        (lambda: EconomicsParams(cost_per_transfer=-0.1), "cost_per_transfer must be >= 0"),
        (lambda: make_incentive("derelayl_bounded", gamma=0.0), r"gamma must be in \(0, 1\]"),
        (lambda: make_incentive("derelayl_bounded", gamma=1.5), r"gamma must be in \(0, 1\]"),
        (lambda: make_incentive("derelayl", royalty_rule="twice"), "royalty_rule must be one of"),
        (
            lambda: assign_behaviours(10, {"free_rider": 0.6, "noise": 0.5}, numpy_rng(0, "b")),
            "sum to 1.1",
        ),
        (lambda: assign_behaviours(10, {"byzantine": 0.1}, numpy_rng(0, "b")), "allowed: dropout"),
        (lambda: ChurnParams(enabled=True, window=0), "churn.window"),
    ],
)
def test_bad_values(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_behaviours_are_assigned_by_fraction_and_genesis_stays_honest():
    codes = assign_behaviours(
        100, {"free_rider": 0.2, "sybil": 0.1}, numpy_rng(0, "b"), exclude=(0,)
    )
    assert (codes == FREE_RIDER).sum() == 20 and (codes == BEHAVIOURS.index("sybil")).sum() == 10
    assert codes[0] == 0


@pytest.mark.parametrize("kind", ["dropout", "label_flip", "noise", "sybil", "free_rider"])
def test_attackers_earn_less_than_their_population_share(kind):
    n = 100
    behaviour = assign_behaviours(n, {kind: 0.3}, numpy_rng(1, "b"), exclude=(0,))
    result, _ = run("derelayl", n=n, rounds=100, behaviour=behaviour, seed=1)
    coins = result.state.coins
    share = coins[behaviour != 0].sum() / coins.sum()
    assert share < 0.3, (kind, share)


def test_federated_payouts_by_hand():
    from derelayl.protocol.incentives import FederatedPayouts

    samples = np.array([10.0, 30.0, 20.0, 40.0])
    rounds = [([0, 1], [0.1, -0.2]), ([1, 2], [0.05, 0.3]), ([0, 3], [0.0, 0.2])]

    def pay(name, **kw):
        p = FederatedPayouts(make_incentive(name, **kw), samples)
        for sel, gains in rounds:
            p.settle(sel, gains)
        return p.coins, p.minted

    coins, minted = pay("uniform", reward=1.0)
    np.testing.assert_allclose(coins, [2, 2, 1, 1])
    coins, _ = pay("data_size", reward=1.0)
    np.testing.assert_allclose(coins, [0.5 + 0.4, 1.5 + 1.2, 0.8, 1.6])
    coins, _ = pay("marginal_gain", rate=10.0)
    np.testing.assert_allclose(coins, [1.0, 0.5, 3.0, 2.0])
    # the authors' rule: every earlier contribution to the global model earns 1 per later round
    coins, minted = pay("derelayl", royalty=1.0)
    np.testing.assert_allclose(coins, [1 + 1, 1 + 2, 1, 0])
    assert minted == pytest.approx(coins.sum())
    # bounded: a fixed 2 coins a round (from round 2 on), decayed over earlier rounds
    coins, minted = pay("derelayl_bounded", mint_per_win=2.0, gamma=0.5)
    assert minted == pytest.approx(4.0)
    d2 = np.array([0.5, 0.5, 0, 0])  # round 1's clients, before round 2
    d3 = 0.5 * d2 + np.array([0, 0.5, 0.5, 0])
    np.testing.assert_allclose(coins, 2 * d2 / d2.sum() + 2 * d3 / d3.sum())


def test_hop_gain_is_what_a_hop_did_to_its_parents_score():
    """A free-rider's hop leaves its parent's score as it was; an honest random-walk hop adds
    N(1, 1) on average, a label flipper's subtracts |N(1, 1)| (1.17 on average)."""
    n = 60
    behaviour = assign_behaviours(
        n, {"free_rider": 0.2, "label_flip": 0.2}, numpy_rng(2, "b"), exclude=(0,)
    )
    result, _ = run("derelayl", n=n, rounds=60, behaviour=behaviour, seed=2)
    s = result.state
    riders, flippers, honest = (behaviour == FREE_RIDER), (behaviour == LABEL_FLIP), behaviour == 0
    assert s.hops[riders].sum() > 0 and s.hop_gain[riders].sum() == 0.0
    honest_gain = s.hop_gain[honest].sum() / s.hops[honest].sum()
    flip_gain = s.hop_gain[flippers].sum() / s.hops[flippers].sum()
    assert 0.8 < honest_gain < 1.2 and -1.45 < flip_gain < -0.9, (honest_gain, flip_gain)
    assert s.hops.sum() == sum(row["num_trained"] for row in result.history)
