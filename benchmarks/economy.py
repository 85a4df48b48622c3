"""Rounds per second of the random-walk DeRelayL economy (the core, no files).

    python benchmarks/economy.py            # N=256 x 5,000 rounds and N=10,000 x 1,000 rounds

Each case is timed with the ledger off (pure simulation) and, for N=256, on (blocks built and
hashed in memory). The last line is ``rounds_per_s <N=256 rate> <N=10,000 rate>``.
"""

from __future__ import annotations

import argparse
import time

from derelayl.core.derelayl import DeRelayLRunner
from derelayl.core.economy import DeRelayLParams
from derelayl.core.performance import RandomWalkPerformance


def rate(n: int, rounds: int, ledger: bool) -> tuple[float, dict]:
    params = DeRelayLParams(num_participants=n, rounds=rounds)
    runner = DeRelayLRunner(params, RandomWalkPerformance(n, hashing=ledger), seed=0,
                            keep_ledger=ledger)
    t = time.perf_counter()
    result = runner.run()
    return rounds / (time.perf_counter() - t), result.history[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-rounds", type=int, default=5000)
    ap.add_argument("--large-rounds", type=int, default=1000)
    args = ap.parse_args()
    small, last = rate(256, args.small_rounds, ledger=False)
    print(f"N=256 x {args.small_rounds} rounds: {small:,.0f} rounds/s "
          f"({args.small_rounds / small:.1f} s), final gini {last['coins_gini']:.3f}")
    with_ledger, _ = rate(256, args.small_rounds, ledger=True)
    print(f"N=256 x {args.small_rounds} rounds with the ledger: {with_ledger:,.0f} rounds/s")
    large, last = rate(10_000, args.large_rounds, ledger=False)
    print(f"N=10,000 x {args.large_rounds} rounds: {large:,.1f} rounds/s "
          f"({args.large_rounds / large:.1f} s), {last['num_trained']:.0f} models trained "
          f"in the last round")
    print(f"rounds_per_s {small:.1f} {large:.1f}")


if __name__ == "__main__":
    main()
