"""Tiny synthetic data through the first steps once per session; the step tests build on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdctr.steps.fetch_data import FetchConfig, FetchOutput, fetch_data
from mdctr.steps.prepare_data import PrepareConfig, PrepareOutput, prepare_data

ROWS = 3000
OPTIONS = json.dumps({"rows": ROWS, "seed": 1})


@dataclass(frozen=True)
class Workspace:
    root: Path
    tracking_uri: str
    fetched: FetchOutput
    prepared: PrepareOutput
    options: str = OPTIONS
    rows: int = ROWS


@pytest.fixture(scope="session")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("steps")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    fetched = fetch_data(
        out_dir=root / "raw",
        config=FetchConfig(
            dataset="synthetic", dataset_options=OPTIONS, tracking_uri=uri, kfp_run_id="kfp-123"
        ),
    )
    prepared = prepare_data(
        source=root / "raw",
        out_dir=root / "prepared",
        config=PrepareConfig(dataset="synthetic", dataset_options=OPTIONS),
    )
    return Workspace(root, uri, fetched, prepared)
