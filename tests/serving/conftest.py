"""Fixtures for the serving tests: one small trained bundle per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdctr.serving.demo import DemoBundle, make_demo_bundle

DEMO_METRICS = {
    "overall": {"auc": 0.70, "logloss": 0.60},
    "per_domain": [{"domain": d, "auc": 0.70, "logloss": 0.60, "rows": 100} for d in range(3)],
}


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoBundle:
    """A trained ``dnn`` bundle (domain source ``none``) and the raw rows it was trained on."""
    return make_demo_bundle(Path(tmp_path_factory.mktemp("bundle")) / "bundle", metrics=DEMO_METRICS)
