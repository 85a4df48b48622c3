"""The two reference points around collaborative training.

- ``local``: every participant trains its own model on its own data and nothing else (the lower
  bound collaboration must beat); reported as the mean, worst and best participant on the shared
  validation and test sets.
- ``centralized``: one model on the pooled training data (the upper bound; it needs every
  participant to hand over its raw data, which is what the collaborative methods avoid).

Both use the product's hop, the same sample budget and the same cost axes as the relay and FL.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from derelayl.algorithms.rounds import (
    RoundsResult,
    check_schedule,
    estimate_rounds,
    evaluate_model,
    finished,
    make_round_record,
    run_length,
)
from derelayl.data.participants import ParticipantData
from derelayl.learning.batched import BatchedHop, StackedData, evaluate_many
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.learning.hop import HopStats, HopTrainer
from derelayl.sim.devices import Devices, Meter, tensor_bytes
from derelayl.sim.events import Observer, Observers, RoundRecord
from derelayl.sim.seeding import torch_generator


class _BudgetedRunner:
    """Shared set-up: a hop trainer, rounds or a sample budget, devices, observers."""

    def __init__(
        self,
        hop_trainer: HopTrainer,
        *,
        seed: int,
        rounds: int | None = None,
        sample_budget: int | None = None,
        eval_every: int = 1,
        devices: Devices | None = None,
        observers: list[Observer] | tuple = (),
        batched: BatchedHop | None = None,
    ):
        check_schedule(rounds, sample_budget, eval_every)
        self.hop_trainer = hop_trainer
        self.seed = int(seed)
        self.rounds = rounds
        self.sample_budget = sample_budget
        self.eval_every = int(eval_every)
        self.devices = devices
        self.observers = Observers(observers)
        self.batched = batched  # local: every participant's hop as one batched computation
        self._resume: dict | None = None
        self._live: dict | None = None
        self._data: StackedData | None = None

    def state_dict(self) -> dict:
        """The run after its last finished round (for a checkpoint)."""
        live = self._live
        if live is None:
            raise RuntimeError("state_dict() is available once a round has finished")
        return {
            "round": live["rnd"],
            "done": live["done"],
            "hops": live["hops"],
            "samples_seen": live["samples_seen"],
            "sim_time_s": live["sim"],
            "models": [
                {k: v.detach().clone() for k, v in m.state_dict().items()} for m in live["models"]
            ],
            "history": [
                {
                    "round": r.round,
                    "hops": r.hops,
                    "samples_seen": r.samples_seen,
                    "metrics": dict(r.metrics),
                }
                for r in live["history"]
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the next ``run`` after the round ``state`` was taken at."""
        self._resume = state

    def _restore(self, models: list[torch.nn.Module]):
        """(rnd, done, hops, samples_seen, sim, history) of a resumed run, models restored."""
        saved, self._resume = self._resume, None
        assert saved is not None  # called when a run resumes only
        for m, weights in zip(models, saved["models"]):
            m.load_state_dict(weights)
        return (
            saved["round"],
            saved["done"],
            saved["hops"],
            saved["samples_seen"],
            saved["sim_time_s"],
            [RoundRecord(**row) for row in saved["history"]],
        )


