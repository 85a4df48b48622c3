"""The sequential relay: one baton (model) carried by every participant in turn.

This is cyclic weight transfer / sequential FL, and the one-baton special case of DeRelayL.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from derelayl.algorithms.schedules import Schedule
from derelayl.data.participants import ParticipantData
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.learning.hop import HopTrainer, weights_finite
from derelayl.sim.devices import Devices, Meter, model_bytes
from derelayl.sim.errors import ConfigError
from derelayl.sim.events import HopRecord, Observer, Observers, RoundRecord
from derelayl.sim.seeding import numpy_rng, torch_generator


@dataclass(frozen=True)
class RelayResult:
    model: torch.nn.Module
    history: tuple[HopRecord, ...]
    hops: int
    rounds: int
    samples_seen: int
    val_loss: float
    val_acc: float
    test_loss: float
    test_acc: float
    bytes: int = 0
    sim_time_s: float | None = None


class RelayRunner:
    """Runs ``rounds`` rounds; in each, every participant trains the baton once.

    A hop moves one model (to the participant that trains it) and waits for that participant
    alone: with ``devices`` it costs ``model bytes / bandwidth + samples / speed`` simulated
    seconds, and hops follow one another.

    A hop whose weights come back non-finite (a diverging optimizer: ``lr=1e10``) is discarded:
    the baton goes on with the weights from before it, and the hop is recorded as failed.

    Resume: :meth:`state_dict` (called by an observer at a round's end) is the run after its
    last finished round; :meth:`load_state_dict` before :meth:`run` continues from there, and
    every round's randomness has its own stream, so the numbers are those of an uninterrupted
    run.
    """

    def __init__(
        self,
        hop_trainer: HopTrainer,
        schedule: Schedule,
        rounds: int,
        seed: int,
        eval_every: int = 1,
        observers: list[Observer] | tuple = (),
        devices: Devices | None = None,
    ):
        if rounds < 1:
            raise ConfigError(f"algorithm.rounds must be >= 1 (got {rounds})")
        if eval_every < 1:
            raise ConfigError(f"algorithm.eval_every must be >= 1 (got {eval_every})")
        self.hop_trainer = hop_trainer
        self.schedule = schedule
        self.rounds = int(rounds)
        self.seed = int(seed)
        self.eval_every = int(eval_every)
        self.observers = Observers(observers)
        self.devices = devices
        self._resume: dict | None = None
        self._live: dict | None = None

    def state_dict(self) -> dict:
        """The run after its last finished round (model weights, counters, history)."""
        live = self._live
        if live is None:
            raise RuntimeError("state_dict() is available once a round has finished")
        return {
            "round": live["round"],
            "hop": live["hop"],
            "samples_seen": live["samples_seen"],
            "bytes": live["bytes"],
            "sim_time_s": live["sim"],
            "model": {k: v.detach().clone() for k, v in live["model"].state_dict().items()},
            "history": [dataclasses.asdict(r) for r in live["history"]],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the next :meth:`run` after the round ``state`` was taken at."""
        self._resume = state

    def run(
        self,
        model: torch.nn.Module,
        participants: list[ParticipantData],
        validation: EvalSet,
        test: EvalSet,
    ) -> RelayResult:
        model = copy.deepcopy(model)
        sizes = [len(p) for p in participants]
        total_hops = self.rounds * len(participants)
        self.observers.on_run_start(
            {"total_hops": total_hops, "rounds": self.rounds, "participants": len(participants)}
        )
        history: list[HopRecord] = []
        hop, samples_seen = 0, 0
        per_hop_bytes = model_bytes(model)
        meter = Meter(self.devices)
        first = 1
        if self._resume is not None:
            state, self._resume = self._resume, None
            model.load_state_dict(state["model"])
            history = [HopRecord(**row) for row in state["history"]]
            hop, samples_seen, meter.bytes = state["hop"], state["samples_seen"], state["bytes"]
            meter.sim_time_s, first = state["sim_time_s"], state["round"] + 1
        for rnd in range(first, self.rounds + 1):
            order = self.schedule.order(rnd, sizes, numpy_rng(self.seed, "schedule", rnd))
            for pid in order:
                hop += 1
                before = [t.detach().clone() for t in model.state_dict().values()]
                stats = self.hop_trainer(
                    model, participants[pid], torch_generator(self.seed, "hop", rnd, pid)
                )
                failed = not weights_finite(model)
                if failed:  # a diverged hop is discarded: the baton keeps its previous weights
                    with torch.no_grad():
                        for t, b in zip(model.state_dict().values(), before):
                            t.copy_(b)
                samples_seen += stats.samples
                meter.move(per_hop_bytes)  # the baton travels to the next holder ...
                meter.wait(meter.seconds(pid, stats.samples, per_hop_bytes))  # ... one by one
                val_loss, val_acc = evaluate(model, validation)
                test_loss = test_acc = None
                if hop % self.eval_every == 0 or hop == total_hops:
                    test_loss, test_acc = evaluate(model, test)
                record = HopRecord(
                    hop=hop,
                    round=rnd,
                    participant=pid,
                    samples=stats.samples,
                    steps=stats.steps,
                    samples_seen=samples_seen,
                    train_loss=stats.train_loss,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    test_loss=test_loss,
                    test_acc=test_acc,
                    bytes=meter.bytes,
                    sim_time_s=meter.sim_time_s,
                    failed=failed,
                )
                history.append(record)
                self.observers.on_hop(record)
            self._live = {
                "round": rnd,
                "hop": hop,
                "samples_seen": samples_seen,
                "bytes": meter.bytes,
                "sim": meter.sim_time_s,
                "model": model,
                "history": history,
            }
            self.observers.on_round(RoundRecord(round=rnd, hops=hop, samples_seen=samples_seen))
        result = self._result(model, history, samples_seen, meter)
        self.observers.on_run_end(result)
        return result

    def _result(
        self, model: torch.nn.Module, history: list[HopRecord], samples_seen: int, meter: Meter
    ) -> RelayResult:
        last = history[-1]
        # the last hop (hop == total_hops: a schedule orders every participant once a round)
        # is always evaluated on the test split
        assert last.test_loss is not None and last.test_acc is not None
        return RelayResult(
            model=model,
            history=tuple(history),
            hops=last.hop,
            rounds=self.rounds,
            samples_seen=samples_seen,
            val_loss=last.val_loss,
            val_acc=last.val_acc,
            test_loss=last.test_loss,
            test_acc=last.test_acc,
            bytes=meter.bytes,
            sim_time_s=meter.sim_time_s,
        )
