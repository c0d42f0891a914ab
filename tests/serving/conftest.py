"""Fixtures for the serving tests: one small trained bundle per session, and ``mdctr serve`` processes on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mdctr.serving import ProcessServer, start_model_server
from mdctr.serving.app import ServeLimits
from mdctr.serving.demo import DemoBundle, make_demo_bundle

DEMO_METRICS = {
    "overall": {"auc": 0.70, "logloss": 0.60},
    "per_domain": [{"domain": d, "auc": 0.70, "logloss": 0.60, "rows": 100} for d in range(3)],
}


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoBundle:
    """A trained ``dnn`` bundle (domain source ``none``) and the raw rows it was trained on."""
    return make_demo_bundle(Path(tmp_path_factory.mktemp("bundle")) / "bundle", metrics=DEMO_METRICS)


@pytest.fixture(scope="module")
def serve_demo(
    demo: DemoBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[ServeLimits], ProcessServer]]:
    """``serve_demo(limits)`` starts ``mdctr serve`` on the demo bundle with those limits (its log in a fresh
    temporary folder) and returns it once healthy; every server it started stops at the end of the module."""
    started: list[ProcessServer] = []

    def start(limits: ServeLimits) -> ProcessServer:
        srv = start_model_server(str(demo.path), limits=limits, log_dir=tmp_path_factory.mktemp("srv"))
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()
