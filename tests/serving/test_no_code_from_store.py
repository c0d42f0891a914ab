"""Nothing loaded from the artifact store executes code: a malicious pickle planted where a model's weights,
a pickled ``python_model``, a shipped ``code/`` folder or a trainer checkpoint would be is never run."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
import yaml

from mdctr import tracking
from mdctr.serving import Predictor
from mdctr.serving.bundle import WEIGHTS_FILE, bundle_dir_of
from mdctr.serving.demo import DEMO_SCHEMA, DemoBundle


def test_the_exploit_pickle_really_runs_when_unpickled(tmp_path: Path, plant_pickle: Any) -> None:
    """Control: the planted file is a working exploit (so the tests below would notice if it ran)."""
    plant_pickle(tmp_path / "x.pkl", tmp_path / "ran")
    with (tmp_path / "x.pkl").open("rb") as f:
        pickle.load(f).close()
    assert (tmp_path / "ran").exists()


def test_planted_weights_pickle_is_refused(demo: DemoBundle, tmp_path: Path, plant_pickle: Any) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo.path, bundle)
    marker = tmp_path / "pwned"
    plant_pickle(bundle / WEIGHTS_FILE, marker)
    with pytest.raises(pickle.UnpicklingError):
        Predictor.load(bundle)
    assert not marker.exists()


def test_planted_miner_pickle_is_refused(demo: DemoBundle, tmp_path: Path, plant_pickle: Any) -> None:
    from mdctr.domains.miner import STATE_FILE, DomainMiner, MinerConfig
    from mdctr.serving import save_bundle

    pred = Predictor.load(demo.path)
    miner = DomainMiner(
        pred.info.inputs, MinerConfig(num_codes=3, hidden=(8,), head_hidden=(8,), embed_dim=4)
    )
    bundle = save_bundle(
        tmp_path / "mined",
        model=pred.model,
        model_name="dnn",
        model_config=pred.info.model_config,
        width=1.0,
        spec=demo.spec,
        domain_source="mined",
        miner=miner,
    )
    Predictor.load(bundle)  # loads as saved
    marker = tmp_path / "pwned"
    plant_pickle(bundle / "miner" / STATE_FILE, marker)
    with pytest.raises(pickle.UnpicklingError):
        Predictor.load(bundle)
    assert not marker.exists()


@pytest.mark.integration
def test_registered_model_loads_without_running_planted_pickles_or_code(
    demo: DemoBundle, tmp_path: Path, plant_pickle: Any
) -> None:
    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = tracking.start_parent_run(uri, run_name="security")
    run_id = tracking.log_training_run(uri, parent, run_name="dnn", params={}, system_metrics=False)
    rv = tracking.register_bundle(uri, demo.path, run_id=run_id, input_example=demo.table)
    model_dir = Path(mlflow.artifacts.download_artifacts(rv.model_uri, dst_path=str(tmp_path / "dl")))

    # the logged model: a loader module from the installed package, data = the bundle; no pickle, no code
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mdctr.tracking.pyfunc" and pyfunc["data"] == "data/bundle"
    assert "code" not in pyfunc or pyfunc["code"] is None
    assert "signature" not in mlmodel  # no cast of request values before mdctr's own checks
    assert not list(model_dir.rglob("*.pkl")) and not (model_dir / "code").exists()

    # plant a pickled python_model and a code/ folder shadowing mdctr, as an attacker with store access would
    marker = tmp_path / "pwned"
    plant_pickle(model_dir / "python_model.pkl", marker)
    plant_pickle(model_dir / "data" / "bundle" / "python_model.pkl", marker)
    evil = model_dir / "code" / "mdctr"
    evil.mkdir(parents=True)
    (evil / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (evil / "tracking").mkdir()
    (evil / "tracking" / "pyfunc.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(30)
    offline = Predictor.load(demo.path).predict(rows)
    # MLflow's loader (the MLmodel as logged) and the production server's loader (fixed data/bundle path)
    served = mlflow.pyfunc.load_model(str(model_dir)).predict(rows)
    np.testing.assert_array_equal(np.asarray(served), offline)
    np.testing.assert_array_equal(Predictor.load(bundle_dir_of(model_dir)).predict(rows), offline)
    assert not marker.exists()

    # a tampered weights file inside the stored model is refused by both loaders
    plant_pickle(model_dir / "data" / "bundle" / WEIGHTS_FILE, marker)
    with pytest.raises(pickle.UnpicklingError):
        Predictor.load(bundle_dir_of(model_dir))
    with pytest.raises(pickle.UnpicklingError):
        mlflow.pyfunc.load_model(str(model_dir))
    assert not marker.exists()
    assert torch.load  # torch stays importable: nothing above replaced modules


def test_old_format_model_is_served_from_its_bundle_only(
    demo: DemoBundle, tmp_path: Path, plant_pickle: Any
) -> None:
    """A version logged in the old format (pickled python_model, code/, artifacts/bundle): the production
    server's loader takes artifacts/bundle and touches nothing else."""
    model_dir = tmp_path / "old"
    shutil.copytree(demo.path, model_dir / "artifacts" / "bundle")
    marker = tmp_path / "pwned"
    plant_pickle(model_dir / "python_model.pkl", marker)
    (model_dir / "code" / "mdctr").mkdir(parents=True)
    (model_dir / "code" / "mdctr" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (model_dir / "MLmodel").write_text("flavors: {python_function: {loader_module: mlflow.pyfunc.model}}\n")
    assert bundle_dir_of(model_dir) == model_dir / "artifacts" / "bundle"
    rows = demo.table[list(DEMO_SCHEMA.serving_columns)].head(5)
    np.testing.assert_array_equal(
        Predictor.load(bundle_dir_of(model_dir)).predict(rows), Predictor.load(demo.path).predict(rows)
    )
    assert not marker.exists()


def test_mdctr_serve_refuses_a_model_directory_that_carries_code(
    demo: DemoBundle, tmp_path: Path, plant_pickle: Any
) -> None:
    """``mdctr serve`` refuses what the promotion gate refuses (issue #22): an MLflow model directory with a
    pickle or a ``code/`` folder ends the command with one line and status 2, before anything is loaded; the
    project's own format (loader module, weights + JSON in data/bundle) is served."""
    from typer.testing import CliRunner

    from mdctr.cli import app

    old = tmp_path / "old"
    shutil.copytree(demo.path, old / "artifacts" / "bundle")
    marker = tmp_path / "pwned"
    plant_pickle(old / "python_model.pkl", marker)
    (old / "MLmodel").write_text("flavors: {python_function: {loader_module: mlflow.pyfunc.model}}\n")
    result = CliRunner().invoke(app, ["serve", "--model-uri", str(old), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "refusing to load" in result.output and "python_model.pkl" in result.output
    assert "Traceback" not in result.output and not marker.exists()

    good = tmp_path / "good"
    shutil.copytree(demo.path, good / "data" / "bundle")
    (good / "MLmodel").write_text(
        "flavors: {python_function: {loader_module: mdctr.tracking.pyfunc, data: data/bundle}}\n"
    )
    ok = CliRunner().invoke(app, ["serve", "--model-uri", str(good), "--dry-run"])
    assert ok.exit_code == 0, ok.output
