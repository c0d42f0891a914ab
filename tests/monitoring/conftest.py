"""Synthetic traffic for the monitoring tests: prepared training data, its raw test split replayed as a
served-request log (the real log layout), and mined codes (a stand-in miner: a stable function of one id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

#: 2026-12-01T00:00:00Z in unix ms: the replayed window spans two days from here
T0_MS = 1_796_083_200_000


@dataclass(frozen=True)
class Traffic:
    """``prepared``: prepared-data dir; ``codes``: a mine_domains-like dir (codes.npz); ``schema``; ``test``:
    the raw test split (canonical columns); ``code``: rows → mined code [N]; ``write``: table → log dir."""

    prepared: Path
    codes: Path
    schema: Any
    test: pd.DataFrame
    code: Callable[[pd.DataFrame], np.ndarray]
    write: Callable[..., Path]


def stand_in_code(frame: pd.DataFrame) -> np.ndarray:
    """The stand-in miner: code = first sparse id mod 5 (the same function on train and on traffic)."""
    return (frame["f0"].to_numpy().astype(np.int64) % 5).astype(np.int64)


@pytest.fixture(scope="session")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    from mdctr.data.encode import split_table
    from mdctr.data.prepare import write_prepared
    from mdctr.data.synthetic import generate
    from mdctr.monitoring.replay import write_log

    root = tmp_path_factory.mktemp("traffic")
    loaded = generate(rows=30_000, seed=3)
    write_prepared(loaded, root / "prepared")
    parts = split_table(loaded.table, loaded.schema, kind="random", seed=0)
    (root / "domains").mkdir()
    np.savez(
        root / "domains" / "codes.npz", train=stand_in_code(parts["train"]), test=stand_in_code(parts["test"])
    )
    counter = iter(range(10_000))

    def write(table: pd.DataFrame, *, prediction: np.ndarray | None = None, seed: int = 0) -> Path:
        out = root / f"log{next(counter)}"
        n = len(table)
        rng = np.random.default_rng(seed)
        served = T0_MS + np.sort(rng.integers(0, 2 * 86_400_000, n))
        pred = rng.uniform(0.01, 0.99, n) if prediction is None else prediction
        write_log(
            table.reset_index(drop=True),
            loaded.schema,
            out,
            served_ms=served,
            prediction=pred,
            mined=stand_in_code(table),
            rows_per_file=1000,
        )
        return out

    return Traffic(root / "prepared", root / "domains", loaded.schema, parts["test"], stand_in_code, write)
