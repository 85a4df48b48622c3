"""Progress lines for long runs (through ``logging``, so Hydra also keeps them in the run log)."""

from __future__ import annotations

import logging
import time

from derelayl.sim.events import HopRecord, Observer, RoundRecord

log = logging.getLogger("derelayl")
ROUND_KEYS = (
    "best_test_acc",
    "val_acc",
    "val_loss",
    "test_acc",
    "best_quality",
    "coins_gini",
    "version_share_latest",
)


class ConsoleProgress(Observer):
    """``round r/R`` (``hop h/H``) lines every ``every`` rounds (hops) and always the last one.

    A run whose length a sample budget decides (FL baselines, local, centralized) does not know
    its last round in advance: its lines count the samples against the budget instead. Rounds
    reported before the run starts (a resumed run replaying its settled rounds to the trackers)
    are not printed: the resume line says how many there were.
    """

    def __init__(self, every: int = 1):
        self.every = max(int(every), 1)
        self.total_hops = 0
        self.rounds = 0
        self.budget: int | None = None
        self.running = False
        self.pending: RoundRecord | None = None  # the latest round, until it is printed
        self.started = time.perf_counter()

    def on_run_start(self, info):
        self.total_hops = int(info.get("total_hops") or 0)
        self.rounds = int(info.get("rounds") or 0)
        self.budget = info.get("sample_budget") if not self.rounds else None
        self.running = True
        self.started = time.perf_counter()

    def on_hop(self, record: HopRecord):
        if record.hop % self.every and record.hop != self.total_hops:
            return
        test = "" if record.test_acc is None else f" test_acc {record.test_acc:.4f}"
        log.info(
            "round %d/%d hop %d/%d participant %d: val_acc %.4f val_loss %.4f%s (%.1fs)",
            record.round,
            self.rounds,
            record.hop,
            self.total_hops,
            record.participant,
            record.val_acc,
            record.val_loss,
            test,
            time.perf_counter() - self.started,
        )

    def on_round(self, record: RoundRecord):
        """Round-based algorithms (DeRelayL, FL) report their round metrics (round 1..R)."""
        if not self.running or not record.metrics:
            return
        self.pending = record
        if record.round % self.every and record.round != self.rounds:
            return
        self._print(record)

    def on_run_end(self, result):
        if self.running and self.pending is not None:  # a budgeted run's last round
            self._print(self.pending)
        self.running = False

    def _print(self, record: RoundRecord) -> None:
        m = record.metrics
        keys = [k for k in ROUND_KEYS if m.get(k) is not None]
        if "best_test_acc" in keys:  # DeRelayL: the run's model is the best so far
            keys = [k for k in keys if k not in ("val_acc", "test_acc")]
        shown = [f"{k} {m[k]:.4f}" for k in keys]
        if "num_trained" in m:
            shown.insert(0, f"owners {m['num_owners']:.0f} trained {m['num_trained']:.0f}")
        else:
            shown.insert(0, f"{record.hops} local trainings, {record.samples_seen} samples")
        if self.rounds:
            where = f"round {record.round}/{self.rounds}"
        elif self.budget:
            where = f"round {record.round} ({record.samples_seen}/{self.budget} budgeted samples)"
        else:
            where = f"round {record.round}"
        log.info("%s: %s (%.1fs)", where, ", ".join(shown), time.perf_counter() - self.started)
        self.pending = None
