"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store whose tables are created once per session: creating them (MLflow's
    migrations) takes 3–6 s on the shared 2-core machine, copying the file a few milliseconds."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_sqlite_uri(tmp_path: Path, mlflow_template_db: Path) -> str:
    """``sqlite:///<tmp_path>/mlruns/mlflow.db``: this test's own empty MLflow store, a copy of
    :func:`mlflow_template_db`. ``mdctr.tracking.configure`` puts the ``mdctr`` experiment's artifacts next to
    it, so copies share nothing."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_template_db, db)
    return f"sqlite:///{db}"


@pytest.fixture(scope="session")
def small_prepared() -> Any:  # PreparedData
    """Small prepared synthetic data for trainer tests: 3,000 rows, 3 sparse (40 ids) + 2 dense features,
    3 domains, seed 1 (each fit takes well under a second). Shared by the session: tests must not modify it."""
    from mdctr.data.prepare import prepare_in_memory
    from mdctr.data.synthetic import generate

    loaded = generate(rows=3000, num_sparse=3, num_dense=2, vocab_size=40, num_domains=3, seed=1)
    return prepare_in_memory(loaded)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread in the test process, for the whole session (module- and session-scoped
    fixtures included): the tests' tensors are small, and two threads contending for a shared 2-core machine
    made them about 5× slower (tests/routing/test_budget.py + tests/training/test_run.py: 31 s with the default
    threads, 6.5 s with one, same machine, minutes apart). Subprocesses (CLIs, torchrun, the pipeline's tasks)
    keep their own settings."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class PickleExploit:
    """Unpickling this runs ``open(marker, "w")`` — a stand-in for a shell command, for the tests that check
    nothing loaded from a store executes code: the marker file exists afterwards only if it was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="session")
def pickle_exploit() -> type[PickleExploit]:
    """The :class:`PickleExploit` class: ``pickle.dump(pickle_exploit(marker), f)``."""
    return PickleExploit


def write_exploit_pickle(path: Path, marker: Path) -> None:
    """Write a pickled :class:`PickleExploit` to ``path`` (parents created): loading it creates ``marker``."""
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(PickleExploit(marker), f)


@pytest.fixture(scope="session")
def plant_pickle() -> Any:  # (Path, Path) -> None
    """:func:`write_exploit_pickle`: ``plant_pickle(path, marker)`` plants a malicious pickle at ``path``."""
    return write_exploit_pickle


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
