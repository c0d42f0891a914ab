"""ML-1M adapter: the official format on tiny files, the shared partial copy, and bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mdctr.data import DataError, load_dataset
from mdctr.data.ml1m import SCHEMA

TINY_ROWS = 6  # ratings written by the ml1m_dir fixture


def test_tiny_official_format(ml1m_dir: Path) -> None:
    loaded = load_dataset("ml-1m", ml1m_dir)
    t, s = loaded.table, loaded.schema
    assert list(t.columns) == list(SCHEMA.columns)
    assert len(t) == TINY_ROWS
    # ages 1 → domain 0, 56/45 → 2, 25 → 1
    by_user = t.groupby(s.user)[s.domain].first().to_dict()
    assert by_user == {1: 0, 2: 2, 3: 1, 4: 2}
    # label = rating > 3
    assert t[s.label].tolist() == [1, 0, 1, 0, 0, 1]
    # the Latin-1 movie parsed and its first genre kept
    assert set(t.loc[t[s.item] == 2, "genre"]) == {"Drama"}


def test_resolves_datasets_root(ml1m_dir: Path) -> None:
    assert len(load_dataset("ml-1m", ml1m_dir.parent).table) == TINY_ROWS


def test_shared_partial_copy(datasets_dir: Path) -> None:
    loaded = load_dataset("ml-1m", datasets_dir)
    t, s = loaded.table, loaded.schema
    assert len(t) == 487_650
    assert t.groupby(s.domain).size().tolist() == [115_253, 179_373, 193_024]
    assert t[s.label].mean() == pytest.approx(0.572, abs=0.001)


@pytest.mark.parametrize(
    ("kwargs", "file", "needle"),
    [
        ({"ratings": ["1,1,5,978300760", "2,1,4,978301968"]}, "ratings.dat", "found 1 field"),
        ({"ratings": ["1::1::5", "2::1::4"]}, "ratings.dat", "found 3 field"),
        ({"ratings": ["1::1::five::978300760"]}, "ratings.dat", "'rating'"),
        (
            {"users": ["1::F::1::10::48067", "2::M::99::16::70072", "3::M::25::15::5", "4::M::45::7::0"]},
            "ratings.dat line",
            "'age' must be one of [1, 18, 25, 35, 45, 50, 56]",
        ),
        ({"movies": ["1::Toy Story (1995)"]}, "movies.dat", "3 '::'-separated fields"),
        ({"ratings": ["1::1::5::978300760", "9::1::4::978301968"]}, "users.dat", "user_id"),
    ],
    ids=[
        "wrong-separator",
        "column-count",
        "non-numeric-rating",
        "age-outside-known-set",
        "movies-fields",
        "unknown-user",
    ],
)
def test_bad_input_names_file_and_column(
    tmp_path: Path, ml1m_writer: Callable[..., Path], kwargs: dict, file: str, needle: str
) -> None:
    root = ml1m_writer(tmp_path / "ml-1m", **kwargs)
    with pytest.raises(DataError) as err:
        load_dataset("ml-1m", root)
    msg = str(err.value)
    assert file in msg and needle in msg


@pytest.mark.parametrize("name", ["ratings.dat", "users.dat", "movies.dat"])
def test_missing_or_empty_file(ml1m_dir: Path, name: str) -> None:
    (ml1m_dir / name).write_text("")
    with pytest.raises(DataError, match=f"{name} is empty"):
        load_dataset("ml-1m", ml1m_dir)
    (ml1m_dir / name).unlink()
    with pytest.raises(DataError, match=f"{name} not found"):
        load_dataset("ml-1m", ml1m_dir)
