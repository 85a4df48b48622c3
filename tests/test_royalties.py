"""The trunk-following royalty book pays what a walk of every winner's lineage pays."""

import numpy as np
import pytest

from derelayl.protocol.royalties import RoyaltyBook


def walk_payouts(models, winners, n, gamma):
    """Independent reference: walk each winner's parent links to model 0."""
    paid, decayed = np.zeros(n), np.zeros(n)
    for m in winners:
        d = 0
        while m is not None:
            parent, mo = models[m]
            paid[mo] += 1
            if parent is not None:  # the decayed sum leaves model 0 out
                decayed[mo] += gamma**d
            d += 1
            m = parent
    return paid, decayed


@pytest.mark.parametrize("seed", range(6))
def test_book_matches_a_walk_of_every_lineage(seed):
    rng = np.random.default_rng(seed)
    n, genesis, gamma = 30, 3, 0.7
    book = RoyaltyBook.genesis_book(n, genesis, gamma=gamma)
    models = {0: (None, genesis)}  # model id -> (parent, MO)
    owner_models = [0]  # model held by each owner row
    owners = [genesis]
    for r in range(25):
        k = int(rng.integers(0, 7)) if r % 5 else 0  # some rounds without winners
        rows = rng.integers(0, len(owner_models), size=k)
        trainers = rng.choice(n, size=k, replace=False)
        new = []
        for row in rows:
            models[len(models)] = (owner_models[row], owners[row])
            new.append(len(models) - 1)
        paid, decayed = book.settle(rows, np.array([owners[row] for row in rows], dtype=np.int64))
        ref_paid, ref_decayed = walk_payouts(models, new, n, gamma)
        assert np.array_equal(paid, ref_paid)
        assert np.allclose(decayed, ref_decayed, rtol=1e-12, atol=1e-12)
        if k:
            owner_models, owners = new, [int(t) for t in trainers]
        assert book.owner_models == len(owner_models)
        restored = RoyaltyBook.from_state(book.state_dict())
        assert restored.state_dict().keys() == book.state_dict().keys()
        book = restored


def test_the_tree_stays_small_when_lineages_coalesce():
    """Winners come mostly from the best owners' models (owners are ranked by quality), as in
    the protocol: lineages coalesce a few rounds back and the base follows them up."""
    rng = np.random.default_rng(0)
    n = 2000
    book = RoyaltyBook.genesis_book(n, 0)
    owners = np.array([0])
    for _ in range(200):
        k = min(4 * len(owners), 400) // 2
        rows = np.minimum(rng.geometric(0.3, size=k) - 1, len(owners) - 1)
        book.settle(rows, owners[rows])
        owners = rng.choice(n, size=k, replace=False)
    assert book.depth > 150  # the base followed the trunk up
    assert sum(len(level) for level in book.mo) < 10 * len(owners)


class RowsRoyalty:
    """The earlier implementation, kept as the reference: per owner a row counting, per
    participant, the models on its newest model's lineage it trained (genesis model included);
    a win pays its owner's row (+1 to the genesis participant under the authors' rule), and a new
    owner's row is its parent's row plus itself; the bounded scheme keeps decayed rows (each
    normalised to its own sum). Rows are kept by owner (an owner holds one newest model)."""

    def __init__(self, scheme, n, genesis=0):
        self.scheme, self.n, self.genesis = scheme, n, genesis
        self.name = scheme.name
        self.needs_decayed_lineage = getattr(scheme, "needs_decayed_lineage", False)
        self.gamma = getattr(scheme, "gamma", 1.0)
        first = np.zeros(n)
        first[genesis] = 1
        self.rows, self.decay = {genesis: first}, {genesis: first.copy()}

    def mint(self, s):
        paid = np.zeros(self.n)
        won = np.flatnonzero(s.winners)
        for i in won:
            owner = int(s.owners[i])
            if self.name == "derelayl":
                paid += self.rows[owner] * self.scheme.royalty
                if self.scheme.royalty_rule == "authors":
                    paid[self.genesis] += self.scheme.royalty
            else:
                row = self.decay[owner]
                paid += row / row.sum() * self.scheme.mint_per_win
        if len(won):
            rows, decay = {}, {}
            for i in won:
                owner, trainer = int(s.owners[i]), int(s.trainers[i])
                rows[trainer] = self.rows[owner].copy()
                rows[trainer][trainer] += 1
                decay[trainer] = self.gamma * self.decay[owner]
                decay[trainer][trainer] += 1
            self.rows, self.decay = rows, decay
        return paid


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("DeRelayLRoyalty", {}),
        ("DeRelayLRoyalty", {"royalty_rule": "once"}),
        ("BoundedRoyalty", {"gamma": 0.7}),
    ],
)
def test_the_economy_pays_what_the_earlier_row_method_paid(name, kwargs):
    from derelayl.protocol import incentives
    from derelayl.protocol.params import DeRelayLParams
    from derelayl.protocol.quality import RandomWalkPerformance
    from derelayl.protocol.runner import DeRelayLRunner

    n = 48
    params = DeRelayLParams(num_participants=n, rounds=150)

    def coins(incentive):
        return (
            DeRelayLRunner(
                params,
                RandomWalkPerformance(n, hashing=False),
                seed=3,
                keep_ledger=False,
                incentive=incentive,
            )
            .run()
            .state.coins
        )

    scheme = getattr(incentives, name)
    book = coins(scheme(**kwargs))
    rows = coins(RowsRoyalty(scheme(**kwargs), n))
    if name == "DeRelayLRoyalty":
        assert np.array_equal(book, rows)
    else:
        assert np.allclose(book, rows, rtol=1e-12, atol=1e-9)
