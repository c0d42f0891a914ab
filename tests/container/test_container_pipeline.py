"""Integration: the image built from this checkout, the whole DAG with every task in a container (KFP's
DockerRunner), MLflow a tracking server the containers reach; a failing task fails the run and its MLflow parent
run is FAILED; the serve image answers over HTTP with the offline predictions.

Builds the image with ``scripts/image`` (reused when the exact tag exists; a cold build takes ~10 min on two
cores) and starts a Docker engine with ``scripts/local-docker`` when none runs (root; installs docker.io and
debootstrap when missing, as on CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

import mdctr
from mdctr import tracking
from mdctr.pipeline import PROJECT_ROOT, PipelineArguments, run_local

pytestmark = [pytest.mark.integration, pytest.mark.container]

#: one single-domain baseline and one entry routed by mined domains; 1 epoch on 3,000 synthetic rows
MODELS = ["dnn", "adaptive2"]
#: the synthetic dataset registers under its own model (also the serve image's v2 route name for it)
NAME = tracking.registered_model_name("synthetic")
RUN = dict(
    dataset="synthetic",
    dataset_options={"rows": 3000, "seed": 3},
    models=MODELS,
    domain_sources=["none", "mined"],
    seeds=[0],
    epochs=1,
    train_options={"batch_size": 512},
)


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    """DOCKER_HOST of a running engine (ours, started by scripts/local-docker, when none runs)."""
    scripts = PROJECT_ROOT / "scripts"
    running = subprocess.run([str(scripts / "local-docker"), "status"], capture_output=True, timeout=60)
    subprocess.run([str(scripts / "local-docker"), "start"], check=True, timeout=600)
    line = subprocess.run(
        [str(scripts / "local-docker"), "env"], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    host = line.removeprefix("export DOCKER_HOST=")
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host  # the DockerRunner's docker.from_env() reads it
    try:
        yield host
    finally:
        if running.returncode != 0:  # we started it: stop it (images stay in its data root for the next run)
            subprocess.run([str(scripts / "local-docker"), "stop"], timeout=120)
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved


@pytest.fixture(scope="module")
def images(docker_host: str) -> dict[str, float | str]:
    """Both targets of this checkout's image (built unless the exact tags exist)."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "image")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    print(f"scripts/image: {time.perf_counter() - t0:.1f} s\n{res.stdout}")
    out = {
        "runtime": mdctr.image_ref(),
        "serve": mdctr.image_ref("serve"),
        "seconds": time.perf_counter() - t0,
    }
    for target in ("runtime", "serve"):
        inspect = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Config.User}} {{.Size}}", str(out[target])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert inspect.returncode == 0, inspect.stderr
        user, size = inspect.stdout.split()
        assert user == "10001", f"{target} runs as {user!r}"
        assert int(size) <= 2.5e9, f"{target} is {int(size) / 1e9:.2f} GB"
    return out


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A tracking server on the host; the containers share the host's network and reach it at its URL."""
    from mdctr.devservices.mlflow_server import start_mlflow_server

    root = tmp_path_factory.mktemp("mlflow")
    server = start_mlflow_server(f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"), log_dir=root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def first_run(images: dict, mlflow_server, tmp_path_factory: pytest.TempPathFactory) -> object:
    t0 = time.perf_counter()
    result = _run_docker(RUN, mlflow_server, runs_dir=tmp_path_factory.mktemp("runs"))
    print(f"container DAG: {time.perf_counter() - t0:.1f} s")
    return result


def _run_docker(arguments: dict, server, runs_dir: Path) -> object:
    """``run_local`` with the docker runner and ``server`` as the tracking server the containers reach."""
    return run_local(
        PipelineArguments.local(**arguments, tracking_uri=server.url),
        runner="docker",
        artifacts_destination=server.artifacts_destination,
        runs_dir=runs_dir,
    )


@pytest.mark.timeout(3600)
def test_whole_dag_runs_in_containers_and_promotes(first_run, images: dict, mlflow_server) -> None:
    uri = mlflow_server.url
    assert "dnn/none" in first_run.leaderboard and "adaptive2/mined" in first_run.leaderboard
    assert first_run.promoted and first_run.model_uri == f"models:/{NAME}/1"
    assert tracking.alias_version(uri, tracking.CHAMPION, name=NAME) == "1"
    assert tracking.alias_version(uri, tracking.CHALLENGER, name=NAME) == "1"
    # every task wrote its outputs as the image's user, so it really ran in a container
    for task in ("fetch-data", "start-run", "validate-data", "prepare-data", "mine-domains", "evaluate"):
        owners = {p.stat().st_uid for p in (first_run.run_dir / task).rglob("*")}
        assert owners == {10001}, (task, owners)
    # the parent run: closed, tagged with the image's code version
    from mdctr.tracking.setup import client as get_client

    client = get_client(uri)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`mdctr.kfp_run_id` != ''")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout
    assert parents[0].data.tags["mdctr.git_sha"].startswith(sha.strip())


@pytest.mark.timeout(1800)
def test_a_failing_task_fails_the_run_and_marks_the_parent_run_failed(
    first_run, mlflow_server, tmp_path: Path
) -> None:
    from mdctr.tracking.runs import TAG_FAILED_TASK, TAG_FAILURE
    from mdctr.tracking.setup import client as get_client

    with pytest.raises(RuntimeError, match="failed"):
        _run_docker(
            # mine_domains rejects the miner option: the deliberate failure
            {**RUN, "models": ["dnn"], "domain_sources": ["none"], "miner_options": {"no_such_option": 1}},
            mlflow_server,
            runs_dir=tmp_path / "runs",
        )
    client = get_client(mlflow_server.url)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    failed = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FAILED'")
    assert len(failed) == 1, [r.info.status for r in client.search_runs([exp.experiment_id])]
    tags = failed[0].data.tags
    # the failing task and its error, on the run a user looks at
    assert tags[TAG_FAILED_TASK] == "mine-domains", tags
    assert "ConfigError" in tags[TAG_FAILURE] and "no_such_option" in tags[TAG_FAILURE], tags
    # nothing new registered: the champion is still the first run's
    assert tracking.alias_version(mlflow_server.url, tracking.CHAMPION, name=NAME) == "1"


def test_a_container_that_fails_at_once_is_reported_failed(images: dict) -> None:
    """kfp 2.17's DockerRunner reports exit code 0 for a task container already auto-removed at ``wait()`` (a
    task failing within a second passed as SUCCEEDED in CI); inside a docker run mdctr reads the real code."""
    import docker
    from kfp.local import docker_task_handler as handler

    from mdctr.pipeline.runners import docker_exit_codes

    client = docker.from_env()
    before = {c.id for c in client.containers.list(all=True)}
    with docker_exit_codes():
        codes = [
            handler.run_docker_container(
                client, str(images["runtime"]), ["python3", "-c", f"import sys; sys.exit({code})"], {}
            )
            for code in (3, 0)
        ]
    assert codes == [3, 0]
    assert {c.id for c in client.containers.list(all=True)} == before  # each container removed after its exit
    assert (
        handler.run_docker_container is not None
        and handler.run_docker_container.__name__ == "run_docker_container"
    )


@pytest.mark.timeout(900)
def test_serve_image_answers_with_the_offline_predictions(first_run, images: dict, mlflow_server) -> None:
    import mlflow.pyfunc

    from mdctr.serving.server import free_port

    model_uri = f"models:/{NAME}@{tracking.CHAMPION}"
    rows = tracking.load_input_example(mlflow_server.url, first_run.model_uri)
    port = free_port()
    name = f"mdctr-serve-test-{port}"
    subprocess.run(
        [
            "docker", "run", "-d", "--rm", "--name", name, "--network", "host",
            "-e", f"MLFLOW_TRACKING_URI={mlflow_server.url}", "-e", f"MODEL_URI={model_uri}", "-e", f"PORT={port}",
            str(images["serve"]),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    try:
        _wait_for_server(port, timeout=300)
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
        r = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 200, r.text[:2000]
        served = np.asarray(r.json()["predictions"], dtype=np.float64).reshape(-1)
        mlflow.set_tracking_uri(mlflow_server.url)
        # the JSON example reads back as float64; the signature (and the server's JSON parsing) says float32
        typed = rows.astype({c: "float32" for c in rows.select_dtypes("float64").columns})
        offline = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(typed), dtype=np.float64).reshape(-1)
        np.testing.assert_allclose(served, offline, rtol=0, atol=1e-6)
        # the same rows over the Open Inference Protocol v2 (what the KServe custom predictor speaks),
        # typed by the model's own v2 metadata
        meta = requests.get(f"http://127.0.0.1:{port}/v2/models/{NAME}", timeout=30)
        assert meta.status_code == 200, meta.text[:2000]
        # the example carries the columns the model requires; an input it leaves out is one the routing does
        # not use (the hand-crafted domain of a model routed by mined domains), marked optional in the metadata
        declared = meta.json()["inputs"]
        assert all(i.get("optional") for i in declared if i["name"] not in rows), declared
        inputs = [
            {
                "name": i["name"],
                "shape": [len(rows)],
                "datatype": i["datatype"],
                "data": rows[i["name"]].tolist(),
            }
            for i in declared
            if i["name"] in rows
        ]
        r = requests.post(
            f"http://127.0.0.1:{port}/v2/models/{NAME}/infer",
            json={"inputs": inputs},
            timeout=60,
        )
        assert r.status_code == 200, r.text[:2000]
        (out,) = r.json()["outputs"]
        assert out["shape"] == [len(rows)]
        np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float64), offline, rtol=0, atol=1e-6)
    finally:
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=60)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        print(logs.stdout[-3000:], logs.stderr[-3000:])


