"""Partition properties: disjoint, complete, deterministic, and each scheme's own shape."""

import numpy as np
import pytest

from derelayl.data.partition import (
    DirichletPartitioner,
    FeatureNoisePartitioner,
    IIDPartitioner,
    QuantitySkewPartitioner,
    ShardsPartitioner,
)
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import numpy_rng

LABELS = np.random.default_rng(0).integers(0, 10, size=2000)

ALL = [
    IIDPartitioner(),
    DirichletPartitioner(alpha=0.5),
    DirichletPartitioner(alpha=0.1, min_samples=5),
    ShardsPartitioner(classes_per_participant=2),
    ShardsPartitioner(classes_per_participant=3),
    QuantitySkewPartitioner(distribution="dirichlet", beta=0.5),
    QuantitySkewPartitioner(distribution="lognormal", sigma=1.5),
    FeatureNoisePartitioner(sigma=0.3),
]


# shards needs N x k >= 10 classes (the infeasible cases are tested as errors below)
CASES = [
    (p, n)
    for p in ALL
    for n in (1, 7, 20, 50)
    if not (isinstance(p, ShardsPartitioner) and n * p.k < 10)
]


@pytest.mark.parametrize(
    "partitioner, num_participants", CASES, ids=[f"{type(p).__name__}-{n}" for p, n in CASES]
)
def test_disjoint_complete_deterministic(partitioner, num_participants):
    a = partitioner.split(LABELS, num_participants, numpy_rng(3, "partition"))
    b = partitioner.split(LABELS, num_participants, numpy_rng(3, "partition"))
    assert a.num_participants == num_participants
    every = np.concatenate(a.indices)
    assert len(every) == len(LABELS)
    assert np.array_equal(np.sort(every), np.arange(len(LABELS)))  # each sample exactly once
    assert all(len(ix) > 0 for ix in a.indices)
    for x, y in zip(a.indices, b.indices):
        assert np.array_equal(x, y)
    c = partitioner.split(LABELS, num_participants, numpy_rng(4, "partition"))
    if num_participants > 1:
        assert any(not np.array_equal(x, y) for x, y in zip(a.indices, c.indices))


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_shards_gives_exactly_k_classes(k):
    part = ShardsPartitioner(classes_per_participant=k).split(LABELS, 30, numpy_rng(0, "p"))
    hist = part.label_histogram(LABELS, 10)
    assert ((hist > 0).sum(axis=1) == k).all()


def test_shards_participant_i_holds_class_i_mod_L():
    part = ShardsPartitioner(2).split(LABELS, 25, numpy_rng(0, "p"))
    hist = part.label_histogram(LABELS, 10)
    assert all(hist[i, i % 10] > 0 for i in range(25))


def test_dirichlet_huge_alpha_is_close_to_iid():
    part = DirichletPartitioner(alpha=1e5).split(LABELS, 10, numpy_rng(0, "p"))
    hist = part.label_histogram(LABELS, 10).astype(float)
    global_mix = np.bincount(LABELS, minlength=10) / len(LABELS)
    mixes = hist / hist.sum(axis=1, keepdims=True)
    assert np.abs(mixes - global_mix).sum(axis=1).max() / 2 < 0.1  # total variation
    assert part.sizes.min() > 0.8 * len(LABELS) / 10


def test_dirichlet_small_alpha_is_skewed_and_respects_min_samples():
    part = DirichletPartitioner(alpha=0.1, min_samples=10).split(LABELS, 20, numpy_rng(0, "p"))
    hist = part.label_histogram(LABELS, 10).astype(float)
    mixes = hist / hist.sum(axis=1, keepdims=True)
    assert mixes.max(axis=1).mean() > 0.5  # most participants dominated by one class
    assert part.sizes.min() >= 10


def test_quantity_skew_sizes_vary_labels_do_not():
    part = QuantitySkewPartitioner(beta=0.3, min_samples=10).split(LABELS, 20, numpy_rng(1, "p"))
    assert part.sizes.min() >= 10
    assert part.sizes.max() > 4 * part.sizes.min()


def test_feature_noise_levels_grow_linearly():
    part = FeatureNoisePartitioner(sigma=0.5).split(LABELS, 5, numpy_rng(0, "p"))
    assert part.noise_std == pytest.approx((0.0, 0.125, 0.25, 0.375, 0.5))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: DirichletPartitioner(alpha=0), "partition.alpha must be > 0"),
        (lambda: DirichletPartitioner(alpha=-1.0), "partition.alpha must be > 0"),
        (lambda: ShardsPartitioner(0), "classes_per_participant must be >= 1"),
        (lambda: QuantitySkewPartitioner(distribution="zipf"), "dirichlet, lognormal"),
        (lambda: FeatureNoisePartitioner(sigma=-1), "sigma must be >= 0"),
    ],
)
def test_bad_parameters(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_impossible_splits():
    with pytest.raises(ConfigError, match="exceeds the dataset's 10 classes"):
        ShardsPartitioner(11).split(LABELS, 20, numpy_rng(0, "p"))
    with pytest.raises(ConfigError, match="cannot cover all 10 classes"):
        ShardsPartitioner(2).split(LABELS, 3, numpy_rng(0, "p"))
    with pytest.raises(ConfigError, match="training samples"):
        IIDPartitioner().split(LABELS, 5000, numpy_rng(0, "p"))
    with pytest.raises(ConfigError, match="training samples"):
        DirichletPartitioner(alpha=1, min_samples=10).split(LABELS, 300, numpy_rng(0, "p"))


@pytest.mark.parametrize("num_participants, k", [(5, 2), (4, 3), (10, 1), (3, 4)])
def test_shards_cover_every_class_when_just_possible(num_participants, k):
    # regression: extras used to be drawn before later participants' own classes were known,
    # leaving a class unheld and crashing the split
    for seed in range(20):
        part = ShardsPartitioner(k).split(LABELS, num_participants, numpy_rng(seed, "p"))
        assert sum(map(len, part.indices)) == len(LABELS)
