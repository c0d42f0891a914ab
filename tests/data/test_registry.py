"""Every adapter is registered under its documented name and knows where its files live."""

from __future__ import annotations

import pytest

from mdctr.data import dataset_names, get_dataset


def test_all_adapters_registered() -> None:
    assert set(dataset_names()) >= {"ml-1m", "epinions", "ali-ccp", "kuairand", "synthetic", "table"}


@pytest.mark.parametrize(
    ("name", "subdir"),
    [
        ("ml-1m", "ml-1m"),
        ("epinions", "epinions"),
        ("ali-ccp", "samples/ali-ccp"),
        ("kuairand", "samples/kuairand"),
    ],
)
def test_default_subdir(name: str, subdir: str) -> None:
    assert get_dataset(name).default_subdir == subdir


def test_unknown_dataset_lists_registered() -> None:
    with pytest.raises(KeyError, match="registered"):
        get_dataset("ml-100k")
