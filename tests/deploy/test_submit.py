"""``mdctr.pipeline.submit`` against a recording stand-in for ``kfp.Client`` (no KFP server here)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from mdctr.pipeline import PipelineArguments, TrackingURIError, submit


class RecordingClient:
    """Answers like kfp.Client and records each call (name, kwargs)."""

    def __init__(self, existing_pipeline: str | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.existing = existing_pipeline
        self.uploaded: list[dict[str, Any]] = []

    def get_pipeline_id(self, name: str) -> str | None:
        self.calls.append(("get_pipeline_id", {"name": name}))
        return self.existing

    def upload_pipeline(self, path: str, **kw: Any) -> Any:
        self.calls.append(("upload_pipeline", kw))
        self.uploaded.append(next(yaml.safe_load_all(Path(path).read_text())))
        return SimpleNamespace(pipeline_id="p-new")

    def upload_pipeline_version(self, path: str, name: str, **kw: Any) -> Any:
        self.calls.append(("upload_pipeline_version", {"name": name, **kw}))
        self.uploaded.append(next(yaml.safe_load_all(Path(path).read_text())))
        return SimpleNamespace(pipeline_version_id="v-1")

    def create_experiment(self, name: str, **kw: Any) -> Any:
        self.calls.append(("create_experiment", {"name": name, **kw}))
        return SimpleNamespace(experiment_id="e-1")

    def run_pipeline(self, **kw: Any) -> Any:
        self.calls.append(("run_pipeline", kw))
        return SimpleNamespace(run_id="r-1")

    def create_recurring_run(self, **kw: Any) -> Any:
        self.calls.append(("create_recurring_run", kw))
        return SimpleNamespace(recurring_run_id="rr-1")


def test_first_submit_creates_the_pipeline_then_a_version_and_a_run() -> None:
    client = RecordingClient()
    result = submit(
        "http://kfp.example",
        arguments={"dataset": "ml-1m", "epochs": 2, "tracking_uri": "https://mlflow.example"},
        experiment="nightly",
        version="v7",
        pipeline_root="s3://mdctr/kfp",
        client=client,
    )
    names = [c[0] for c in client.calls]
    assert names == [
        "get_pipeline_id",
        "upload_pipeline",
        "upload_pipeline_version",
        "create_experiment",
        "run_pipeline",
    ]
    run = dict(client.calls)["run_pipeline"]
    assert run["params"] == {"dataset": "ml-1m", "epochs": 2, "tracking_uri": "https://mlflow.example"}
    assert run["version_id"] == "v-1" and run["pipeline_id"] == "p-new"
    assert run["pipeline_root"] == "s3://mdctr/kfp"
    assert dict(client.calls)["upload_pipeline_version"]["name"] == "v7"
    assert client.uploaded[0]["pipelineInfo"]["name"] == "mdctr-training"
    assert result.run_id == "r-1" and result.recurring_run_id is None


def test_pipeline_arguments_are_sent_whole() -> None:
    """A ``PipelineArguments`` sends every parameter (checked against the compiled package first)."""
    client = RecordingClient()
    args = PipelineArguments(epochs=2, tracking_uri="https://mlflow.example")
    submit("http://kfp.example", arguments=args, client=client)
    assert dict(client.calls)["run_pipeline"]["params"] == args.kfp_arguments()
    with pytest.raises(TrackingURIError, match="tracking_uri is empty"):  # the default: no server pods reach
        submit("http://kfp.example", arguments=PipelineArguments(), client=RecordingClient())


def test_existing_pipeline_gets_a_new_version_and_a_cron_schedule() -> None:
    client = RecordingClient(existing_pipeline="p-old")
    result = submit(
        "http://kfp.example",
        arguments={"tracking_uri": "http://mlflow.mdctr:5000"},
        cron="0 0 3 * * *",
        name="mdctr-training",
        client=client,
    )
    names = [c[0] for c in client.calls]
    assert "upload_pipeline" not in names
    rec = dict(client.calls)["create_recurring_run"]
    assert rec["cron_expression"] == "0 0 3 * * *" and rec["pipeline_id"] == "p-old"
    assert result.recurring_run_id == "rr-1" and result.run_id is None


def test_five_field_cron_is_rejected_before_anything_is_scheduled() -> None:
    client = RecordingClient(existing_pipeline="p-old")
    with pytest.raises(ValueError, match="seconds first"):
        submit(
            "http://kfp.example", arguments={"tracking_uri": "http://m:5000"}, cron="0 3 * * *", client=client
        )
    assert "create_recurring_run" not in [c[0] for c in client.calls]


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        (None, "tracking_uri is empty"),
        ("", "tracking_uri is empty"),
        ("sqlite:///mlflow.db", "local to this"),
    ],
)
def test_a_cluster_run_needs_a_tracking_server(uri: str | None, match: str) -> None:
    client = RecordingClient()
    arguments = {} if uri is None else {"tracking_uri": uri}
    with pytest.raises(TrackingURIError, match=match) as err:
        submit("http://kfp.example", arguments=arguments, client=client)
    assert "--tracking-uri" in str(err.value)
    assert client.calls == [], "nothing may reach the server"


MONITORING_PARAMS = {
    "log_uri": "s3://mdctr-logs/serving",
    "reference_uri": "s3://mdctr/kfp/run-1/prepare-data/prepared",
    "reference_codes_uri": "s3://mdctr/kfp/run-1/mine-domains/domains",
}


def test_monitoring_pipeline_is_scheduled_as_a_recurring_run() -> None:
    client = RecordingClient()
    arguments = {**MONITORING_PARAMS, "feature_max_psi": '{"user_id": "inf"}'}
    result = submit(
        "http://kfp.example", arguments=arguments, cron="0 0 6 * * *", pipeline="monitoring", client=client
    )
    calls = dict(client.calls)
    assert calls["get_pipeline_id"] == {"name": "mdctr-monitoring"}
    assert calls["upload_pipeline"]["pipeline_name"] == "mdctr-monitoring"
    spec = client.uploaded[0]
    assert spec["pipelineInfo"]["name"] == "mdctr-monitoring"
    assert set(spec["root"]["dag"]["tasks"]) == {"importer", "importer-2", "monitor"}
    assert "feature_max_oov_share" in spec["root"]["inputDefinitions"]["parameters"]
    rec = calls["create_recurring_run"]
    assert rec["cron_expression"] == "0 0 6 * * *" and rec["params"] == arguments
    assert rec["job_name"].startswith("mdctr-monitoring ")
    assert result.recurring_run_id == "rr-1" and result.run_id is None


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (
            {"log_uri": "s3://l"},
            r"missing required parameter\(s\) \['reference_codes_uri', 'reference_uri'\]",
        ),
        ({**MONITORING_PARAMS, "max_pis": 0.3}, r"unknown parameter\(s\) \['max_pis'\]"),
        (
            {**MONITORING_PARAMS, "feature_max_psi": '{"user_id": "lots"}'},
            "feature_max_psi: column 'user_id'",
        ),
        (
            {**MONITORING_PARAMS, "feature_max_oov_share": "[0.3]"},
            "feature_max_oov_share: expected a JSON object",
        ),
        ({**MONITORING_PARAMS, "tracking_uri": "sqlite:///m.db"}, "local to this"),
    ],
)
def test_bad_monitoring_params_are_refused_before_the_server(arguments: dict[str, Any], match: str) -> None:
    client = RecordingClient()
    with pytest.raises(ValueError, match=match):
        submit("http://kfp.example", arguments=arguments, pipeline="monitoring", client=client)
    assert client.calls == [], "nothing may reach the server"


def test_unknown_training_param_is_refused() -> None:
    client = RecordingClient()
    with pytest.raises(ValueError, match=r"mdctr-training: unknown parameter\(s\) \['epoch'\]"):
        submit("http://kfp.example", arguments={"epoch": 2, "tracking_uri": "http://m:5000"}, client=client)
    assert client.calls == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--pipeline", "monitoring", "--params", '{"log_uri": "s3://l"}'], "missing required parameter(s)"),
        (["--pipeline", "scoring"], "pipeline must be one of ['monitoring', 'training']"),
        (["--pipeline", "monitoring", "--params", "{log_uri}"], "--params: not valid JSON"),
    ],
)
def test_cli_refuses_bad_submit_in_one_line(args: list[str], expected: str) -> None:
    from typer.testing import CliRunner

    from mdctr.cli import app

    # port 9 (discard): nothing listens; the command must fail before it tries to connect
    res = CliRunner().invoke(app, ["pipeline", "submit", "--host", "http://127.0.0.1:9", *args])
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.output
