"""Embedded (offline) and torchvision datasets, split once from the seed.

The validation split belongs to the system (hop verification, model selection, DeRelayL test
cases); the test split is only ever used for reporting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from derelayl.sim.errors import ConfigError, DataError
from derelayl.sim.seeding import numpy_rng

if TYPE_CHECKING:  # torch loads with the data: the loaders' parameters are checked without it
    import torch

    from derelayl.learning.evaluation import EvalSet


@dataclass(frozen=True)
class DatasetSplits:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val: EvalSet
    test: EvalSet
    num_classes: int
    input_shape: tuple[int, ...]

    def to(self, device: torch.device | str) -> DatasetSplits:
        """The same splits with every tensor on ``device`` (itself when already there)."""
        import torch

        from derelayl.learning.evaluation import EvalSet

        if self.train_x.device == torch.device(device):
            return self
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val=EvalSet(self.val.x.to(device), self.val.y.to(device)),
            test=EvalSet(self.test.x.to(device), self.test.y.to(device)),
        )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images[:, None, :, :] / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _mnist1d(num_samples: int, generator_seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(generator_seed)
    args.train_split = 1.0  # we split ourselves, from the run's seed
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    return data["x"].astype(np.float32)[:, None, :], data["y"].astype(np.int64)


_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}


def _torchvision(name: str, root: Path, download: bool):
    import torchvision

    cls_name, folder = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=download)
    except RuntimeError as err:
        raise DataError(
            f"dataset={name}: files not found under {root / folder} ({err}); run once with "
            f"dataset.download=true while online, or put the torchvision {cls_name} files there"
        ) from None

    def arrays(ds):
        x = np.asarray(ds.data, dtype=np.float32) / 255.0
        x = x[:, None, :, :] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return x, np.asarray(ds.targets, dtype=np.int64)

    return arrays(train), arrays(test)


def _standardize(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    axes = (0,) + tuple(range(2, x.ndim))  # per channel
    mean = reference.mean(axis=axes, keepdims=True)
    std = reference.std(axis=axes, keepdims=True) + 1e-6
    return ((x - mean) / std).astype(np.float32)


def _split_embedded(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> DatasetSplits:
    if not 0 < val_fraction < 1:
        raise ConfigError(f"dataset.val_fraction must be in (0, 1) (got {val_fraction})")
    if not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"dataset.val_fraction + dataset.test_fraction must be < 1 and each > 0 "
            f"(got {val_fraction} + {test_fraction})"
        )
    perm = numpy_rng(seed, "data_split").permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    n_val = int(round(val_fraction * len(y)))
    test_ix, val_ix, train_ix = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return _splits(
        name, (x[train_ix], y[train_ix]), (x[val_ix], y[val_ix]), (x[test_ix], y[test_ix])
    )


def _splits(name: str, train, val, test, max_train_samples: int | None = None) -> DatasetSplits:
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = train, val, test
    num_classes = int(max(tr_y.max(), va_y.max(), te_y.max()) + 1)
    if max_train_samples is not None:
        tr_x, tr_y = tr_x[:max_train_samples], tr_y[:max_train_samples]
    ref = tr_x
    tr_x, va_x, te_x = (_standardize(a, ref) for a in (tr_x, va_x, te_x))
    import torch

    from derelayl.learning.evaluation import EvalSet

    t = torch.from_numpy
    return DatasetSplits(
        name=name,
        train_x=t(np.ascontiguousarray(tr_x)),
        train_y=t(np.ascontiguousarray(tr_y)),
        val=EvalSet(t(np.ascontiguousarray(va_x)), t(np.ascontiguousarray(va_y))),
        test=EvalSet(t(np.ascontiguousarray(te_x)), t(np.ascontiguousarray(te_y))),
        num_classes=num_classes,
        input_shape=tuple(tr_x.shape[1:]),
    )


# -- one loader per dataset (``dataset._target_``; the seed comes at run time) --------------------
def digits(seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DatasetSplits:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): offline."""
    x, y = _digits()
    return _split_embedded("digits", x, y, seed, val_fraction, test_fraction)


def mnist1d(
    seed: int,
    num_samples: int = 5000,
    generator_seed: int = 42,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> DatasetSplits:
    """MNIST-1D made by the mnist1d package's generator (``generator_seed``), never downloaded."""
    if num_samples < 100:
        raise ConfigError(f"dataset.num_samples must be >= 100 (got {num_samples})")
    x, y = _mnist1d(num_samples, generator_seed)
    return _split_embedded("mnist1d", x, y, seed, val_fraction, test_fraction)


def _torchvision_splits(
    name: str,
    seed: int,
    root: str | Path,
    download: bool,
    val_fraction: float,
    max_train_samples: int | None,
) -> DatasetSplits:
    if not 0 < val_fraction < 1:
        raise ConfigError(f"dataset.val_fraction must be in (0, 1) (got {val_fraction})")
    (x, y), test = _torchvision(name, Path(root), download)
    perm = numpy_rng(seed, "data_split").permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = (x[perm[:n_val]], y[perm[:n_val]]), (x[perm[n_val:]], y[perm[n_val:]])
    return _splits(name, train, val, test, max_train_samples)


def mnist(
    seed: int,
    root: str,
    download: bool = False,
    val_fraction: float = 0.1,
    max_train_samples: int | None = None,
) -> DatasetSplits:
    """torchvision MNIST (60k/10k 28x28 grey), read from ``root``."""
    return _torchvision_splits("mnist", seed, root, download, val_fraction, max_train_samples)


def fashion_mnist(
    seed: int,
    root: str,
    download: bool = False,
    val_fraction: float = 0.1,
    max_train_samples: int | None = None,
) -> DatasetSplits:
    """torchvision Fashion-MNIST (60k/10k 28x28 grey), read from ``root``."""
    return _torchvision_splits(
        "fashion_mnist", seed, root, download, val_fraction, max_train_samples
    )


def cifar10(
    seed: int,
    root: str,
    download: bool = False,
    val_fraction: float = 0.1,
    max_train_samples: int | None = None,
) -> DatasetSplits:
    """torchvision CIFAR-10 (50k/10k 32x32 colour), read from ``root``."""
    return _torchvision_splits("cifar10", seed, root, download, val_fraction, max_train_samples)


LOADERS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": digits,
    "mnist1d": mnist1d,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
}
DATASETS = tuple(LOADERS)


def load_dataset(name: str, *, seed: int, root: str | Path = "data", **params) -> DatasetSplits:
    """The loader of dataset ``name`` (a Python shortcut for scripts and benchmarks; a run builds
    its loader from ``dataset._target_``)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if name in ("mnist", "fashion_mnist", "cifar10"):
        params["root"] = root
    return LOADERS[name](seed=seed, **params)
