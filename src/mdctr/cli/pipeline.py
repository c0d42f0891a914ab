"""``mdctr pipeline …``: compile the KFP pipeline, run it locally, or submit it to a Kubeflow Pipelines server."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import typer

from mdctr.cli.common import user_errors
from mdctr.config import ConfigError

app = typer.Typer(help="The Kubeflow training pipeline: compile, run locally, submit.", no_args_is_help=True)

ModelsOpt = typer.Option(
    None, "--models", "-m", help="Comma-separated model names (default: the registry's)."
)
SourcesOpt = typer.Option(
    None,
    "--domain-sources",
    help="Comma-separated: handcrafted, mined, none, and the controls random, binned (default: handcrafted,mined; "
    "a model keeps those it accepts, dnn always runs with none).",
)
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


#: the runner's full output of `pipeline run` goes to <runs dir>/LOG_DIR/<pipeline>-<start time>.log
LOG_DIR = "logs"


class _Progress:
    """One line per finished task (name, status, seconds) and, on a terminal only, a bar over the training
    tasks that shows how many run and ticks every second; the lines go above the bar (``tqdm.write``)."""

    def __init__(self, out: IO[str], training_tasks: int) -> None:
        from tqdm import tqdm

        self.out, self.total, self.trained, self.running = out, training_tasks, 0, 0
        self.bar = tqdm(
            total=training_tasks,
            desc="training",
            unit="task",
            file=out,
            leave=False,
            disable=not out.isatty(),
        )
        self._stop = threading.Event()
        if not self.bar.disable:  # the bar redraws on updates only: keep its clock moving during a long task
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def __call__(self, event: Any) -> None:  # a mdctr.pipeline.TaskEvent
        from mdctr.pipeline import TRAIN_TASK

        training = event.task == TRAIN_TASK
        if not event.finished:
            if training:
                self.running += 1
                self.bar.set_postfix_str(f"{self.running} running")
            return
        name = event.task
        if training and event.status != "SKIPPED":
            self.trained += 1
            self.running = max(0, self.running - 1)
            self.bar.set_postfix_str(f"{self.running} running", refresh=False)
            self.bar.update(1)
            name = f"{event.task} {self.trained}/{self.total}"
        took = f"{event.seconds:6.1f}s" if event.status in ("SUCCESS", "FAILURE") else ""
        detail = f"  {event.detail}" if event.detail else ""
        self.bar.write(f"  {name:<20} {event.status.lower():<8} {took}{detail}".rstrip(), file=self.out)

    def close(self) -> None:
        self._stop.set()
        self.bar.close()


#: leaderboard rows `pipeline run` prints (the baseline's row too when it ranks lower); the report has them all
TOP_ENTRIES = 5


def _compact_leaderboard(table: Path | None, top: int = TOP_ENTRIES) -> list[str]:
    """Rank, entry, validation and test AUC and FLOPs of the ``top`` entries and the baseline (the evaluate
    task's ``leaderboard.json``, :attr:`LocalRunResult.leaderboard_table`), where the full leaderboard is when
    rows were left out, and a warning line naming the shown entries whose test logloss is worse than the
    base-rate predictor's."""
    if table is None:
        return []
    board = json.loads(table.read_text())
    entries = board["entries"]
    baseline = board.get("attrs", {}).get("baseline")
    shown = [e for i, e in enumerate(entries) if i < top or e["entry"] == baseline]
    rows = [f"  {'#':>2}  {'entry':<24} {'valid AUC':>9}  {'test AUC [95% CI]':<25} {'FLOPs/sample':>12}"]
    for e in shown:
        ci = f"[{e['auc_ci_low']:.4f}, {e['auc_ci_high']:.4f}]" if e.get("auc_ci_low") is not None else ""
        rows.append(
            f"  {e['rank']:>2}  {e['entry']:<24} {e['valid_auc_mean']:>9.4f}  "
            f"{e['auc_mean']:.4f} {ci:<18} {e['flops']:>12,.0f}"
        )
    if len(shown) < len(entries):
        full = table.with_name("leaderboard.md")
        rows.append(f"  … {len(entries) - len(shown)} more of {len(entries)} entries: {full}")
    worse = [e for e in shown if e.get("worse_than_base")]
    if worse:  # AUC can lead while the probabilities are worse than a constant's (issue #23)
        listed = ", ".join(
            f"{e['entry']} ({e['logloss_mean']:.4f} vs {e['base_logloss']:.4f})" for e in worse
        )
        rows.append(f"  ⚠ test logloss worse than the base-rate predictor: {listed}")
    return rows


def _ranked_above(table: Path | None, winner: str) -> list[str]:
    """The entries of the leaderboard ``table`` ranked above ``winner``: the controls evaluate passed over (none
    normally)."""
    entries = [e["entry"] for e in json.loads(table.read_text())["entries"]] if table else []
    return entries[: entries.index(winner)] if winner in entries else []


def _with_train_flags(train_options: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """``--train-options`` with the given trainer flags (None: not given) merged in; a flag that contradicts
    the same key in ``--train-options`` is an error, and the result is checked against ``TrainConfig`` now,
    so a bad value fails before any task starts."""
    from mdctr.config import from_dict
    from mdctr.training.config import TrainConfig

    merged = dict(train_options)
    for key, value in flags.items():
        if value is None:
            continue
        if key in merged and merged[key] != value:
            raise ConfigError(
                f"--{key.replace('_', '-')} {value!r} contradicts --train-options {key}={merged[key]!r}; give one"
            )
        merged[key] = value
    from_dict(TrainConfig, merged, where="--train-options")
    return merged


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (None: not given, so PipelineArguments' default holds)."""
    return {name: value for name, value in options.items() if value is not None}


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
        help="Maximum epochs per training run (default 20); early stopping (--patience, --early-stop-metric) "
        "ends it sooner.",
    ),
    patience: int | None = typer.Option(
        None,
        "--patience",
        min=1,
        help="Epochs without a better validation metric before stopping (default 2).",
    ),
    early_stop_metric: str | None = typer.Option(
        None,
        "--early-stop-metric",
        help="auc (default; higher is better) or logloss (lower is better): what early stopping and the "
        "restored weights follow on validation.",
    ),
    calibrate: str | None = typer.Option(
        None,
        "--calibrate",
        help="none (default) | temperature: per-domain temperature scaling fitted on validation, saved in the "
        "bundle and applied in serving.",
    ),
    flop_budget: str | None = typer.Option(
        None, "--flop-budget", help="FLOP budget: 'model:dnn' (default), 'model:NAME@WIDTH' or FLOPs/sample."
    ),
    tolerance: float = typer.Option(0.002, "--tolerance", help="Per-domain AUC regression the gate allows."),
    promote_controls: bool = typer.Option(
        False,
        "--promote-controls",
        help="Let an entry routed by a control source (random, binned) win and be registered and promoted; "
        "by default controls are baselines, shown on the leaderboard only.",
    ),
    canary: int = typer.Option(
        0,
        "--canary",
        min=0,
        max=99,
        help="PERCENT: a version that passes the gate starts as the canary with this share of traffic beside "
        "the champion (finish: mdctr models promote --finish; undo: mdctr models rollback); 0: champion at once.",
    ),
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
    split: str | None = typer.Option(
        None,
        "--split",
        help="random (seeded 80/10/10) or time (needs a time column); default: time with "
        "--train-window/--eval-period, else random.",
    ),
    train_window: str = typer.Option(
        "", "--train-window", help="Time split: train on this span before the eval period ('30d', '50%')."
    ),
    eval_period: str = typer.Option(
        "",
        "--eval-period",
        help="Time split: the newest span ('7d', '10%'), halved into validation (early stopping, the gate) and test.",
    ),
    warm_start: str = typer.Option(
        "", "--warm-start", help="champion or a bundle directory: start every entry from its weights."
    ),
    warm_start_fallback: str = typer.Option(
        "error", "--warm-start-fallback", help="error | cold: when the warm start cannot be carried."
    ),
    train_options: str = typer.Option(
        "{}", "--train-options", help='Trainer settings as JSON, e.g. \'{"batch_size": 4096, "lr": 0.001}\'.'
    ),
    miner_options: str = typer.Option(
        "{}", "--miner-options", help='VQ-VAE miner settings as JSON, e.g. \'{"num_codes": 4, "epochs": 3}\'.'
    ),
) -> None:
    """Run the whole DAG on this machine (KFP local runner): one line per finished task and a progress bar over
    the training tasks, the runner's full output in a log file under --runs-dir, then the leaderboard and the
    promoted model. A failed task is named with its error and the log file; the exit status is then 1."""
    from mdctr.pipeline import PipelineArguments, pipeline_name
    from mdctr.steps.common import parse_options

    with user_errors():
        options = {
            name: parse_options(value, what=name)
            for name, value in (
                ("--dataset-options", dataset_options),
                ("--train-options", train_options),
                ("--miner-options", miner_options),
            )
        }
        args = PipelineArguments.local(
            **_given(models=_csv(models), domain_sources=_csv(domain_sources), epochs=epochs),
            **_given(flop_budget=flop_budget, tracking_uri=tracking_uri),
            dataset=dataset,
            dataset_options=options["--dataset-options"],
            data_rev=data_rev,
            data_md5=data_md5,
            dvc_remote=dvc_remote,
            source=str(source or ""),
            # periods select by time: the time split unless one is named
            split=split or ("time" if train_window or eval_period else "random"),
            train_window=train_window,
            eval_period=eval_period,
            seeds=[int(s) for s in _csv(seeds) or ["0"]],
            train_options=_with_train_flags(
                options["--train-options"],
                patience=patience,
                early_stop_metric=early_stop_metric,
                calibrate=calibrate,
            ),
            miner_options=options["--miner-options"],
            warm_start=warm_start,
            warm_start_fallback=warm_start_fallback,
            promotion_tolerance=tolerance,
            promote_controls=promote_controls,
            canary_percent=canary,
        )
        training = _planned(args)
    log_file = Path(runs_dir).resolve() / LOG_DIR / f"{pipeline_name()}-{datetime.now():%Y%m%d-%H%M%S}.log"
    typer.echo(f"local pipeline run ({runner}): {training} training task(s); full log: {log_file}")
    result = _run_with_progress(args, runner, runs_dir, log_file, training)
    _print_result(result, args, log_file)


def _planned(args: Any) -> int:  # a mdctr.pipeline.PipelineArguments
    """The number of training tasks; before that, a table that cannot load fails, in one line naming the
    user's file, and so does a plan of control sources only: before any task starts."""
    from mdctr.pipeline import planned_training_tasks
    from mdctr.steps.fetch_data import check_source

    check_source(args.dataset, args.source or None, args.dataset_options, split=args.split)
    logging.disable(logging.INFO)  # the plan's own log line belongs to the run's log, not the terminal
    try:
        return planned_training_tasks(args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    finally:
        logging.disable(logging.NOTSET)


def _run_with_progress(args: Any, runner: str, runs_dir: Path, log_file: Path, training: int) -> Any:
    """``run_local`` with a progress line per task; a failure ends the command with one line (exit status 1,
    or the signal's for a run stopped by Ctrl-C or SIGTERM)."""
    from mdctr.pipeline import run_local

    progress = _Progress(sys.stdout, training)
    # user_errors outside: its typer.Exit is a RuntimeError too, not a failed run
    with user_errors():
        try:
            return run_local(args, runner=runner, runs_dir=runs_dir, log_file=log_file, on_task=progress)
        except RuntimeError as e:  # a task failed or stopped, outputs are missing, or the runner broke
            progress.close()
            raise typer.Exit(_report_failure(e, log_file)) from None
        finally:
            progress.close()


def _report_failure(error: RuntimeError, log_file: Path) -> int:
    """Say why a run failed, in one line (and where its full log is); the exit status."""
    from mdctr.pipeline import LocalRunError, LocalRunInterrupted

    if isinstance(error, LocalRunInterrupted):  # Ctrl-C or SIGTERM: the exit status a shell expects
        closed = (
            f"MLflow parent run {', '.join(error.parent_runs)} marked FAILED"
            if error.parent_runs
            else "no MLflow parent run was open"
        )
        typer.secho(f"{error.error}; {closed}; full log: {log_file}", fg=typer.colors.RED, err=True)
        return error.exit_code
    why = f"task {error.task}: {error.error}" if isinstance(error, LocalRunError) else str(error)
    typer.secho(f"failed: {why}", fg=typer.colors.RED, err=True)
    typer.echo(f"full log: {log_file}", err=True)
    return 1


def _print_result(result: Any, args: Any, log_file: Path) -> None:
    """The leaderboard's top, the winner, the gate's decision and where the report, artifacts and log are."""
    for line in _compact_leaderboard(result.leaderboard_table):
        typer.echo(line)
    above = _ranked_above(result.leaderboard_table, result.winner)
    note = f" (ranked below {', '.join(above)}: control sources, baselines never promoted)" if above else ""
    typer.echo(f"winner: {result.winner}{note}")
    verdict = f"is now {result.alias}" if result.promoted else "stays challenger"
    if result.alias == "canary":
        verdict += (
            f" beside the champion ({args.canary_percent}% of traffic; finish: mdctr models promote --finish)"
        )
    typer.echo(f"gate: {result.decision} ({result.gate_reason}); {result.model_uri} {verdict}")
    # register-model's report: the evaluation report with the gate decision filled in (the final one)
    typer.echo(f"report: {result.report or result.run_dir}")
    typer.echo(f"artifacts: {result.run_dir}  mlflow: {result.tracking_uri}  ({result.seconds:.0f}s)")
    typer.echo(f"full log: {log_file}")


@app.command("submit")
def submit_cmd(
    host: str = typer.Option(..., "--host", help="KFP API endpoint, e.g. http://localhost:8080."),
    pipeline: str = typer.Option(
        "training",
        "--pipeline",
        help="training, or monitoring (pipelines/monitoring.py; --params needs log_uri, reference_uri, "
        "reference_codes_uri; see docs/monitoring.md).",
    ),
    experiment: str = typer.Option("mdctr", "--experiment", help="KFP experiment."),
    pipeline_name: str | None = typer.Option(
        None, "--pipeline-name", help="Pipeline (default mdctr-training or mdctr-monitoring)."
    ),
    version: str | None = typer.Option(None, "--version", help="Pipeline version name (default: timestamp)."),
    namespace: str | None = typer.Option(None, "--namespace", help="Kubeflow profile namespace."),
    pipeline_root: str | None = typer.Option(None, "--pipeline-root", help="e.g. s3://mdctr/kfp."),
    cron: str | None = typer.Option(None, "--cron", help="Recurring run; 6 fields, seconds first."),
    params: str = typer.Option("{}", "--params", help="Pipeline arguments as JSON."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow server every pod reaches (http(s)://…); required for training unless --params sets "
        "tracking_uri (monitoring without one: the MLflow Secret's MLFLOW_TRACKING_URI, or no MLflow run).",
    ),
    gpu: str | None = GpuOpt,
    pull_policy: str = PullOpt,
    s3_secret: str = S3SecretOpt,
    mlflow_secret: str = MlflowSecretOpt,
) -> None:
    """Upload a new version of the pipeline to a KFP server and start a run (or a recurring run)."""
    from mdctr.pipeline import submit
    from mdctr.steps.common import parse_options

    with user_errors():
        arguments = parse_options(params, what="--params")
        if tracking_uri:
            arguments["tracking_uri"] = tracking_uri
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
            pipeline=pipeline,
        )
    typer.echo(json.dumps(result.__dict__, indent=2))
