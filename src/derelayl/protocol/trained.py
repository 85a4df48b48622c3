"""The ``trained`` performance model: real models trained on each trainer's own data, scored on
test cases drawn from the validation split, kept in a content-addressed model store."""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np
import torch

from derelayl.data.participants import ParticipantData
from derelayl.learning.batched import BatchedHop, StackedData, evaluate_many, stack_states
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.learning.hop import HopTrainer, weights_finite
from derelayl.protocol.behaviours import FREE_RIDER, HONEST, NOISE, add_weight_noise
from derelayl.protocol.ledger import sha256_hex
from derelayl.sim.devices import Devices, Meter, model_bytes
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import torch_generator


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of a state_dict (content address)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t  # numpy has no bfloat16
        h.update(raw.numpy().tobytes())
    return h.hexdigest()


class ModelStore(Protocol):
    """Content-addressed weights: ``put`` under their hash, ``retain`` drops everything else."""

    def put(self, key: str, state: dict[str, torch.Tensor]) -> None: ...

    def get(self, key: str) -> dict[str, torch.Tensor]: ...

    def retain(self, keys: set[str]) -> None: ...


class InMemoryModelStore:
    def __init__(self):
        self.models: dict[str, dict[str, torch.Tensor]] = {}

    def put(self, key, state):
        self.models[key] = state

    def get(self, key):
        return self.models[key]

    def retain(self, keys):
        for key in set(self.models) - set(keys):
            del self.models[key]

    def __contains__(self, key):
        return key in self.models


