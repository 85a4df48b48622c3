"""Progress lines for long runs (through ``logging``, so Hydra also keeps them in the run log)."""

from __future__ import annotations

import logging
import time

from derelayl.core.events import HopRecord, Observer, RoundRecord

log = logging.getLogger("derelayl")


class ConsoleProgress(Observer):
    def __init__(self, every: int = 1):
        self.every = max(int(every), 1)
        self.total_hops = 0
        self.rounds = 0
        self.started = time.perf_counter()

    def on_run_start(self, info):
        self.total_hops = int(info.get("total_hops", 0))
        self.rounds = int(info.get("rounds", 0))
        self.started = time.perf_counter()

    def on_hop(self, record: HopRecord):
        if record.hop % self.every and record.hop != self.total_hops:
            return
        test = "" if record.test_acc is None else f" test_acc {record.test_acc:.4f}"
        log.info("round %d/%d hop %d/%d participant %d: val_acc %.4f val_loss %.4f%s (%.1fs)",
                 record.round, self.rounds, record.hop, self.total_hops, record.participant,
                 record.val_acc, record.val_loss, test, time.perf_counter() - self.started)

    def on_round(self, record: RoundRecord):
        """Round-based algorithms (DeRelayL, FL) report their round metrics (round 1..R)."""
        m = record.metrics
        if not m or record.round % self.every and record.round != self.rounds:
            return
        shown = [f"{k} {m[k]:.4f}" for k in ("best_test_acc", "val_acc", "val_loss", "test_acc",
                                             "best_quality", "coins_gini",
                                             "version_share_latest") if m.get(k) is not None]
        if "num_trained" in m:
            shown.insert(0, f"owners {m['num_owners']:.0f} trained {m['num_trained']:.0f}")
        else:
            shown.insert(0, f"{record.hops} local trainings, {record.samples_seen} samples")
        log.info("round %d/%d: %s (%.1fs)", record.round, self.rounds, ", ".join(shown),
                 time.perf_counter() - self.started)
