"""Dataset layer: one adapter per dataset, registered by name (see :mod:`mdctr.data.base`)."""

from mdctr.data import (  # noqa: F401  (importing an adapter module registers it)
    aliccp,
    epinions,
    kuairand,
    ml1m,
    synthetic,
    table,
)
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
