"""Records the core emits while it runs, and the observer interface that receives them.

Trackers (MLflow, files, progress printing) are observers that live outside the core; the core
owns the metric step (hop or round index) and never logs itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HopRecord:
    """One participant's training hop, evaluated right after it."""

    hop: int  # 1-based global hop index: the metric step
    round: int  # 1-based
    participant: int
    samples: int  # sample passes of this hop (samples x local epochs)
    steps: int
    samples_seen: int  # cumulative sample passes of the run
    train_loss: float
    val_loss: float
    val_acc: float
    test_loss: float | None = None
    test_acc: float | None = None
    bytes: int = 0  # cumulative bytes moved by the run (core.profiles)
    sim_time_s: float | None = None  # simulated seconds since the start (None: no devices)
    failed: bool = False  # the hop's weights came back non-finite and were discarded


@dataclass(frozen=True)
class RoundRecord:
    round: int
    hops: int
    samples_seen: int
    metrics: dict[str, float] = field(default_factory=dict)


class Observer:
    """Receives the core's events; every method is optional."""

    def on_run_start(self, info: dict[str, Any]) -> None: ...

    def on_hop(self, record: HopRecord) -> None: ...

    def on_round(self, record: RoundRecord) -> None: ...

    def on_run_end(self, result: Any) -> None: ...


class Observers(Observer):
    """Fans every event out to a list of observers."""

    def __init__(self, observers=()):
        self.observers = list(observers)

    def on_run_start(self, info):
        for o in self.observers:
            o.on_run_start(info)

    def on_hop(self, record):
        for o in self.observers:
            o.on_hop(record)

    def on_round(self, record):
        for o in self.observers:
            o.on_round(record)

    def on_run_end(self, result):
        for o in self.observers:
            o.on_run_end(result)
