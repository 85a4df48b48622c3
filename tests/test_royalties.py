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
                decayed[mo] += gamma ** d
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
