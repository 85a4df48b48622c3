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
        m = record.metrics
        if "val_acc" not in m:  # hop-level algorithms report their hops instead
            return
        if record.round % self.every and record.round != self.rounds:
            return
        test = "" if m.get("test_acc") is None else f" test_acc {m['test_acc']:.4f}"
        log.info("round %d/~%d (%d local trainings, %d samples): val_acc %.4f val_loss %.4f%s "
                 "(%.1fs)", record.round, self.rounds, record.hops, record.samples_seen,
                 m["val_acc"], m["val_loss"], test, time.perf_counter() - self.started)
