"""The promotion path as the DAG runs it (register-model → promote-model → exit handler) on tiny synthetic data
with MLflow on SQLite: the gate loads nothing executable from the store, promotion moves the champion last,
every promotion is in the champion history, and only the exit handler closes the parent run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from mdctr import tracking
from mdctr.steps.evaluate import WINNER_ENTRY_FILE
from mdctr.steps.fetch_data import finish_run
from mdctr.steps.promote_model import PromoteConfig, promote_model
from mdctr.steps.register_model import RegisterConfig, register_model
from mdctr.steps.train_model import TrainStepConfig, train_model
from mdctr.tracking.names import CHAMPION, KEEP, PROMOTE
from mdctr.tracking.runs import TAG_FAILED_TASK

pytestmark = pytest.mark.integration

#: the four ways an old or tampered registered model could make a loader run code
VARIANTS = ("loader_module", "code_folder", "python_model_pkl", "old_pickled_format")


@dataclass(frozen=True)
class Pipeline:
    """One pipeline run's MLflow side: store, parent run (tagged with the KFP run id), the winner's own
    training run and a copy of the evaluate step's winner directory pointing at it."""

    uri: str
    parent: str
    kfp_run_id: str
    winner_run: str
    winner_dir: Path
    prepared: Path

    def register(self) -> Any:
        return register_model(
            winner_dir=self.winner_dir,
            prepared_dir=self.prepared,  # the gate re-scores on the validation split, as in the DAG
            config=RegisterConfig(tracking_uri=self.uri, parent_run_id=self.parent),
        )


@pytest.fixture(scope="module")
def winner(ws: Any, tmp_path_factory: pytest.TempPathFactory, evaluate_step: Any) -> tuple[Path, Any]:
    """The evaluate step's winner directory after one tiny training run (and that run's result)."""
    root = tmp_path_factory.mktemp("promotion")
    trained = train_model(
        prepared_dir=ws.prepared.path,
        domains_dir=None,
        bundle_dir=root / "bundle",
        results_dir=root / "results",
        config=TrainStepConfig(
            model_name="dnn",
            domain_source="none",
            epochs=1,
            train_options='{"batch_size": 512}',
            tracking_uri=ws.tracking_uri,
            parent_run_id=ws.fetched.run_id,
        ),
    )
    # evaluated untracked: each test logs the winner into a store of its own (_pipeline), and the session's
    # shared parent run must not be evaluated twice with other seeds (MLflow refuses to change a logged param)
    evaluate_step(root, [trained], "", "")
    return root / "winner", trained


def _pipeline(root: Path, winner: Path, prepared: Path) -> Pipeline:
    """A fresh store with the parent run and the winner's training run, as start-run and train-model leave it."""
    uri = tracking.configure(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    kfp = f"kfp-{uuid.uuid4().hex[:8]}"
    parent = tracking.start_parent_run(uri, run_name="pipeline", kfp_run_id=kfp)
    run = tracking.log_training_run(
        uri, parent, run_name="dnn/none/seed0", params={"model": "dnn"}, system_metrics=False
    )
    wdir = root / "winner"
    shutil.copytree(winner, wdir)
    entry = json.loads((wdir / WINNER_ENTRY_FILE).read_text())
    (wdir / WINNER_ENTRY_FILE).write_text(json.dumps({**entry, "run_id": run}))
    return Pipeline(uri, parent, kfp, run, wdir, prepared)


def _model_dir(uri: str, name: str, version: str) -> Path:
    """Where the registered version's files are in the local artifact store (what an attacker would edit)."""
    location = MlflowClient(uri).get_model_version_download_uri(name, version)
    path = Path(unquote(urlparse(location).path))
    assert (path / "MLmodel").is_file(), path
    return path


def _plant(model_dir: Path, variant: str, marker: Path, plant_pickle: Any) -> None:
    """Tamper with a stored model the way ``variant`` says; every planted piece writes ``marker`` if run
    (``plant_pickle``: the fixture of tests/conftest.py)."""
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    touch = f"open({str(marker)!r}, 'w').close()\n"
    if variant == "loader_module":
        module = f"mdctr_evil_{uuid.uuid4().hex[:8]}"
        (model_dir / "code").mkdir()
        (model_dir / "code" / f"{module}.py").write_text(touch + "def _load_pyfunc(path):\n    return None\n")
        pyfunc.update(loader_module=module, code="code")
    elif variant == "code_folder":
        (model_dir / "code" / "mdctr").mkdir(parents=True)
        (model_dir / "code" / "mdctr" / "__init__.py").write_text(touch)
    elif variant == "python_model_pkl":
        plant_pickle(model_dir / "python_model.pkl", marker)
    elif variant == "old_pickled_format":
        # the format mdctr logged before the loader module: cloudpickled python_model, code/, artifacts/bundle
        (model_dir / "artifacts").mkdir()
        shutil.move(model_dir / "data" / "bundle", model_dir / "artifacts" / "bundle")
        plant_pickle(model_dir / "python_model.pkl", marker)
        (model_dir / "code" / "mdctr").mkdir(parents=True)
        (model_dir / "code" / "mdctr" / "__init__.py").write_text(touch)
        pyfunc.clear()
        pyfunc.update(
            loader_module="mlflow.pyfunc.model",
            python_model="python_model.pkl",
            cloudpickle_version="3.1.1",
            code="code",
            artifacts={"bundle": {"path": "artifacts/bundle", "uri": "bundle"}},
            env={"virtualenv": "python_env.yaml"},
        )
    else:
        raise AssertionError(variant)
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))


