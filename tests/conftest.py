"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Keep third-party tools quiet and offline in every test process.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared datasets root (``$DATASETS_DIR`` or ``../shared/datasets``); the suite requires it."""
    path = Path(os.environ.get("DATASETS_DIR", ROOT.parent / "shared" / "datasets"))
    assert path.is_dir(), f"datasets directory {path} not found; set DATASETS_DIR"
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local S3 server (disk-backed s3rver, bucket ``mdctr``) shared by the session.

    Point clients at it with ``monkeypatch.setenv`` over ``s3_server.env().items()``. Set
    ``MDCTR_S3_BACKEND=moto`` to use the in-memory moto fallback where Node.js is unavailable.
    Tests that stop or restart a server should start their own with ``mdctr.devservices.start_s3``.
    """
    from mdctr.devservices import start_s3

    backend = os.environ.get("MDCTR_S3_BACKEND", "s3rver")
    server = start_s3(tmp_path_factory.mktemp("s3"), backend=backend)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def make_random_batch(
    inputs: Any, rows: int, *, domain: Any = None, seed: int = 0
) -> Any:  # (ModelInputs, int) -> Batch
    """A random batch of ``rows`` rows for ``inputs`` (a :class:`~mdctr.models.base.ModelInputs`, e.g. real
    ML-1M widths): uniform ids per feature, N(0, 1) dense values, random 0/1 labels. ``domain`` is

    - ``None`` (default): domains cycle ``0..num_domains-1``, so every domain is present;
    - ``"random"``: uniform i.i.d. domains, as in a shuffled real batch or mined codes, except that the first
      ``num_domains`` rows are ``0..num_domains-1`` so that every domain is present;
    - an int: every row in that one domain;
    - a sequence or tensor of ``rows`` ints: exactly those domains.

    Seeded: the same call gives the same batch, and calls that differ only in ``domain`` give the same ids,
    dense values and labels (the domains are drawn last).
    """
    import torch

    from mdctr.data.tensors import Batch

    n = inputs.num_domains
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, v, (rows,), generator=g) for v in inputs.vocab_sizes], dim=1)
    dense = torch.randn(rows, inputs.num_dense, generator=g)
    label = torch.randint(0, 2, (rows,), generator=g).float()
    if domain is None:
        domains = torch.arange(rows) % n
    elif isinstance(domain, str):
        if domain != "random":
            raise ValueError(
                f"make_random_batch: domain={domain!r}; expected None, 'random', an int or {rows} ints"
            )
        domains = torch.randint(0, n, (rows,), generator=g)
        domains[: min(n, rows)] = torch.arange(min(n, rows))
    elif isinstance(domain, int):
        domains = torch.full((rows,), domain)
    else:
        domains = torch.as_tensor(domain, dtype=torch.int64)
        if domains.shape != (rows,):
            raise ValueError(
                f"make_random_batch: domain has shape {tuple(domains.shape)}; expected ({rows},)"
            )
    bad = (domains < 0) | (domains >= n)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"make_random_batch: domain {int(domains[row])} at row {row}; expected 0..{n - 1} (num_domains={n})"
        )
    return Batch(sparse, dense, domains.to(torch.int64), label)


@pytest.fixture(scope="session")
def random_batch() -> Any:
    """The one random-batch builder of the test suite: ``random_batch(inputs, rows, domain=…, seed=…)``
    (see :func:`make_random_batch`); a test module builds every random :class:`~mdctr.data.tensors.Batch`
    with it rather than with a local helper."""
    return make_random_batch


def evaluate_trained(root: Path, trained: Any, tracking_uri: str, parent_run_id: str) -> Any:
    """Run the evaluate step over ``trained`` (train-step outputs: ``results_dir``, ``bundle_dir``) with every
    output under ``root``: ``leaderboard.md``, ``report.html``, ``tables/``, ``winner/``."""
    from mdctr.steps.evaluate import EvaluateConfig, evaluate

    return evaluate(
        results_dirs=[t.results_dir for t in trained],
        bundle_dirs=[t.bundle_dir for t in trained],
        leaderboard_path=root / "leaderboard.md",
        report_path=root / "report.html",
        tables_dir=root / "tables",
        winner_dir=root / "winner",
        config=EvaluateConfig(tracking_uri=tracking_uri, parent_run_id=parent_run_id),
    )


@pytest.fixture(scope="session")
def evaluate_step() -> Any:
    """:func:`evaluate_trained`, for module-scoped fixtures that chain the pipeline's steps."""
    return evaluate_trained
