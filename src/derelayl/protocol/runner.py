"""The DeRelayL runner: plays rounds, emits blocks, checkpoints and metrics to observers.

Each round's randomness comes from its own stream (seed, "derelayl", round), so a run resumed
from the checkpoint of round c replays rounds c, c+1, ... exactly as an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from derelayl.protocol.incentives import IncentiveScheme
from derelayl.protocol.ledger import Ledger
from derelayl.protocol.params import DeRelayLParams
from derelayl.protocol.population import ChurnParams
from derelayl.protocol.quality import PerformanceModel
from derelayl.protocol.round import play_round
from derelayl.protocol.state import EconomyState
from derelayl.sim.events import Observer, Observers, RoundRecord
from derelayl.sim.seeding import numpy_rng


class EconomyObserver(Observer):
    """Extra events of the DeRelayL runner (all optional)."""

    def on_blocks(self, blocks: list[dict[str, Any]]) -> None: ...

    def on_settled(
        self,
        state: EconomyState,
        perf_state: dict[str, Any],
        ledger: Ledger | None,
        history: list[dict[str, float]],
    ) -> None:
        """After every settled round (and its on_round): the place to persist a checkpoint."""


@dataclass
class DeRelayLResult:
    state: EconomyState
    history: list[dict[str, float]]
    rounds: int


class DeRelayLRunner:
    def __init__(
        self,
        params: DeRelayLParams,
        performance: PerformanceModel,
        seed: int,
        observers=(),
        keep_ledger: bool = True,
        incentive: IncentiveScheme | None = None,
        churn: ChurnParams | None = None,
    ):
        self.params, self.perf, self.seed = params, performance, int(seed)
        self.observers = Observers(observers)
        self.keep_ledger = keep_ledger
        self.incentive, self.churn = incentive, churn

    def run(
        self,
        state: EconomyState | None = None,
        ledger: Ledger | None = None,
        history: list[dict[str, float]] | None = None,
    ) -> DeRelayLResult:
        """Play from ``state`` (a fresh economy if None) to ``params.rounds`` rounds."""
        state = state or EconomyState.initial(
            self.params,
            gamma=getattr(self.incentive, "gamma", None)
            if getattr(self.incentive, "needs_decayed_lineage", False)
            else None,
        )
        ledger = ledger if ledger is not None else (Ledger() if self.keep_ledger else None)
        history = list(history or [])
        self.observers.on_run_start(
            {
                "rounds": self.params.rounds,
                "start_round": state.round,
                "participants": self.params.num_participants,
            }
        )
        while state.round < self.params.rounds:
            r = state.round
            outcome = play_round(
                self.params,
                state,
                self.perf,
                numpy_rng(self.seed, "derelayl", r),
                ledger,
                incentive=self.incentive,
                churn=self.churn,
                churn_rng=numpy_rng(self.seed, "churn", r),
            )
            # reported rounds count settled rounds (1..R), as the relay's and FL's do; blocks keep
            # the protocol's own numbering (round r trains version r + 1, from r = 0)
            row = {"round": r + 1, **outcome.metrics}
            history.append(row)
            for o in self.observers.observers:
                if isinstance(o, EconomyObserver):
                    o.on_blocks(outcome.blocks)
            self.observers.on_round(
                RoundRecord(
                    round=r + 1,
                    hops=int(outcome.metrics["num_trained"]),
                    samples_seen=state.samples_seen,
                    metrics=outcome.metrics,
                )
            )
            for o in self.observers.observers:
                if isinstance(o, EconomyObserver):
                    o.on_settled(state, self.perf.state_dict(), ledger, history)
            self.perf.release_unused()  # only once the checkpoint no longer needs old models
        result = DeRelayLResult(state=state, history=history, rounds=state.round)
        self.observers.on_run_end(result)
        return result
