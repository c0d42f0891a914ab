"""A pipeline train_model entry with train_backend="trainjob": the step builds the TrainJob, submits it to the
stand-in API server (found through a kubeconfig, as on a laptop), whose "pods" run the job's own command under
torchrun on 2 nodes (DDP, gloo), reading the prepared data from S3 and writing bundle and results there; the
step then reads them back. Compared with the same entry trained in the task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mdctr.steps.fetch_data import FetchConfig, fetch_data
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE, PrepareConfig, prepare_data
from mdctr.steps.train_model import METRICS_FILE, PREDICTIONS_FILE, TrainStepConfig, train_model
from mdctr.steps.trainjob_task import fetch_tree, publish_tree
from mdctr.trainjob import STEP_MODULE, TrainJobFailed

OPTIONS = json.dumps({"rows": 3000, "seed": 1})
NS = "team-a"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(prepared dir, MLflow URI, parent run id) of tiny synthetic data."""
    root = tmp_path_factory.mktemp("trainjob-data")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    fetched = fetch_data(
        out_dir=root / "raw",
        config=FetchConfig(
            dataset="synthetic", dataset_options=OPTIONS, tracking_uri=uri, kfp_run_id="kfp-1"
        ),
    )
    prepare_data(
        source=root / "raw",
        out_dir=root / "prepared",
        config=PrepareConfig(dataset="synthetic", dataset_options=OPTIONS),
    )
    return root / "prepared", uri, fetched.run_id


def _config(**kw: Any) -> TrainStepConfig:
    base: dict[str, Any] = {
        "model_name": "mmoe",
        "domain_source": "handcrafted",
        "seed": 0,
        "epochs": 1,
        "train_options": '{"batch_size": 512}',
        # a routed model (gates and towers per domain) without BatchNorm, which normalises by each rank's rows:
        # then DDP reproduces one process up to float summation order
        "model_options": '{"batchnorm": false}',
    }
    return TrainStepConfig(**{**base, **kw})


@pytest.mark.integration  # the S3 server, and two torchrun nodes training for ~15 s
@pytest.mark.slow
def test_an_entry_trains_as_a_two_node_trainjob_on_s3_and_reads_its_outputs_back(
    data: tuple[Path, str, str],
    kube_api: Any,
    s3_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mdctr import tracking
    from mdctr.serving.bundle import Predictor

    prepared, mlflow_uri, parent = data
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig(tmp_path / "kubeconfig", NS)))
    prepared_uri = "s3://mdctr/kfp/run-1/prepare-data/prepared"
    results_uri = "s3://mdctr/kfp/run-1/train-model-0/results"
    publish_tree(prepared, prepared_uri)
    kube_api.run_jobs_locally()
    common = {"tracking_uri": mlflow_uri, "parent_run_id": parent}

    out = train_model(
        prepared_dir=tmp_path / "prepared-not-read",  # the task reads nothing: the pods read the URI
        domains_dir=None,
        bundle_dir=tmp_path / "bundle",
        results_dir=tmp_path / "results",
        config=_config(train_backend="trainjob", train_nodes=2, **common),
        prepared_uri=prepared_uri,
        domains_uri="s3://mdctr/kfp/run-1/mine-domains/domains",
        results_uri=results_uri,
    )

    # one TrainJob, built by trainjob_spec for this entry, accepted by the server's schema check
    (job,) = kube_api.created
    trainer = job["spec"]["trainer"]
    assert job["metadata"]["name"].startswith("mdctr-mmoe-handcrafted-s0-")
    assert job["metadata"]["namespace"] == NS and trainer["numNodes"] == 2
    assert trainer["command"] == ["torchrun", "--module", STEP_MODULE]
    args = trainer["args"]
    assert args[args.index("--prepared") + 1] == prepared_uri
    assert args[args.index("--out") + 1] == results_uri + ".trainjob"
    assert args[args.index("--domains") + 1] == ""  # handcrafted routing needs no miner: nothing fetched
    job_config = json.loads(args[args.index("--config") + 1])
    assert job_config["train_backend"] == "task" and job_config["model_name"] == "mmoe"
    # both nodes ran and joined one DDP group of 2; rank 0 alone published
    pods = sorted(kube_api.pods, key=lambda p: p["node"])
    assert [p["returncode"] for p in pods] == [0, 0], [p["tail"] for p in pods]
    for rank, pod in enumerate(pods):
        assert f"data-parallel: rank {rank} of 2 (gloo" in pod["log"], pod["tail"]
    assert ["published" in p["log"] for p in pods] == [True, False]

    # the task's outputs are the job's: results, predictions, a bundle that serves, the nested MLflow run
    summary = json.loads((out.results_dir / METRICS_FILE).read_text())
    assert summary["entry"] == {"model": "mmoe", "domain_source": "handcrafted", "seed": 0}
    assert out.metrics["auc"] == summary["overall"]["auc"] and out.width == summary["overall"]["width"]
    preds = np.load(out.results_dir / PREDICTIONS_FILE)
    assert len(preds["probs"]) == len(pd.read_parquet(prepared / "test.parquet"))
    example = pd.read_parquet(out.results_dir / SERVING_EXAMPLE_FILE)
    scores = Predictor.load(out.bundle_dir).predict(example)
    assert scores.shape == (len(example),) and np.all((scores > 0) & (scores < 1))
    assert out.run_id and tracking.setup.client(mlflow_uri).get_run(out.run_id).info.status == "FINISHED"

    # the same entry trained in the task: DDP over 2 nodes with the same global batch ends at the same AUC
    # (with BatchNorm the gap was 0.002-0.003 on this 5-step run; tests/training/test_distributed.py covers it)
    local = train_model(
        prepared_dir=prepared,
        domains_dir=None,
        bundle_dir=tmp_path / "local-bundle",
        results_dir=tmp_path / "local-results",
        config=_config(),
    )
    assert abs(local.metrics["auc"] - out.metrics["auc"]) < 1e-4, (local.metrics["auc"], out.metrics["auc"])
    assert local.width == pytest.approx(out.width)


