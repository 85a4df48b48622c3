"""Non-IID partitioners (definitions follow NIID-Bench, Li et al. ICDE 2022).

A partitioner maps the training labels to one index set per participant. Every sample goes to
exactly one participant, and the result depends only on the labels and the generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from derelayl.sim.errors import ConfigError


@dataclass(frozen=True)
class Partition:
    """Index sets into the training split, one per participant (disjoint, complete)."""

    indices: tuple[np.ndarray, ...]
    # Per-participant Gaussian feature-noise std (feature_noise skew); None elsewhere.
    noise_std: tuple[float, ...] | None = None

    @property
    def num_participants(self) -> int:
        return len(self.indices)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(ix) for ix in self.indices], dtype=np.int64)

    def label_histogram(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """Matrix (participants x classes) of sample counts."""
        return np.stack([np.bincount(labels[ix], minlength=num_classes) for ix in self.indices])


def _check_feasible(num_samples: int, num_participants: int, min_samples: int = 1) -> None:
    if num_participants < 1:
        raise ConfigError(f"num_participants must be >= 1 (got {num_participants})")
    if num_participants * min_samples > num_samples:
        raise ConfigError(
            f"num_participants={num_participants} with at least {min_samples} sample(s) each "
            f"needs {num_participants * min_samples} training samples, the dataset has "
            f"{num_samples}; "
            f"use fewer participants or more data"
        )


def _sorted(parts: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


class IIDPartitioner:
    """Uniformly random split into (almost) equal sizes."""

    def split(
        self, labels: np.ndarray, num_participants: int, rng: np.random.Generator
    ) -> Partition:
        _check_feasible(len(labels), num_participants)
        perm = rng.permutation(len(labels))
        return Partition(_sorted(np.array_split(perm, num_participants)))


class DirichletPartitioner:
    """Label skew p_k ~ Dir_N(alpha) per class (NIID-Bench).

    Participants already holding more than |D|/N samples get no more of later classes, and the
    draw is repeated until every participant holds at least ``min_samples``.
    """

    def __init__(self, alpha: float = 0.5, min_samples: int = 10, max_attempts: int = 1000):
        if not alpha > 0:
            raise ConfigError(f"partition.alpha must be > 0 (got {alpha})")
        if min_samples < 1:
            raise ConfigError(f"partition.min_samples must be >= 1 (got {min_samples})")
        self.alpha = float(alpha)
        self.min_samples = int(min_samples)
        self.max_attempts = int(max_attempts)

    def split(
        self, labels: np.ndarray, num_participants: int, rng: np.random.Generator
    ) -> Partition:
        n, big_n = len(labels), num_participants
        _check_feasible(n, big_n, self.min_samples)
        classes = np.unique(labels)
        for _ in range(self.max_attempts):
            parts: list[list[np.ndarray]] = [[] for _ in range(big_n)]
            sizes = np.zeros(big_n, dtype=np.int64)
            for k in classes:
                idx_k = rng.permutation(np.flatnonzero(labels == k))
                p = rng.dirichlet(np.full(big_n, self.alpha))
                p = p * (sizes < n / big_n)
                if p.sum() == 0:  # everybody is full: fall back to the raw draw
                    p = rng.dirichlet(np.full(big_n, self.alpha))
                p = p / p.sum()
                cuts = (np.cumsum(p) * len(idx_k)).astype(np.int64)[:-1]
                for j, chunk in enumerate(np.split(idx_k, cuts)):
                    parts[j].append(chunk)
                    sizes[j] += len(chunk)
            if sizes.min() >= self.min_samples:
                return Partition(_sorted([np.concatenate(p) for p in parts]))
        raise ConfigError(
            f"dirichlet partition (alpha={self.alpha}) found no split giving each of "
            f"{big_n} participants >= {self.min_samples} samples in {self.max_attempts} draws; "
            f"lower partition.min_samples, raise partition.alpha or use fewer participants"
        )


class ShardsPartitioner:
    """Pathological label skew: exactly k classes per participant (NIID-Bench #C=k).

    Participant i holds class ``i mod L`` plus k-1 others drawn at random (classes nobody holds
    yet are preferred, so every class is held and every sample assigned); each class's samples
    are split evenly among its holders.
    """

    def __init__(self, classes_per_participant: int = 2):
        if classes_per_participant < 1:
            raise ConfigError(
                f"partition.classes_per_participant must be >= 1 (got {classes_per_participant})"
            )
        self.k = int(classes_per_participant)

    def split(
        self, labels: np.ndarray, num_participants: int, rng: np.random.Generator
    ) -> Partition:
        classes = np.unique(labels)
        num_classes = len(classes)
        if self.k > num_classes:
            raise ConfigError(
                f"partition.classes_per_participant={self.k} exceeds the dataset's "
                f"{num_classes} classes; allowed: 1..{num_classes}"
            )
        if num_participants * self.k < num_classes:
            raise ConfigError(
                f"shards partition: {num_participants} participants x {self.k} classes cannot "
                f"cover all {num_classes} classes; raise num_participants or "
                f"partition.classes_per_participant"
            )
        _check_feasible(len(labels), num_participants)
        held = np.zeros(num_classes, dtype=np.int64)
        mine = [[i % num_classes] for i in range(num_participants)]
        for m in mine:  # every participant's own class first, so extras fill the gaps
            held[m[0]] += 1
        for m in mine:
            while len(m) < self.k:
                free = [c for c in range(num_classes) if c not in m]
                unheld = [c for c in free if held[c] == 0]
                c = int(rng.choice(unheld if unheld else free))
                m.append(c)
                held[c] += 1
        holders: list[list[int]] = [[] for _ in range(num_classes)]
        for i, m in enumerate(mine):
            for c in m:
                holders[c].append(i)
        parts: list[list[np.ndarray]] = [[] for _ in range(num_participants)]
        for c, cls in enumerate(classes):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            for holder, chunk in zip(holders[c], np.array_split(idx, len(holders[c]))):
                parts[holder].append(chunk)
        out = [np.concatenate(p) for p in parts]
        if min(len(p) for p in out) == 0:
            raise ConfigError(
                f"shards partition left a participant without samples "
                f"({num_participants} participants, {len(labels)} samples); use fewer participants"
            )
        return Partition(_sorted(out))


class QuantitySkewPartitioner:
    """Quantity skew: sizes from Dir_N(beta) or a log-normal(0, sigma), IID samples in them.

    Each participant first gets ``min_samples`` and the rest is shared by the drawn
    proportions, so the draw never has to be repeated.
    """

    def __init__(
        self,
        distribution: str = "dirichlet",
        beta: float = 0.5,
        sigma: float = 1.0,
        min_samples: int = 10,
    ):
        if distribution not in ("dirichlet", "lognormal"):
            raise ConfigError(
                f"partition.distribution must be one of dirichlet, lognormal (got {distribution!r})"
            )
        if distribution == "dirichlet" and not beta > 0:
            raise ConfigError(f"partition.beta must be > 0 (got {beta})")
        if distribution == "lognormal" and not sigma > 0:
            raise ConfigError(f"partition.sigma must be > 0 (got {sigma})")
        if min_samples < 1:
            raise ConfigError(f"partition.min_samples must be >= 1 (got {min_samples})")
        self.distribution, self.beta, self.sigma = distribution, float(beta), float(sigma)
        self.min_samples = int(min_samples)

    def split(
        self, labels: np.ndarray, num_participants: int, rng: np.random.Generator
    ) -> Partition:
        n, big_n = len(labels), num_participants
        _check_feasible(n, big_n, self.min_samples)
        if self.distribution == "dirichlet":
            p = rng.dirichlet(np.full(big_n, self.beta))
        else:
            w = rng.lognormal(0.0, self.sigma, size=big_n)
            p = w / w.sum()
        rest = n - big_n * self.min_samples
        extra = np.floor(p * rest).astype(np.int64)
        # hand out the rounding remainder to the largest fractional parts
        remainder = rest - extra.sum()
        extra[np.argsort(-(p * rest - extra), kind="stable")[:remainder]] += 1
        sizes = extra + self.min_samples
        perm = rng.permutation(n)
        return Partition(_sorted(np.split(perm, np.cumsum(sizes)[:-1])))


class FeatureNoisePartitioner:
    """Noise-based feature skew: IID split, participant i adds N(0, (sigma * i / (N-1))^2)."""

    def __init__(self, sigma: float = 0.5):
        if sigma < 0:
            raise ConfigError(f"partition.sigma must be >= 0 (got {sigma})")
        self.sigma = float(sigma)

    def split(
        self, labels: np.ndarray, num_participants: int, rng: np.random.Generator
    ) -> Partition:
        base = IIDPartitioner().split(labels, num_participants, rng)
        denom = max(num_participants - 1, 1)
        stds = tuple(self.sigma * i / denom for i in range(num_participants))
        return Partition(base.indices, noise_std=stds)
