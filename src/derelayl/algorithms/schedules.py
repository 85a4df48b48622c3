"""Relay schedules: the order in which participants carry the baton within one round."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Schedule(Protocol):
    def order(self, round_index: int, sizes: Sequence[int], rng: np.random.Generator) -> list[int]:
        """Participant ids in hop order for one round (each participant exactly once)."""


class RingSchedule:
    """Fixed order 0, 1, ..., N-1 every round (cyclic weight transfer)."""

    def order(self, round_index, sizes, rng):
        return list(range(len(sizes)))


class RandomSchedule:
    """A fresh random permutation each round."""

    def order(self, round_index, sizes, rng):
        return [int(i) for i in rng.permutation(len(sizes))]


class LargestFirstSchedule:
    """Participants by data size, largest first (ties by id), every round."""

    def order(self, round_index, sizes, rng):
        return [int(i) for i in np.argsort(-np.asarray(sizes), kind="stable")]