def test_a_failing_job_fails_the_step_with_the_job_named(
    kube_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig(tmp_path / "kubeconfig", NS)))
    kube_api.run_jobs_locally()
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainJobFailed) as err:
        train_model(
            prepared_dir=tmp_path / "empty",  # no splits: every pod fails reading them
            domains_dir=None,
            bundle_dir=tmp_path / "bundle",
            results_dir=tmp_path / "results",
            config=_config(model_name="dnn", domain_source="none", train_backend="trainjob", train_nodes=1),
        )
    msg = str(err.value)
    assert (
        f"TrainJob {NS}/mdctr-dnn-none-s0-" in msg and "failed: FailedJobs: node-0 exited with code 1" in msg
    )
    assert not (tmp_path / "results").exists()


def test_a_mistake_in_the_entry_fails_before_any_job_is_created(
    kube_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mdctr.config import ConfigError

    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig(tmp_path / "kubeconfig", NS)))
    with pytest.raises(ConfigError, match="train_options: unknown key"):
        train_model(
            prepared_dir=tmp_path,
            domains_dir=None,
            bundle_dir=tmp_path / "bundle",
            results_dir=tmp_path / "results",
            config=_config(train_options='{"batch_sise": 512}', train_backend="trainjob"),
        )
    assert kube_api.created == []


def test_no_cluster_no_kubeconfig_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RuntimeError, match="train_backend 'trainjob' needs a Kubernetes API"):
        train_model(
            prepared_dir=tmp_path,
            domains_dir=None,
            bundle_dir=tmp_path / "bundle",
            results_dir=tmp_path / "results",
            config=_config(train_backend="trainjob"),
        )


@pytest.mark.integration  # the S3 server
def test_trees_round_trip_through_s3(s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text("{}")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    publish_tree(src, "s3://mdctr/t/tree")
    got = fetch_tree("s3://mdctr/t/tree", tmp_path / "dst")
    assert sorted(str(p.relative_to(got)) for p in got.rglob("*")) == ["a.json", "sub", "sub/b.bin"]
    assert (got / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    # KFP names a MinIO pipeline root minio://: the same bucket through the S3 endpoint
    again = fetch_tree("minio://mdctr/t/tree", tmp_path / "dst-minio")
    assert (again / "a.json").read_text() == "{}"
    with pytest.raises(FileNotFoundError, match="s3://mdctr/t/nothing: no such directory"):
        fetch_tree("s3://mdctr/t/nothing", tmp_path / "none")
