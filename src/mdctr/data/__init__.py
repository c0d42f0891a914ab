"""Dataset layer: one adapter per dataset, registered by name (see :mod:`mdctr.data.base`)."""

from mdctr.data import ml1m  # noqa: F401  (registers adapters)
from mdctr.data.base import (
    DataError,
    DatasetAdapter,
    LoadedDataset,
    dataset_names,
    get_dataset,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DataError",
    "DatasetAdapter",
    "LoadedDataset",
    "dataset_names",
    "get_dataset",
    "load_dataset",
    "register_dataset",
]
