"""Datasets: loading, normalisation and the fixed train / validation / test split."""

from derelayl.data.datasets import DataError, DatasetSplits, load_dataset

__all__ = ["DataError", "DatasetSplits", "load_dataset"]