#: what the refusal names for each variant
FOUND = {
    "loader_module": "loader_module 'mdctr_evil_",
    "code_folder": "a code/ folder",
    "python_model_pkl": "pickle file(s) python_model.pkl",
    "old_pickled_format": "loader_module 'mlflow.pyfunc.model'",
}


@pytest.fixture(scope="module")
def champion_store(
    ws: Any, winner: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Pipeline, str, str, Path]:
    """A store whose champion v1 came through the real register and promote steps; (pipeline, name, v1,
    a clean copy of v1's stored files)."""
    root = tmp_path_factory.mktemp("champion")
    p = _pipeline(root, winner[0], ws.prepared.path)
    first = p.register()
    assert first.decision == PROMOTE
    promote_model(
        manifest_path=root / "isvc.yaml",
        config=PromoteConfig(name=first.name, version=first.version, tracking_uri=p.uri, reason=first.reason),
    )
    assert tracking.alias_version(p.uri, CHAMPION, name=first.name) == first.version
    clean = root / "clean-v1"
    shutil.copytree(_model_dir(p.uri, first.name, first.version), clean)
    return p, first.name, first.version, clean


@pytest.fixture
def planted(
    champion_store: tuple[Pipeline, str, str, Path],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    plant_pickle: Any,
):
    """The champion's stored files tampered with (``request.param``), restored afterwards."""
    p, name, version, clean = champion_store
    model_dir = _model_dir(p.uri, name, version)
    marker = tmp_path / "pwned"
    _plant(model_dir, request.param, marker, plant_pickle)
    try:
        yield p, name, version, marker, request.param
    finally:
        shutil.rmtree(model_dir)
        shutil.copytree(clean, model_dir)


def test_the_planted_loader_module_and_old_pickled_format_really_run_under_mlflows_loader(
    champion_store: tuple[Pipeline, str, str, Path], tmp_path: Path, plant_pickle: Any
) -> None:
    """Control: ``mlflow.pyfunc.load_model`` (what the gate used before) runs the planted code, so the
    assertions below that no marker appears would notice if anything still went through it."""
    clean = champion_store[3]
    script = ["import sys, mlflow"]
    markers = []
    for variant in ("loader_module", "old_pickled_format"):
        copy = tmp_path / variant
        shutil.copytree(clean, copy)
        markers.append(tmp_path / f"{variant}.ran")
        _plant(copy, variant, markers[-1], plant_pickle)
        script.append(f"try:\n    mlflow.pyfunc.load_model({str(copy)!r})\nexcept Exception:\n    pass")
    subprocess.run([sys.executable, "-c", "\n".join(script)], check=True, timeout=300, capture_output=True)
    assert [m.exists() for m in markers] == [True, True]


@pytest.mark.parametrize("planted", VARIANTS, indirect=True)
def test_gate_and_models_promote_refuse_a_planted_champion_without_running_it(planted: Any) -> None:
    p, name, champion, marker, variant = planted
    client = MlflowClient(p.uri)
    before = len(client.search_model_versions(f"name='{name}'"))
    # the register-model step: the gate re-scores the champion → refused, the step (KFP task) fails
    with pytest.raises(tracking.UnsafeModelError) as err:
        p.register()
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"refusing to load {name} v{champion}: it carries ")
    assert FOUND[variant] in message
    assert not marker.exists()
    assert tracking.alias_version(p.uri, CHAMPION, name=name) == champion
    # no decision was written for the challenger, and the parent run is not reported as a success
    challenger = str(before + 1)
    assert "gate.decision" not in client.get_model_version(name, challenger).tags
    assert client.get_run(p.parent).info.status == "RUNNING"

    # `mdctr models promote` on that challenger: the same refusal, one line, exit 2
    from mdctr.cli import app

    out = CliRunner().invoke(app, ["models", "promote", challenger, "--name", name, "--tracking-uri", p.uri])
    assert out.exit_code == 2, out.output
    (line,) = [x for x in out.stderr.splitlines() if x.strip()]  # one line, no progress bars
    assert line.startswith(f"error: refusing to load {name} v{champion}: it carries ")
    assert FOUND[variant] in out.stderr and "Traceback" not in out.output
    assert not marker.exists()
    assert tracking.alias_version(p.uri, CHAMPION, name=name) == champion


