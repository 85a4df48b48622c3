"""Datasets: fixed splits from the seed, offline generation, clear errors for missing files."""

import pytest
import torch

from derelayl.data.datasets import DataError, load_dataset
from derelayl.sim.errors import ConfigError


def test_digits_split_is_fixed_by_seed_and_disjoint():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train_y, c.train_y)
    assert len(a.train_y) + len(a.val) + len(a.test) == 1797
    assert a.num_classes == 10 and a.input_shape == (1, 8, 8)
    # no image appears in two splits
    rows = lambda t: {tuple(r.tolist()) for r in t.flatten(1)}  # noqa: E731
    assert not rows(a.train_x) & rows(a.test.x)


def test_mnist1d_is_generated_offline_at_any_size(monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    ds = load_dataset("mnist1d", seed=0, num_samples=600)
    assert len(ds.train_y) + len(ds.val) + len(ds.test) == 600
    assert ds.input_shape == (1, 40) and ds.num_classes == 10


def test_missing_torchvision_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="dataset.download=true"):
        load_dataset("fashion_mnist", seed=0, root=tmp_path)


def test_unknown_dataset_and_bad_fractions():
    with pytest.raises(ConfigError, match="allowed: digits"):
        load_dataset("imagenet", seed=0)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", seed=0, val_fraction=0.6, test_fraction=0.5)
