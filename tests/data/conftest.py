"""Fixtures for the dataset-layer tests: tiny raw files written in each dataset's official format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# users.dat: UserID::Gender::Age::Occupation::Zip-code (ages cover all three ML-1M age domains)
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117", "4::M::45::7::02460"]
# movies.dat is Latin-1 in the official release: movie 2 has a non-ASCII title
ML1M_MOVIES = ["1::Toy Story (1995)::Animation|Children's|Comedy", "2::Café au lait (1993)::Drama|Romance"]
# ratings.dat: UserID::MovieID::Rating::Timestamp
ML1M_RATINGS = [
    "1::1::5::978300760",
    "1::2::3::978302109",
    "2::1::4::978301968",
    "2::2::1::978300275",
    "3::1::2::978824291",
    "4::2::5::978302268",
]


def write_ml1m(
    root: Path,
    *,
    ratings: list[str] | None = None,
    users: list[str] | None = None,
    movies: list[str] | None = None,
) -> Path:
    """Write ratings/users/movies.dat (movies Latin-1, like the official files) and return the directory."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text("\n".join(ML1M_RATINGS if ratings is None else ratings) + "\n")
    (root / "users.dat").write_text("\n".join(ML1M_USERS if users is None else users) + "\n")
    (root / "movies.dat").write_bytes(
        ("\n".join(ML1M_MOVIES if movies is None else movies) + "\n").encode("latin-1")
    )
    return root


@pytest.fixture
def ml1m_writer() -> Callable[..., Path]:
    """The :func:`write_ml1m` function, for tests that write variants of the tiny files."""
    return write_ml1m


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    return write_ml1m(tmp_path / "ml-1m")
