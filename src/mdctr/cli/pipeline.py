"""``mdctr pipeline …``: compile the KFP pipeline, run it locally, or submit it to a Kubeflow Pipelines server."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mdctr.cli.common import user_errors

app = typer.Typer(help="The Kubeflow training pipeline: compile, run locally, submit.", no_args_is_help=True)

ModelsOpt = typer.Option(
    None, "--models", "-m", help="Comma-separated model names (default: the registry's)."
)
SourcesOpt = typer.Option(None, "--domain-sources", help="Comma-separated: none, handcrafted, mined.")
SeedsOpt = typer.Option("0", "--seeds", help="Comma-separated seeds.")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _settings(gpu: str | None, pull_policy: str, s3_secret: str, mlflow_secret: str):  # -> ClusterSettings
    from mdctr.k8s import ClusterSettings

    return ClusterSettings(
        s3_secret=s3_secret, mlflow_secret=mlflow_secret, image_pull_policy=pull_policy, gpu_accelerator=gpu
    )


GpuOpt = typer.Option(None, "--gpu", help="Accelerator type for training tasks, e.g. nvidia.com/gpu.")
PullOpt = typer.Option("IfNotPresent", "--image-pull-policy", help="Always, IfNotPresent or Never.")
S3SecretOpt = typer.Option("mdctr-s3", "--s3-secret", help="Kubernetes Secret with the S3 credentials.")
MlflowSecretOpt = typer.Option("mdctr-mlflow", "--mlflow-secret", help="Kubernetes Secret for MLflow.")


@app.command("compile")
def compile_cmd(
    out: Path = typer.Option(Path("pipeline.yaml"), "--out", "-o", help="IR YAML to write."),
    gpu: str | None = GpuOpt,
    pull_policy: str = PullOpt,
    s3_secret: str = S3SecretOpt,
    mlflow_secret: str = MlflowSecretOpt,
) -> None:
    """Compile the pipeline to KFP IR YAML (upload it in the Kubeflow UI, or use `submit`)."""
    from mdctr.pipeline import compile_pipeline

    with user_errors():
        path = compile_pipeline(out, _settings(gpu, pull_policy, s3_secret, mlflow_secret))
    typer.echo(f"wrote {path}")


@app.command("run")
def run_cmd(
    dataset: str = typer.Option("ml-1m", "--dataset", "-d", help="Dataset name."),
    dataset_options: str = typer.Option("{}", "--dataset-options", help="JSON, e.g. '{\"rows\": 20000}'."),
    models: str | None = ModelsOpt,
    domain_sources: str | None = SourcesOpt,
    seeds: str = SeedsOpt,
    epochs: int | None = typer.Option(
        None,
        "--max-epochs",
        "--epochs",
        min=1,
        help="Maximum epochs per training run (default 20); early stopping on validation AUC ends it sooner.",
    ),
    flop_budget: str | None = typer.Option(
        None, "--flop-budget", help="FLOP budget: 'model:dnn' (default), 'model:NAME@WIDTH' or FLOPs/sample."
    ),
    tolerance: float = typer.Option(0.002, "--tolerance", help="Per-domain AUC regression the gate allows."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow URI (default: ./mlruns; with --runner docker an mlflow server started for the run).",
    ),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Local pipeline root parent."),
    runner: str = typer.Option(
        "subprocess",
        "--runner",
        help="subprocess (this interpreter) or docker (every task in the image of `make image`).",
    ),
    data_rev: str = typer.Option("local", "--data-rev", help="git revision of data.dvc, or local."),
    data_md5: str = typer.Option(
        "", "--data-md5", help="DVC md5 of a data version, fetched from --dvc-remote without git."
    ),
    dvc_remote: str = typer.Option("", "--dvc-remote", help="DVC remote URL for --data-md5 (s3://…)."),
    source: Path | None = typer.Option(
        None,
        "--source",
        "-s",
        help="Local data directory (your table: data file + schema.yaml); wins over --data-*.",
    ),
    split: str = typer.Option(
        "random", "--split", help="random (seeded 80/10/10) or time (needs a time column)."
    ),
) -> None:
    """Run the whole DAG on this machine (KFP local runner) and print the leaderboard and the promoted model."""
    from mdctr.pipeline import run_local
    from mdctr.steps.fetch_data import check_source

    with user_errors():
        # a table that cannot load fails here, in one line naming the user's file, before any task starts
        check_source(dataset, source, json.loads(dataset_options), split=split)
        result = run_local(
            dataset=dataset,
            dataset_options=json.loads(dataset_options),
            source=source,
            split=split,
            models=_csv(models),
            domain_sources=_csv(domain_sources),
            seeds=[int(s) for s in _csv(seeds) or ["0"]],
            epochs=epochs,
            flop_budget=flop_budget,
            promotion_tolerance=tolerance,
            tracking_uri=tracking_uri,
            runs_dir=runs_dir,
            runner=runner,
            data_rev=data_rev,
            data_md5=data_md5,
            dvc_remote=dvc_remote,
        )
    typer.echo(result.leaderboard)
    typer.echo(f"winner: {result.winner}")
    if result.promoted:
        typer.echo(f"promoted: {result.model_uri} (alias champion)")
    else:
        typer.echo(f"not promoted: {result.model_uri} stays challenger (gate: {result.decision})")
    typer.echo(f"artifacts: {result.run_dir}  mlflow: {result.tracking_uri}  ({result.seconds:.0f}s)")


@app.command("submit")
def submit_cmd(
    host: str = typer.Option(..., "--host", help="KFP API endpoint, e.g. http://localhost:8080."),
    experiment: str = typer.Option("mdctr", "--experiment", help="KFP experiment."),
    pipeline_name: str | None = typer.Option(
        None, "--pipeline-name", help="Pipeline (default mdctr-training)."
    ),
    version: str | None = typer.Option(None, "--version", help="Pipeline version name (default: timestamp)."),
    namespace: str | None = typer.Option(None, "--namespace", help="Kubeflow profile namespace."),
    pipeline_root: str | None = typer.Option(None, "--pipeline-root", help="e.g. s3://mdctr/kfp."),
    cron: str | None = typer.Option(None, "--cron", help="Recurring run; 6 fields, seconds first."),
    params: str = typer.Option("{}", "--params", help="Pipeline arguments as JSON."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow server every pod reaches (http(s)://…); required unless --params sets tracking_uri.",
    ),
    gpu: str | None = GpuOpt,
    pull_policy: str = PullOpt,
    s3_secret: str = S3SecretOpt,
    mlflow_secret: str = MlflowSecretOpt,
) -> None:
    """Upload a new version of the pipeline to a KFP server and start a run (or a recurring run)."""
    from mdctr.pipeline import submit

    arguments = json.loads(params)
    if tracking_uri:
        arguments["tracking_uri"] = tracking_uri
    with user_errors():
        result = submit(
            host,
            arguments=arguments,
            experiment=experiment,
            name=pipeline_name,
            version=version,
            namespace=namespace,
            pipeline_root=pipeline_root,
            cron=cron,
            settings=_settings(gpu, pull_policy, s3_secret, mlflow_secret),
        )
    typer.echo(json.dumps(result.__dict__, indent=2))
