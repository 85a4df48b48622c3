"""Rounds per second of the random-walk DeRelayL economy (the core, no files).

    python benchmarks/economy.py   # N=256 x 5,000, N=10,000 x 1,000, N=100,000 x 1,000 rounds

Each case is timed with the ledger off (pure simulation) and, for N=256, on (blocks built and
hashed in memory). Issue #13's target for the largest case: <= 60 s (royalties follow the
lineages' shared trunk, so nothing N x N is allocated). The last line is
``rounds_per_s <N=256 rate> <N=10,000 rate> <N=100,000 rate>``.
"""

from __future__ import annotations

import argparse
import time

from derelayl.protocol.params import DeRelayLParams
from derelayl.protocol.quality import RandomWalkPerformance
from derelayl.protocol.runner import DeRelayLRunner


def rate(n: int, rounds: int, ledger: bool) -> tuple[float, dict]:
    params = DeRelayLParams(num_participants=n, rounds=rounds)
    runner = DeRelayLRunner(
        params, RandomWalkPerformance(n, hashing=ledger), seed=0, keep_ledger=ledger
    )
    t = time.perf_counter()
    result = runner.run()
    return rounds / (time.perf_counter() - t), result.history[-1]


def naive_rate(n: int, rounds: int, seed: int = 0) -> float:
    """The straightforward simulation: participant objects and a walk up every winner's lineage
    (what a first simulation of the protocol looks like; the stand-in for the authors' code,
    which is not available to us). Same protocol steps, Python loops instead of arrays."""
    import math
    import random

    rnd = random.Random(seed)

    class Model:
        __slots__ = ("mo", "owner", "parent", "perf", "version")

        def __init__(self, parent, owner, mo, perf, version):
            self.parent, self.owner, self.mo = parent, owner, mo  # mo: who commissioned it
            self.perf, self.version = perf, version

    coins = [0.0] * n
    own_version = [0] * n
    newest = [None] * n
    newest[0] = Model(None, 0, 0, 0.0, 0)
    owners = [0]
    t = time.perf_counter()
    for r in range(rounds):
        others = [i for i in range(n) if i not in set(owners)]
        trainers = rnd.sample(others, max(0, min(len(others), n // 2 - len(owners))))
        miners = [i for i in others if i not in set(trainers)]
        bids = {i: min(coins[i], r - own_version[i] + 1) for i in trainers}
        ranked_owners = sorted(owners, key=lambda o: -newest[o].perf)
        ranked_trainers = sorted(trainers, key=lambda i: (-bids[i], rnd.random()))
        pairs = []
        for j, o in enumerate(ranked_owners):
            for tr in ranked_trainers[4 * j : 4 * j + 4]:
                bo = min(coins[o], 0.001) / 4
                coins[tr] -= bids[tr]
                coins[o] -= bo
                pairs.append((tr, o, bids[tr], bo))
        for _ in range(4):
            coins[rnd.choice(miners)] += 0.001 * len(pairs)
        trained = []
        for tr, o, bt, bo in pairs:
            if rnd.random() < 0.1:
                continue
            parent = newest[o]
            newest[tr] = Model(parent, tr, o, parent.perf + rnd.gauss(1, 1), r + 1)
            own_version[tr] = r + 1
            trained.append((tr, o, bt, bo))
        trained.sort(key=lambda p: -newest[p[0]].perf)
        k = math.floor(0.5 * len(trained))
        for tr, o, bt, bo in trained[:k]:
            coins[tr] += bt
            coins[o] += bo
            a = newest[tr]
            while a is not None:  # the authors' walk: +1 to each model's MO, down to model 0
                coins[a.mo] += 1
                a = a.parent
        if k:
            owners = [tr for tr, _, _, _ in trained[:k]]
    return rounds / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-rounds", type=int, default=5000)
    ap.add_argument("--large-rounds", type=int, default=1000)
    ap.add_argument("--huge-rounds", type=int, default=1000, help="rounds at N=100,000 (0: skip)")
    ap.add_argument(
        "--naive-rounds",
        type=int,
        default=1000,
        help="rounds of the straightforward reference at N=256 (0: skip)",
    )
    args = ap.parse_args()
    small, last = rate(256, args.small_rounds, ledger=False)
    print(
        f"N=256 x {args.small_rounds} rounds: {small:,.0f} rounds/s "
        f"({args.small_rounds / small:.1f} s), final gini {last['coins_gini']:.3f}"
    )
    with_ledger, _ = rate(256, args.small_rounds, ledger=True)
    print(f"N=256 x {args.small_rounds} rounds with the ledger: {with_ledger:,.0f} rounds/s")
    large, last = rate(10_000, args.large_rounds, ledger=False)
    print(
        f"N=10,000 x {args.large_rounds} rounds: {large:,.1f} rounds/s "
        f"({args.large_rounds / large:.1f} s), {last['num_trained']:.0f} models trained "
        f"in the last round"
    )
    huge = float("nan")
    if args.huge_rounds:
        huge, last = rate(100_000, args.huge_rounds, ledger=False)
        print(
            f"N=100,000 x {args.huge_rounds} rounds: {huge:,.1f} rounds/s "
            f"({args.huge_rounds / huge:.1f} s; target <= 60 s), {last['num_trained']:.0f} "
            f"models trained in the last round"
        )
    if args.naive_rounds:
        naive = naive_rate(256, args.naive_rounds)
        ours, _ = rate(256, args.naive_rounds, ledger=False)
        print(
            f"straightforward reference, N=256 x {args.naive_rounds} rounds: {naive:,.1f} "
            f"rounds/s; ours on the same: {ours:,.0f} rounds/s ({ours / naive:,.0f}x)"
        )
    print(f"rounds_per_s {small:.1f} {large:.1f} {huge:.1f}")


if __name__ == "__main__":
    main()
