"""Performance models of the DeRelayL economy: how good a trained model is.

``random_walk`` is the authors' abstraction (perf = parent's perf + N(1, 1), quality =
sigmoid(perf)), here with the protocol every model follows; ``trained``
(:mod:`derelayl.protocol.trained`) trains real models on each trainer's own data and scores them
on test cases drawn from the validation split. Both index models by the participant whose newest
model they are, which is all the protocol needs. This module needs no torch: a config is checked
against its parameters before torch is loaded.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from derelayl.protocol.behaviours import FREE_RIDER, LABEL_FLIP, NOISE
from derelayl.protocol.ledger import sha256_hex


class PerformanceModel(Protocol):
    """How trained models perform. Participants index their own newest model."""

    samples_seen: int

    def train(
        self,
        round_: int,
        parents: np.ndarray,
        trainers: np.ndarray,
        rng: np.random.Generator,
        dropped: int = 0,
        behaviours: np.ndarray | None = None,
    ) -> np.ndarray:
        """Each trainer trains the newest model of its parent (an owner): version round+1.
        ``dropped`` matched trainers received a model but returned nothing. Returns, per
        trainer, whether its model came back unchanged (identical to the parent)."""

    def test(
        self,
        round_: int,
        trainers: np.ndarray,
        parents: np.ndarray,
        num_cases: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
        """Scores (higher is better), tie-breaks (lower is better), digest of the test cases,
        and the parents' scores on the same cases."""

    def model_hashes(self, participants: np.ndarray) -> list[str]: ...

    def quality(self, scores: np.ndarray) -> np.ndarray:
        """Scores on the scale a participant values (accuracy, or sigmoid(perf))."""

    def samples_of(self, participants: np.ndarray) -> np.ndarray:
        """Sample passes each participant's last hop took (for its training cost)."""

    def round_metrics(self) -> dict[str, float]: ...

    def release_unused(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class RandomWalkPerformance:
    """perf(child) = perf(parent) + N(drift, noise); ranked by perf, quality = sigmoid(perf).

    Ranking uses perf itself, which orders models exactly as quality does but does not saturate
    once sigmoid(perf) rounds to 1.0 in float64 (perf > 37, i.e. after ~37 rounds).
    """

    def __init__(
        self,
        num_participants: int,
        genesis: int = 0,
        drift: float = 1.0,
        noise: float = 1.0,
        hashing: bool = True,
        samples: np.ndarray | None = None,
    ):
        # nominal sample passes per hop (training costs, equal-work comparisons)
        self.samples = np.ones(num_participants) if samples is None else np.asarray(samples, float)
        self.perf = np.zeros(num_participants)
        self.best = np.full(num_participants, -np.inf)
        self.best[genesis] = 0.0
        self.drift, self.noise = float(drift), float(noise)
        self.hashing = hashing
        self.hashes = [""] * num_participants
        if hashing:
            self.hashes[genesis] = sha256_hex("random-walk-genesis")
        self.samples_seen = 0

    def train(self, round_, parents, trainers, rng, dropped=0, behaviours=None):
        """Honest (and sybil) hops add N(drift, noise); a free-rider returns the parent as is;
        label flipping subtracts |N(drift, noise)|; noised weights fall N(3 drift, noise)."""
        step = rng.normal(self.drift, self.noise, len(trainers))
        unchanged = np.zeros(len(trainers), dtype=bool)
        if behaviours is not None:
            unchanged = behaviours == FREE_RIDER
            step[unchanged] = 0.0
            flip = behaviours == LABEL_FLIP
            step[flip] = -np.abs(step[flip])
            noisy = behaviours == NOISE
            step[noisy] -= 4 * self.drift
        self.perf[trainers] = self.perf[parents] + step
        self.best[trainers] = np.maximum(self.best[trainers], self.perf[trainers])
        self.samples_seen += int(self.samples[trainers[~unchanged]].sum())
        if self.hashing:
            hashes, perf = self.hashes, self.perf[trainers]  # (np.float64s: their repr is hashed)
            for t, o, same, p in zip(trainers.tolist(), parents.tolist(), unchanged.tolist(), perf):
                hashes[t] = hashes[o] if same else sha256_hex(f"{hashes[o]}:{t}:{round_}:{p!r}")
        return unchanged

    def test(self, round_, trainers, parents, num_cases, rng):
        return (
            self.perf[trainers].copy(),
            np.zeros(len(trainers)),
            sha256_hex(f"cases:{round_}"),
            self.perf[parents].copy(),
        )

    def quality(self, scores):
        return sigmoid(scores)

    def samples_of(self, participants):
        return self.samples[participants]

    def model_hashes(self, participants):
        return [self.hashes[i] for i in participants.tolist()]

    def round_metrics(self):
        held = np.isfinite(self.best)
        return {
            "best_quality": float(sigmoid(self.best[held]).max()),
            "mean_best_quality": float(sigmoid(self.best[held]).mean()),
        }

    def release_unused(self):
        pass

    def state_dict(self):
        return {
            "perf": self.perf.copy(),
            "best": self.best.copy(),
            "hashes": list(self.hashes),
            "samples_seen": self.samples_seen,
            "samples": self.samples.copy(),
        }

    def load_state_dict(self, state):
        self.perf, self.best = state["perf"].copy(), state["best"].copy()
        self.hashes, self.samples_seen = list(state["hashes"]), int(state["samples_seen"])
        self.samples = state["samples"].copy()