def test_a_failed_promote_leaves_the_champion_and_the_exit_handler_fails_the_parent(
    ws: Any, winner: tuple[Path, Any], tmp_path: Path
) -> None:
    p = _pipeline(tmp_path, winner[0], ws.prepared.path)
    client = MlflowClient(p.uri)
    first = p.register()
    assert first.decision == PROMOTE
    # register-model no longer closes the parent run: the promote step can still fail it
    assert client.get_run(p.parent).info.status == "RUNNING"
    (tmp_path / "not-a-dir").write_text("")  # the manifest's folder is a file: the write fails
    with pytest.raises(OSError):
        promote_model(
            manifest_path=tmp_path / "not-a-dir" / "isvc.yaml",
            config=PromoteConfig(name=first.name, version=first.version, tracking_uri=p.uri),
        )
    assert tracking.alias_version(p.uri, CHAMPION, name=first.name) is None  # the alias never moved
    assert tracking.champion_history(p.uri, name=first.name) == []
    # the exit handler, as KFP calls it after the failed task
    changed = finish_run(
        tracking_uri=p.uri,
        kfp_run_id=p.kfp_run_id,
        state="FAILED",
        failed_task="promote-model",
        message="NotADirectoryError: not-a-dir",
    )
    run = client.get_run(p.parent)
    assert changed == [p.parent] and run.info.status == "FAILED"
    assert run.data.tags[TAG_FAILED_TASK] == "promote-model"


def test_pipeline_promotions_are_in_the_champion_history_and_roll_back(
    ws: Any, winner: tuple[Path, Any], tmp_path: Path
) -> None:
    p = _pipeline(tmp_path, winner[0], ws.prepared.path)
    first = p.register()
    promote_model(
        manifest_path=tmp_path / "isvc-1.yaml",
        config=PromoteConfig(name=first.name, version=first.version, tracking_uri=p.uri, reason=first.reason),
    )
    history = tracking.champion_history(p.uri, name=first.name)
    assert [(e["action"], e["version"], e["previous"], e["reason"]) for e in history] == [
        (PROMOTE, first.version, None, first.reason)
    ]
    second = p.register()  # the same model: the gate keeps the champion
    assert second.decision == KEEP
    # a second pipeline-style promotion (as the DAG's promote task would run it), then a rollback
    promote_model(
        manifest_path=tmp_path / "isvc-2.yaml",
        config=PromoteConfig(name=first.name, version=second.version, tracking_uri=p.uri, reason="re-run"),
    )
    assert tracking.alias_version(p.uri, CHAMPION, name=first.name) == second.version
    from mdctr.cli import app

    out = CliRunner().invoke(app, ["models", "rollback", "--name", first.name, "--tracking-uri", p.uri])
    assert out.exit_code == 0, out.output
    assert tracking.alias_version(p.uri, CHAMPION, name=first.name) == first.version
    history = tracking.champion_history(p.uri, name=first.name)
    assert [(e["action"], e["version"]) for e in history] == [
        ("promote", first.version),
        ("promote", second.version),
        ("rollback", first.version),
    ]
    # a pipeline that succeeded: the exit handler closes the parent FINISHED, naming no failed task
    assert finish_run(tracking_uri=p.uri, kfp_run_id=p.kfp_run_id, state="SUCCEEDED") == [p.parent]
    run = MlflowClient(p.uri).get_run(p.parent)
    assert run.info.status == "FINISHED" and TAG_FAILED_TASK not in run.data.tags


def test_registration_keeps_the_winner_runs_duration_and_logs_the_split(
    ws: Any, winner: tuple[Path, Any], tmp_path: Path
) -> None:
    p = _pipeline(tmp_path, winner[0], ws.prepared.path)
    client = MlflowClient(p.uri)
    trained = client.get_run(p.winner_run).info
    assert trained.status == "FINISHED"
    p.register()
    after = client.get_run(p.winner_run).info
    # the model is logged into the winner's run, but its end (and so its duration) is the training's
    assert (after.status, after.start_time, after.end_time) == (
        "FINISHED",
        trained.start_time,
        trained.end_time,
    )
    assert client.search_model_versions(f"run_id='{p.winner_run}'")
    # the split behind the data: on the parent run and on every training run
    params = client.get_run(p.parent).data.params
    assert (params["split"], params["split_seed"]) == ("random", "0")
    train_params = MlflowClient(ws.tracking_uri).get_run(winner[1].run_id).data.params
    assert (train_params["split"], train_params["split_seed"]) == ("random", "0")
