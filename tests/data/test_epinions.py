"""Epinions adapter: a tiny .mat zip written here, the shared copy, and bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from mdctr.data import DataError, load_dataset

# (user, product, category, rating); categories 1, 3 and 27 of the catalog below
RATINGS = np.array([[1, 10, 1, 5], [1, 11, 3, 2], [2, 10, 1, 4], [3, 12, 27, 3], [3, 13, 3, 1]])
TRUST = np.array([[2, 1], [3, 1], [1, 3]])  # user 1 is trusted by 2 users, user 3 by 1, user 2 by none
CATALOG = "1 Online Stores & Services\r\n3 Movies\r\n27 Photo & Optics\r\n"


def _mat_bytes(name: str, arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {name: arr})
    return buf.getvalue()


def write_epinions(
    root: Path, ratings: np.ndarray = RATINGS, *, members: tuple[str, ...] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "epinions/rating.mat": _mat_bytes("rating", ratings),
        "epinions/trustnetwork.mat": _mat_bytes("trustnetwork", TRUST),
    }
    with zipfile.ZipFile(root / "epinions.zip", "w") as zf:
        for member, data in files.items():
            if members is None or member in members:
                zf.writestr(member, data)
    (root / "catalog_epinion.txt").write_text(CATALOG)
    return root


def test_tiny_zip(tmp_path: Path) -> None:
    loaded = load_dataset("epinions", write_epinions(tmp_path / "epinions"))
    t, s = loaded.table, loaded.schema
    assert s.domain_names == ("Online Stores & Services", "Movies", "Photo & Optics")
    assert t[s.domain].tolist() == [0, 1, 0, 2, 1]
    assert t[s.label].tolist() == [1, 0, 1, 0, 0]  # rating >= 4
    assert s.dense == ()
    assert not (tmp_path / "epinions" / "epinions").exists()  # nothing extracted to disk


def test_trust_in_degree(tmp_path: Path) -> None:
    loaded = load_dataset("epinions", write_epinions(tmp_path / "epinions"), trust_degree=True)
    (col,) = loaded.schema.dense
    expected = np.log1p([2, 2, 0, 1, 1]).astype(np.float32)  # per rating row: in-degree of its user
    np.testing.assert_allclose(loaded.table[col].to_numpy(), expected)


def test_without_catalog_uses_found_categories(tmp_path: Path) -> None:
    root = write_epinions(tmp_path / "epinions")
    (root / "catalog_epinion.txt").unlink()
    loaded = load_dataset("epinions", root)
    assert loaded.schema.domain_names == ("category 1", "category 3", "category 27")


def test_shared_copy_loads_as_documented(datasets_dir: Path) -> None:
    # load time is measured in benchmarks/bench_data.py (docs/benchmarks/data.md): a wall-clock bound here
    # would fail on a busy machine and prove nothing about correctness
    loaded = load_dataset("epinions", datasets_dir)
    t, s = loaded.table, loaded.schema
    assert len(t) == 922_267
    assert s.num_domains == 27 and s.domain_names[2] == "Movies"
    assert t[s.label].mean() == pytest.approx(0.738, abs=0.001)


def test_corrupted_zip(tmp_path: Path) -> None:
    root = write_epinions(tmp_path / "epinions")
    data = (root / "epinions.zip").read_bytes()
    (root / "epinions.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"epinions\.zip is not a readable zip"):
        load_dataset("epinions", root)


def test_missing_member(tmp_path: Path) -> None:
    root = write_epinions(tmp_path / "epinions", members=("epinions/trustnetwork.mat",))
    with pytest.raises(DataError, match=r"epinions\.zip has no member 'epinions/rating\.mat'"):
        load_dataset("epinions", root)


def test_missing_zip(tmp_path: Path) -> None:
    root = tmp_path / "epinions"
    root.mkdir()
    with pytest.raises(DataError, match=r"epinions\.zip not found"):
        load_dataset("epinions", root)


def test_rating_that_cannot_be_binary(tmp_path: Path) -> None:
    bad = RATINGS.copy()
    bad[1, 3] = 9
    with pytest.raises(
        DataError,
        match=r"'rating' must be one of \[1, 2, 3, 4, 5\].* at epinions\.zip:epinions/rating\.mat row 2, e\.g\. 9",
    ):
        load_dataset("epinions", write_epinions(tmp_path / "epinions", bad))


def test_category_outside_catalog(tmp_path: Path) -> None:
    bad = RATINGS.copy()
    bad[0, 2] = 5
    with pytest.raises(DataError, match=r"column 3 'category'.*catalog_epinion\.txt.*e\.g\. 5"):
        load_dataset("epinions", write_epinions(tmp_path / "epinions", bad))


def test_wrong_column_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"rating\.mat.*>= 4 columns.*\(5, 3\)"):
        load_dataset("epinions", write_epinions(tmp_path / "epinions", RATINGS[:, :3]))