class TrainedPerformance:
    """Real hops on each trainer's own partition; score = accuracy on the round's test cases.

    Ties in accuracy are broken by loss. Every trained model is also evaluated on the whole
    validation split (each participant's best model is chosen by it, as is the run's best model)
    and, for reporting only, on the test split.

    Communication and simulated time (with ``devices``): every matched trainer downloads its
    owner's model, every returned model is uploaded once (to the commitment block's miner); the
    hops of a round run in parallel, so a round lasts as long as its slowest returned trainer's
    download + training + upload.

    With ``batched`` (a ``BatchedHop``), a round's trained hops run as one batched computation
    and its models are scored on the validation split and on the round's test cases in one pass
    each (``evaluate_many``): the same numbers to float32 rounding.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        hop: HopTrainer,
        participants: list[ParticipantData],
        validation: EvalSet,
        test: EvalSet,
        store: ModelStore,
        seed: int,
        genesis: int = 0,
        devices: Devices | None = None,
        noise_std: float = 1.0,
        batched: BatchedHop | None = None,
    ):
        self.model, self.hop, self.participants = model, hop, participants
        self.batched = batched
        self.names = [n for n, _ in model.named_parameters()]
        self.device = next(model.parameters()).device
        self.data = StackedData.of(participants, self.device) if batched is not None else None
        self.validation, self.test_set, self.store, self.seed = validation, test, store, seed
        n = len(participants)
        self.own: list[str | None] = [None] * n
        self.best: list[str | None] = [None] * n
        self.best_val = np.full(n, -1.0)
        self.best_test = np.full(n, np.nan)
        self.global_best: tuple[str, float, float] | None = None  # hash, val acc, test acc
        self.samples_seen = 0
        self.devices = devices
        self.noise_std = float(noise_std)
        self.last_samples = np.zeros(n)
        self.model_bytes = model_bytes(model)
        self.bytes = 0
        self.sim_time_s = 0.0
        key = self._put()
        self.genesis_key = key
        # every model's (parent, round, trainer): the lineage of the best model, for Shapley
        self.origin: dict[str, tuple[str, int, int]] = {}
        self.own[genesis] = key
        self._consider(genesis, key)

    def check_cases(self, num_cases: int) -> None:
        if num_cases > len(self.validation):
            raise ConfigError(
                f"derelayl.num_test_cases={num_cases} exceeds the validation split "
                f"({len(self.validation)} samples); use at most {len(self.validation)}"
            )

    def _put(self) -> str:
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        key = state_hash(state)
        self.store.put(key, state)
        return key

    def _consider(self, participant: int, key: str, val: tuple[float, float] | None = None) -> None:
        _, val_acc = val if val is not None else evaluate(self.model, self.validation)
        if val_acc > self.best_val[participant]:
            _, test_acc = evaluate(self.model, self.test_set)
            self.best[participant] = key
            self.best_val[participant], self.best_test[participant] = val_acc, test_acc
            if self.global_best is None or val_acc > self.global_best[1]:
                self.global_best = (key, val_acc, test_acc)

    def train(self, round_, parents, trainers, rng, dropped=0, behaviours=None):
        """A hop per trainer; a free-rider returns its parent unchanged, a `noise` adversary
        returns the parent's weights plus N(0, noise_std^2) instead of training.

        A hop whose weights (or validation loss) come back non-finite, a diverged optimizer's,
        is failed (``self.failed``): nothing is stored, the trainer keeps its previous model,
        and the protocol treats it as a model that never came back (it cannot win)."""
        self.bytes += self.model_bytes * (2 * len(trainers) + dropped)
        meter, seconds = Meter(self.devices), []  # the hops run in parallel: the slowest counts
        unchanged = np.zeros(len(trainers), dtype=bool)
        self.failed = np.zeros(len(trainers), dtype=bool)
        kinds = [HONEST] * len(trainers) if behaviours is None else [int(b) for b in behaviours]
        batch = self._train_batched(round_, parents, trainers, kinds)
        for i, (owner, trainer) in enumerate(zip(parents.tolist(), trainers.tolist())):
            kind = kinds[i]
            self.model.load_state_dict(self.store.get(self.own[owner]))
            samples, val = 0, None
            if kind == FREE_RIDER:
                unchanged[i] = True
                self.own[trainer] = self.own[owner]
                self.last_samples[trainer] = 0
                continue
            if kind == NOISE:
                add_weight_noise(
                    self.model.state_dict().values(), self.noise_std, self.seed, round_, trainer
                )
            elif i in batch:
                samples, val = self._take(batch, i)
            else:
                stats = self.hop(
                    self.model,
                    self.participants[trainer],
                    torch_generator(self.seed, "hop", round_, trainer),
                )
                samples = stats.samples
            self.samples_seen += samples
            self.last_samples[trainer] = samples
            seconds.append(meter.seconds(trainer, samples, 2 * self.model_bytes))
            if not weights_finite(self.model):
                val = None
            elif val is None:
                val = evaluate(self.model, self.validation)
            if val is None or not np.isfinite(val[0]):
                self.failed[i] = True
                continue
            key = self._put()
            self.origin.setdefault(key, (self.own[owner], int(round_), int(trainer)))
            self.own[trainer] = key
            self._consider(trainer, key, val)
        self.sim_time_s += max(seconds, default=0.0)
        return unchanged

    def _train_batched(self, round_, parents, trainers, kinds) -> dict:
        """The round's trained hops as one batched computation (None of them without
        ``batched``), and their models' validation scores in one pass:
        ``{i: (stacked, k, stats, validation loss and accuracy)}``."""
        if self.batched is None:
            return {}
        assert self.data is not None  # stacked in __init__ with batched
        rows = [i for i, kind in enumerate(kinds) if kind not in (FREE_RIDER, NOISE)]
        if not rows:
            return {}
        owners, who = parents.tolist(), trainers.tolist()
        stacked = stack_states(
            [self.store.get(self.own[owners[i]]) for i in rows], self.names, self.device
        )
        stats = self.batched(
            self.model,
            stacked,
            self.data,
            [who[i] for i in rows],
            [torch_generator(self.seed, "hop", round_, who[i]) for i in rows],
        )
        losses, accs = evaluate_many(self.model, stacked, self.validation.x, self.validation.y)
        return {
            i: (stacked, k, stats[k], (float(losses[k]), float(accs[k])))
            for k, i in enumerate(rows)
        }

    def _take(self, batch: dict, i: int) -> tuple[int, tuple[float, float]]:
        """Hop ``i``'s batched result into the model (which holds its parent): its samples and
        validation score."""
        stacked, k, stats, val = batch[i]
        with torch.no_grad():
            for p, t in zip(self.model.parameters(), stacked):
                p.copy_(t[k])
        return stats.samples, val

    def test(self, round_, trainers, parents, num_cases, rng):
        cases = np.sort(rng.choice(len(self.validation), size=num_cases, replace=False))
        digest = sha256_hex(
            cases.astype(np.int64).tobytes()
            + self.validation.y[cases].cpu().numpy().astype(np.int64).tobytes()
        )
        subset = self.validation.subset(torch.as_tensor(cases, device=self.validation.x.device))
        cache: dict[str, tuple[float, float]] = {}
        if self.batched is not None:  # every model of the round in one pass
            keys = list(
                dict.fromkeys(
                    [self.own[t] for t in trainers.tolist()]
                    + [self.own[o] for o in parents.tolist()]
                )
            )
            if keys:
                stacked = stack_states([self.store.get(k) for k in keys], self.names, self.device)
                case_losses, case_accs = evaluate_many(self.model, stacked, subset.x, subset.y)
                cache.update(
                    {
                        k: (float(lo), float(a))
                        for k, lo, a in zip(keys, case_losses.tolist(), case_accs.tolist())
                    }
                )

        def score(key: str) -> tuple[float, float]:
            if key not in cache:
                self.model.load_state_dict(self.store.get(key))
                cache[key] = evaluate(self.model, subset)
            return cache[key]

        scores, losses = np.zeros(len(trainers)), np.zeros(len(trainers))
        for i, trainer in enumerate(trainers.tolist()):
            losses[i], scores[i] = score(self.own[trainer])
        parent_scores = np.array([score(self.own[o])[1] for o in parents.tolist()])
        return scores, losses, digest, parent_scores

    def quality(self, scores):
        return np.asarray(scores, dtype=np.float64)

    def samples_of(self, participants):
        return self.last_samples[participants]

    def model_hashes(self, participants):
        return [self.own[i] for i in participants.tolist()]

    def round_metrics(self):
        held = self.best_val >= 0
        gb = self.global_best
        assert gb is not None  # set by __init__ (the genesis model)
        # val_acc / test_acc: those of the run's model, the best so far by validation (what the
        # relay and FL report as theirs), so every method's history has the same columns
        return {
            "best_val_acc": float(gb[1]),
            "best_test_acc": float(gb[2]),
            "val_acc": float(gb[1]),
            "test_acc": float(gb[2]),
            "mean_participant_best_test_acc": float(np.nanmean(self.best_test[held])),
            "bytes": float(self.bytes),
            "sim_time_s": self.sim_time_s,
        }

    def lineage(self, key: str | None = None) -> list[tuple[int, int]]:
        """The hops ``(round, trainer)`` that made a model (default: the run's best), oldest
        first."""
        assert self.global_best is not None  # set by __init__ (the genesis model)
        key = key or self.global_best[0]
        hops = []
        while key in self.origin:
            parent, round_, trainer = self.origin[key]
            hops.append((round_, trainer))
            key = parent
        return hops[::-1]

    def genesis_model(self) -> torch.nn.Module:
        self.model.load_state_dict(self.store.get(self.genesis_key))
        return self.model

    def live_keys(self) -> set[str]:
        keys = {k for k in self.own if k} | {k for k in self.best if k} | {self.genesis_key}
        if self.global_best:
            keys.add(self.global_best[0])
        return keys

    def release_unused(self):
        self.store.retain(self.live_keys())

    def best_model(self) -> torch.nn.Module:
        assert self.global_best is not None  # set by __init__ (the genesis model)
        self.model.load_state_dict(self.store.get(self.global_best[0]))
        return self.model

    def state_dict(self):
        return {
            "own": list(self.own),
            "best": list(self.best),
            "best_val": self.best_val.copy(),
            "best_test": self.best_test.copy(),
            "global_best": self.global_best,
            "samples_seen": self.samples_seen,
            "live_keys": sorted(self.live_keys()),
            "bytes": self.bytes,
            "sim_time_s": self.sim_time_s,
            "last_samples": self.last_samples.copy(),
            "origin": dict(self.origin),
            "genesis_key": self.genesis_key,
        }

    def load_state_dict(self, state):
        self.own, self.best = list(state["own"]), list(state["best"])
        self.best_val, self.best_test = state["best_val"].copy(), state["best_test"].copy()
        self.global_best, self.samples_seen = state["global_best"], int(state["samples_seen"])
        self.bytes, self.sim_time_s = int(state["bytes"]), float(state["sim_time_s"])
        self.last_samples = state["last_samples"].copy()
        self.origin, self.genesis_key = dict(state["origin"]), state["genesis_key"]
