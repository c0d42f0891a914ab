"""Ali-CCP and KuaiRand adapters on the Scenario-Wise Rec format samples, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mdctr.config import ConfigError
from mdctr.data import DataError, load_dataset
from mdctr.data.aliccp import SCENARIO_FIELD
from mdctr.data.kuairand import TAB


@pytest.fixture
def aliccp_dir(datasets_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(datasets_dir / "samples" / "ali-ccp", tmp_path / "ali-ccp"))


@pytest.fixture
def kuairand_dir(datasets_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(datasets_dir / "samples" / "kuairand", tmp_path / "kuairand"))


def _edit_csv(path: Path, col: str, row: int, value: object) -> None:
    df = pd.read_csv(path, dtype=str)
    df.loc[row, col] = str(value)
    path.chmod(0o644)
    df.to_csv(path, index=False)


def test_aliccp_sample(datasets_dir: Path) -> None:
    loaded = load_dataset("ali-ccp", datasets_dir)  # resolves samples/ali-ccp under the root
    t, s = loaded.table, loaded.schema
    assert len(t) == 100 + 50 + 50  # train + val + test samples, one table
    raw = pd.concat(
        pd.read_csv(datasets_dir / "samples" / "ali-ccp" / f"ali_ccp_{k}_sample.csv")
        for k in ("train", "val", "test")
    )
    assert t[s.domain].tolist() == (raw[SCENARIO_FIELD] - 1).tolist()
    assert t[s.label].tolist() == raw[s.label].tolist()
    assert all(c.startswith("D") for c in s.dense) and SCENARIO_FIELD not in s.sparse
    assert "purchase" not in t.columns


def test_aliccp_scenario_outside_known_set(aliccp_dir: Path) -> None:
    _edit_csv(aliccp_dir / "ali_ccp_val_sample.csv", SCENARIO_FIELD, 3, 4)
    with pytest.raises(
        DataError, match=r"ali_ccp_val_sample\.csv domain column '301' must be one of \[1, 2, 3\]"
    ):
        load_dataset("ali-ccp", aliccp_dir)


def test_aliccp_label_not_binary(aliccp_dir: Path) -> None:
    _edit_csv(aliccp_dir / "ali_ccp_test_sample.csv", "click", 0, 2)
    with pytest.raises(DataError, match=r"ali_ccp_test_sample\.csv label column 'click' must be 0/1"):
        load_dataset("ali-ccp", aliccp_dir)


def test_aliccp_incomplete_file_set(aliccp_dir: Path) -> None:
    (aliccp_dir / "ali_ccp_test_sample.csv").unlink()
    with pytest.raises(DataError, match=r"incomplete file set.*ali_ccp_test_sample\.csv"):
        load_dataset("ali-ccp", aliccp_dir)


def test_aliccp_wrong_separator(aliccp_dir: Path) -> None:
    path = aliccp_dir / "ali_ccp_train_sample.csv"
    text = path.read_text().replace(",", ";")
    path.chmod(0o644)
    path.write_text(text)
    with pytest.raises(DataError, match=r"ali_ccp_train_sample\.csv lacks column.*wrong separator"):
        load_dataset("ali-ccp", aliccp_dir)


def test_kuairand_sample(datasets_dir: Path) -> None:
    loaded = load_dataset("kuairand", datasets_dir)
    t, s = loaded.table, loaded.schema
    assert len(t) == 200
    assert s.domain_names == ("tab 0", "tab 1", "tab 2", "tab 4", "tab 6")
    assert set(t[s.domain]) == {1}  # the sample only holds tab 1
    assert "play_time_ms" not in t.columns  # post-impression outcome, would leak the click
    assert (t[list(s.dense)] >= 0).all().all()  # log1p of counts


def test_kuairand_tab_outside_known_set(kuairand_dir: Path) -> None:
    _edit_csv(kuairand_dir / "kuairand_sample.csv", TAB, 5, 3)
    with pytest.raises(
        DataError, match=r"kuairand_sample\.csv domain column 'tab' must be one of .*e\.g\. 3"
    ):
        load_dataset("kuairand", kuairand_dir)
    loaded = load_dataset("kuairand", kuairand_dir, drop_other_tabs=True)
    assert len(loaded.table) == 199


def test_kuairand_non_numeric_feature(kuairand_dir: Path) -> None:
    _edit_csv(kuairand_dir / "kuairand_sample.csv", "video_id", 7, "abc")
    with pytest.raises(DataError, match=r"kuairand_sample\.csv column 'video_id' expects integers.*'abc'"):
        load_dataset("kuairand", kuairand_dir)


def test_kuairand_unknown_option() -> None:
    with pytest.raises(ConfigError, match="tab_set"):
        load_dataset("kuairand", ".", tab_set=(1,))


def test_kuairand_empty_file(tmp_path: Path) -> None:
    root = tmp_path / "kuairand"
    root.mkdir()
    (root / "kuairand_sample.csv").write_text("")
    with pytest.raises(DataError, match=r"kuairand_sample\.csv is empty"):
        load_dataset("kuairand", root)