def _wait_for_server(port: int, timeout: float) -> None:
    """Until the server answers a health probe: MLflow's /ping or the v2 protocol's readiness endpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in ("/ping", "/v2/health/ready"):
            try:
                if requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
        time.sleep(1)
    raise AssertionError(f"the serve container did not answer on port {port} within {timeout:.0f} s")


@pytest.mark.timeout(2400)
def test_the_loop_in_containers_warm_start_canary_serve_log_and_monitor(
    first_run, images: dict, mlflow_server, tmp_path: Path
) -> None:
    """The production loop with every task and the server in the project's images: a retraining run warm-started
    from the champion (loaded from the tracking server inside the train task's container) rolls out as a 20%
    canary, ``mdctr models promote --finish`` completes it, the serve image logs what it scores
    (``MDCTR_SERVE_LOG``, the variable a KServe manifest sets), and ``mdctr monitor`` reads that log: the
    served data itself passes, one domain's share tripled is flagged. (Periods are a split option, the same code in a
    container; the period loop runs on the host in tests/pipeline/test_production_loop.py.)"""
    from typer.testing import CliRunner

    from mdctr.cli import app
    from mdctr.data.synthetic import generate
    from mdctr.serving.server import free_port

    uri = mlflow_server.url
    champion = tracking.alias_version(uri, tracking.CHAMPION, name=NAME)
    warm = _run_docker(
        {
            **RUN,
            "epochs": 2,
            "warm_start": "champion",
            "warm_start_fallback": "cold",  # the entry of the champion's model warm-starts, the other trains cold
            "canary_percent": 20,
        },
        mlflow_server,
        runs_dir=tmp_path / "runs",
    )
    from mdctr.tracking.setup import client as get_client

    client = get_client(uri)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    warmed = client.search_runs([exp.experiment_id], filter_string="params.warm_start = 'champion'")
    assert warmed, "no training run of the warm run logged warm_start=champion"
    if warm.promoted:
        assert warm.alias == "canary"
        version = warm.model_uri.rsplit("/", 1)[-1]
        assert tracking.alias_version(uri, "canary", name=NAME) == version
        assert tracking.alias_version(uri, tracking.CHAMPION, name=NAME) == champion
        out = CliRunner().invoke(
            app,
            [
                "models",
                "promote",
                "--finish",
                "--tracking-uri",
                uri,
                "--manifest",
                str(tmp_path / "isvc.yaml"),
                "--artifacts-destination",
                mlflow_server.artifacts_destination,
            ],
        )
        assert out.exit_code == 0, out.stdout + out.stderr
        assert tracking.alias_version(uri, tracking.CHAMPION, name=NAME) == version
    else:  # the gate kept the champion: no canary was started
        assert tracking.alias_version(uri, "canary", name=NAME) is None

    # serve the champion from the serve image with the request log on; replay the data; SIGTERM flushes
    logs = tmp_path / "requests"
    logs.mkdir()
    logs.chmod(0o777)  # the image runs as uid 10001
    columns = list(tracking.load_input_example(uri, f"models:/{NAME}@{tracking.CHAMPION}").columns)
    # the hand-crafted domain goes with every request (optional for a model that does not route by it), so the
    # log holds the domain mix the monitor watches
    columns += [] if "domain" in columns else ["domain"]
    table = generate(rows=3000, seed=3).table
    port = free_port()
    name = f"mdctr-serve-loop-{port}"
    subprocess.run(
        [
            "docker", "run", "-d", "--name", name, "--network", "host", "-v", f"{logs}:/logs",
            "-e", f"MLFLOW_TRACKING_URI={uri}", "-e", f"MODEL_URI=models:/{NAME}@{tracking.CHAMPION}",
            "-e", f"PORT={port}", "-e", "MDCTR_SERVE_LOG=/logs", str(images["serve"]),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    try:
        _wait_for_server(port, timeout=300)
        # planted drift: the smallest hand-crafted domain three times as likely (the synthetic ids are a closed
        # vocabulary, which the server refuses to score unseen, so an id flood cannot pass through it)
        domain = table["domain"].to_numpy()
        weight = np.where(domain == np.bincount(domain).argmin(), 3.0, 1.0)
        pick = np.random.default_rng(0).choice(len(table), size=len(table), p=weight / weight.sum())
        flood = table.iloc[pick].reset_index(drop=True)
        for tag, rows in (("clean", table), ("flood", flood)):
            for i in range(0, len(rows), 500):
                part = rows.iloc[i : i + 500][columns]
                r = requests.post(
                    f"http://127.0.0.1:{port}/invocations",
                    json={"dataframe_split": json.loads(part.to_json(orient="split", index=False))},
                    headers={"X-Request-Id": f"{tag}-{i}"},
                    timeout=60,
                )
                assert r.status_code == 200, r.text[:2000]
    finally:
        subprocess.run(["docker", "stop", "-t", "60", name], capture_output=True, timeout=120)  # SIGTERM
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
    import pandas as pd

    logged = pd.concat([pd.read_parquet(p) for p in sorted(logs.rglob("*.parquet"))])
    assert len(logged) == 2 * len(table)
    # the flood was sent after the clean replay: the first flood row's serving time splits the two windows
    first_flood = logged.loc[logged["mdctr_request_id"].str.startswith("flood"), "mdctr_served_at"].min()
    bound = first_flood.isoformat()
    reference = (warm.run_dir if warm.promoted else first_run.run_dir) / "prepare-data" / "prepared"
    monitor = [
        "monitor",
        "--log",
        str(logs),
        "--reference",
        str(reference),
        "--gx-rows",
        "1000",
        "--tracking-uri",
        uri,
    ]
    clean = CliRunner().invoke(app, [*monitor, "--out", str(tmp_path / "m-clean"), "--until", bound])
    assert clean.exit_code == 0, clean.stdout + clean.stderr
    assert "monitored 3000 rows" in clean.stdout
    flagged = CliRunner().invoke(app, [*monitor, "--out", str(tmp_path / "m-flood"), "--since", bound])
    assert flagged.exit_code == 1, flagged.stdout + flagged.stderr
    assert "handcrafted domain shares: PSI" in flagged.stderr and "monitored 3000 rows" in flagged.stdout
