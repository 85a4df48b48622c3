"""Materialised dataset splits and partitions (what ``dvc repro``'s prepare/partition stages write).

Layout, one folder per seed (plain ``.npy`` files: byte-identical for identical arrays, so DVC
sees an unchanged output when a stage reruns with the same result)::

    <root>/splits/seed<s>/      train_x.npy train_y.npy val_x.npy val_y.npy test_x.npy test_y.npy
                                manifest.json   (dataset config, seed, shapes)
    <root>/partitions/seed<s>/  indices.npy offsets.npy [noise_std.npy]
                                partition.json  (sizes and label histogram, as in a run's folder)
                                label_histogram.csv
                                manifest.json   (dataset and partition config, seed, N)

A run with ``prepared_data=<root>`` reads these instead of recomputing them, after checking that
the manifests were written for its own dataset, partition, seed and number of participants.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from derelayl.data.datasets import DatasetSplits
from derelayl.data.partition import Partition
from derelayl.learning.evaluation import EvalSet
from derelayl.sim.errors import ConfigError

SPLIT_ARRAYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
# keys of the dataset config that do not change the data itself
_VOLATILE_DATASET_KEYS = {"root", "download"}


def split_dir(root: str | Path, seed: int) -> Path:
    return Path(root) / "splits" / f"seed{int(seed)}"


def partition_dir(root: str | Path, seed: int) -> Path:
    return Path(root) / "partitions" / f"seed{int(seed)}"


def dataset_key(dataset_cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(dataset_cfg.items()) if k not in _VOLATILE_DATASET_KEYS}


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_splits(
    splits: DatasetSplits, folder: Path, *, dataset_cfg: dict[str, Any], seed: int
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": splits.train_x,
        "train_y": splits.train_y,
        "val_x": splits.val.x,
        "val_y": splits.val.y,
        "test_x": splits.test.x,
        "test_y": splits.test.y,
    }
    for name, tensor in arrays.items():
        np.save(folder / f"{name}.npy", tensor.cpu().numpy())
    _write_json(
        folder / "manifest.json",
        {
            "dataset": dataset_key(dataset_cfg),
            "seed": int(seed),
            "name": splits.name,
            "num_classes": splits.num_classes,
            "input_shape": list(splits.input_shape),
            "sizes": {
                "train": len(splits.train_y),
                "val": len(splits.val),
                "test": len(splits.test),
            },
        },
    )
    return folder


def _manifest(folder: Path, what: str, stage: str) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        raise ConfigError(
            f"prepared_data: no {what} at {folder}; run `dvc repro {stage}` "
            f"(or python -m derelayl.cli.{stage}) first"
        )
    return json.loads(path.read_text())


def load_splits(folder: Path, *, dataset_cfg: dict[str, Any], seed: int) -> DatasetSplits:
    folder = Path(folder)
    manifest = _manifest(folder, "dataset splits", "prepare")
    expected = {"dataset": dataset_key(dataset_cfg), "seed": int(seed)}
    found = {"dataset": manifest["dataset"], "seed": manifest["seed"]}
    if found != expected:
        raise ConfigError(
            f"prepared_data: {folder} was prepared for {found}, this run needs "
            f"{expected}; rerun the prepare stage"
        )
    a = {name: torch.from_numpy(np.load(folder / f"{name}.npy")) for name in SPLIT_ARRAYS}
    return DatasetSplits(
        name=manifest["name"],
        train_x=a["train_x"],
        train_y=a["train_y"],
        val=EvalSet(a["val_x"], a["val_y"]),
        test=EvalSet(a["test_x"], a["test_y"]),
        num_classes=int(manifest["num_classes"]),
        input_shape=tuple(manifest["input_shape"]),
    )


def partition_key(
    dataset_cfg: dict[str, Any], partition_cfg: dict[str, Any], seed: int, num_participants: int
) -> dict[str, Any]:
    return {
        "dataset": dataset_key(dataset_cfg),
        "partition": dict(sorted(partition_cfg.items())),
        "seed": int(seed),
        "num_participants": int(num_participants),
    }


def save_partition(
    partition: Partition, label_histogram: np.ndarray, folder: Path, *, key: dict[str, Any]
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = partition.sizes
    np.save(folder / "indices.npy", np.concatenate(partition.indices).astype(np.int64))
    np.save(folder / "offsets.npy", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    if partition.noise_std is not None:
        np.save(folder / "noise_std.npy", np.asarray(partition.noise_std, dtype=np.float64))
    _write_json(
        folder / "partition.json",
        {"sizes": sizes.tolist(), "label_histogram": label_histogram.tolist()},
    )
    classes = label_histogram.shape[1]
    rows = ["participant,samples," + ",".join(f"class_{c}" for c in range(classes))]
    rows += [
        f"{i},{sizes[i]}," + ",".join(str(int(v)) for v in label_histogram[i])
        for i in range(len(sizes))
    ]
    (folder / "label_histogram.csv").write_text("\n".join(rows) + "\n")
    _write_json(folder / "manifest.json", key)
    return folder


def load_partition(folder: Path, *, key: dict[str, Any]) -> Partition:
    folder = Path(folder)
    manifest = _manifest(folder, "partition", "partition")
    if manifest != key:
        raise ConfigError(
            f"prepared_data: {folder} holds a partition made for another config "
            f"({manifest}); this run needs {key}; rerun the partition stage"
        )
    indices = np.load(folder / "indices.npy")
    offsets = np.load(folder / "offsets.npy")
    parts = tuple(indices[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1))
    noise = folder / "noise_std.npy"
    return Partition(parts, noise_std=tuple(np.load(noise).tolist()) if noise.exists() else None)