class LocalRunner(_BudgetedRunner):
    """Each round every participant trains its own model once (in parallel, no messages)."""

    def run(
        self,
        model: torch.nn.Module,
        participants: list[ParticipantData],
        validation: EvalSet,
        test: EvalSet,
    ) -> RoundsResult:
        models = [copy.deepcopy(model) for _ in participants]
        total = sum(len(p) for p in participants)
        expected = estimate_rounds(
            self.rounds, self.sample_budget, total * getattr(self.hop_trainer, "local_epochs", 1)
        )
        self.observers.on_run_start(
            {
                "total_hops": expected * len(participants),
                **run_length(self.rounds, self.sample_budget, expected),
                "participants": len(participants),
            }
        )
        history: list[RoundRecord] = []
        rnd = hops = samples_seen = 0
        meter = Meter(self.devices)
        done = False
        if self._resume is not None:
            rnd, done, hops, samples_seen, meter.sim_time_s, history = self._restore(models)
        sim = meter.sim_time_s
        while not done:
            rnd += 1
            losses, seconds, before = [], [], samples_seen
            for pid, stats in enumerate(self.train_all(models, participants, rnd)):
                hops += 1
                samples_seen += stats.samples
                losses.append(stats.train_loss)
                seconds.append(meter.seconds(pid, stats.samples))
            meter.wait_for_slowest(seconds)  # every participant trains in parallel
            sim = meter.sim_time_s
            done = finished(
                rnd, samples_seen, self.rounds, self.sample_budget, samples_seen - before
            )
            with_test = rnd % self.eval_every == 0 or done
            metrics = {"train_loss": float(np.mean(losses))}
            metrics.update(self.summarize(self.evaluate_all(models, validation), "val"))
            if with_test:
                metrics.update(self.summarize(self.evaluate_all(models, test), "test"))
            record = make_round_record(rnd, hops, samples_seen, 0, sim, metrics)
            history.append(record)
            self._live = {
                "rnd": rnd,
                "done": done,
                "hops": hops,
                "samples_seen": samples_seen,
                "sim": sim,
                "models": models,
                "history": history,
            }
            self.observers.on_round(record)
        result = RoundsResult(
            model=None,
            history=tuple(history),
            rounds=rnd,
            hops=hops,
            samples_seen=samples_seen,
            bytes=0,
            sim_time_s=sim,
            metrics=dict(history[-1].metrics),
        )
        self.observers.on_run_end(result)
        return result

    def train_all(
        self, models: list[torch.nn.Module], participants: list[ParticipantData], rnd: int
    ) -> list[HopStats]:
        """Every participant's hop on its own model: one after another, or batched."""
        gens = [torch_generator(self.seed, "hop", rnd, pid) for pid in range(len(models))]
        if self.batched is None:
            return [
                self.hop_trainer(net, data, gen)
                for net, data, gen in zip(models, participants, gens)
            ]
        if self._data is None:
            self._data = StackedData.of(participants, next(models[0].parameters()).device)
        stacked = [
            torch.stack([p.detach() for p in ps])
            for ps in zip(*(list(m.parameters()) for m in models))
        ]
        stats = self.batched(models[0], stacked, self._data, list(range(len(models))), gens)
        with torch.no_grad():
            for k, m in enumerate(models):
                for p, t in zip(m.parameters(), stacked):
                    p.copy_(t[k])
        return stats

    def evaluate_all(
        self, models: list[torch.nn.Module], data: EvalSet
    ) -> list[tuple[float, float]]:
        """(loss, accuracy) of every participant's model: one by one, or in one pass."""
        if self.batched is None:
            return [evaluate(net, data) for net in models]
        stacked = [
            torch.stack([p.detach() for p in ps])
            for ps in zip(*(list(m.parameters()) for m in models))
        ]
        losses, accs = evaluate_many(models[0], stacked, data.x, data.y)
        return list(zip(losses.tolist(), accs.tolist()))

    @staticmethod
    def summarize(scores: list[tuple[float, float]], split: str) -> dict[str, float]:
        """Mean over participants under the usual names, plus the worst and best participant."""
        loss = np.array([s[0] for s in scores])
        acc = np.array([s[1] for s in scores])
        return {
            f"{split}_loss": float(loss.mean()),
            f"{split}_acc": float(acc.mean()),
            f"{split}_acc_worst": float(acc.min()),
            f"{split}_acc_best": float(acc.max()),
        }


class CentralizedRunner(_BudgetedRunner):
    """One model on the pooled data; every participant first uploads its raw data."""

    def run(
        self,
        model: torch.nn.Module,
        participants: list[ParticipantData],
        validation: EvalSet,
        test: EvalSet,
    ) -> RoundsResult:
        model = copy.deepcopy(model)
        pooled = ParticipantData(
            -1, torch.cat([p.x for p in participants]), torch.cat([p.y for p in participants])
        )
        upload = [tensor_bytes((p.x, p.y)) for p in participants]
        meter = Meter(self.devices, nbytes=sum(upload))
        # the uploads run in parallel: wait for the slowest
        meter.wait_for_slowest([meter.seconds(i, 0, b) for i, b in enumerate(upload)])
        nbytes, sim = meter.bytes, meter.sim_time_s
        expected = estimate_rounds(
            self.rounds,
            self.sample_budget,
            len(pooled) * getattr(self.hop_trainer, "local_epochs", 1),
        )
        self.observers.on_run_start(
            {
                "total_hops": expected,
                **run_length(self.rounds, self.sample_budget, expected),
                "participants": len(participants),
            }
        )
        history: list[RoundRecord] = []
        rnd = samples_seen = 0
        done = False
        if self._resume is not None:
            rnd, done, _, samples_seen, sim, history = self._restore([model])
        while not done:
            rnd += 1
            gen = torch_generator(self.seed, "hop", rnd, "pooled")
            stats = self.hop_trainer(model, pooled, gen)
            samples_seen += stats.samples
            if sim is not None:  # the server trains at its own speed
                assert self.devices is not None  # simulated time comes with devices
                sim += stats.samples / self.devices.server_speed
            done = finished(rnd, samples_seen, self.rounds, self.sample_budget, stats.samples)
            metrics = {"train_loss": stats.train_loss}
            metrics.update(
                evaluate_model(model, validation, test, rnd % self.eval_every == 0 or done)
            )
            record = make_round_record(rnd, rnd, samples_seen, nbytes, sim, metrics)
            history.append(record)
            self._live = {
                "rnd": rnd,
                "done": done,
                "hops": rnd,
                "samples_seen": samples_seen,
                "sim": sim,
                "models": [model],
                "history": history,
            }
            self.observers.on_round(record)
        result = RoundsResult(
            model=model,
            history=tuple(history),
            rounds=rnd,
            hops=rnd,
            samples_seen=samples_seen,
            bytes=nbytes,
            sim_time_s=sim,
            metrics=dict(history[-1].metrics),
        )
        self.observers.on_run_end(result)
        return result
