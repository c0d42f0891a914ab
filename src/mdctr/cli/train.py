"""``mdctr train`` and ``mdctr benchmark`` (``mdctr models …`` lives in :mod:`mdctr.cli.models`)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from mdctr.cli.common import datasets_dir, user_errors

#: default maximum epochs of `train` and `benchmark`: TrainConfig's (spelt out so the CLI starts without importing
#: torch; tests/training/test_cli_train.py checks they agree). Early stopping, not this cap, ends a run.
MAX_EPOCHS = 20

DatasetOpt = typer.Option(..., "--dataset", "-d", help="Registered dataset name (e.g. ml-1m, synthetic).")
SourceOpt = typer.Option(None, "--source", "-s", help="Raw data directory (default: $DATASETS_DIR).")


@contextmanager
def _errors() -> Iterator[None]:
    """:func:`user_errors` plus this area's own expected errors (bad source, unreachable budget, bad resume)."""
    from mdctr.routing import BudgetError, DomainSourceError
    from mdctr.training.trainer import TrainingError
    from mdctr.training.warm import WarmStartError

    with user_errors():
        try:
            yield
        except (DomainSourceError, BudgetError, TrainingError, WarmStartError) as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.5f}"


def _model_configs(text: str) -> dict[str, dict[str, Any]]:
    """``--model-config`` JSON → {model: overrides}; a clear error for anything else."""
    from mdctr.config import ConfigError

    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--model-config is not valid JSON ({e}): {text!r}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise ConfigError(
            f'--model-config must map model names to objects, e.g. {{"adaptive2": {{}}}}: {text!r}'
        )
    return parsed


#: TrainConfig's defaults, spelt out for the same reason as MAX_EPOCHS (the CLI test checks they agree)
PATIENCE = 2
EARLY_STOP_METRIC = "auc"


def patience_option() -> Any:
    return typer.Option(
        PATIENCE,
        "--patience",
        min=1,
        help="Stop after this many epochs without a better --early-stop-metric.",
    )


def early_stop_option() -> Any:
    return typer.Option(
        EARLY_STOP_METRIC,
        "--early-stop-metric",
        help="auc (higher is better) or logloss (lower is better): what early stopping and the restored "
        "weights follow, on the validation split.",
    )


def calibrate_option() -> Any:
    return typer.Option(
        "none",
        "--calibrate",
        help="none | temperature: after training, fit one temperature per hand-crafted domain on validation "
        "(global fallback for small or one-class domains); test metrics and the bundle are then calibrated.",
    )


SplitOpt = typer.Option("random", "--split", help="random (seeded 80/10/10) or time (needs a time column).")


TrainWindowOpt = typer.Option(
    None,
    "--train-window",
    help="Time split only: train on this span right before the eval period ('30d', '36h' or '50%' of the "
    "time range; default: every older row).",
)
EvalPeriodOpt = typer.Option(
    None,
    "--eval-period",
    help="Time split only: the newest span of time ('7d', '10%'), halved by rows into validation (early "
    "stopping, the promotion gate) and test; default: the newest 20%% of rows.",
)


def _load_prepared(
    dataset: str,
    source: Path | None,
    split: str = "random",
    *,
    periods: Any = None,
    warm_start: str = "",
    warm_start_fallback: str = "error",
) -> tuple[Any, Any]:
    """Load and split ``dataset`` in memory → (prepared data, warm source or None); an unknown split, ``time``
    on data without a time column, or periods on a random split fail before the data is read. With a warm
    start the vocabularies are extended from the source's as the splits are encoded (exact for every split)."""
    from mdctr.data import load_dataset
    from mdctr.data.encode import SpecMismatch, check_periods, check_split
    from mdctr.data.prepare import Periods, prepare_in_memory
    from mdctr.steps.train_model import load_warm_source
    from mdctr.training.warm import refuse_or_fall_back

    if split not in ("random", "time"):
        raise typer.BadParameter(f"--split must be random or time; got {split!r}")
    periods = periods or Periods()
    loaded = load_dataset(dataset, source or datasets_dir())
    check_periods(loaded.schema, split, periods.train_window, periods.eval_period)
    check_split(loaded.schema, split)
    warm = load_warm_source(
        warm_start, tracking_uri=None, schema_name=loaded.schema.name, fallback=warm_start_fallback
    )
    base = warm.spec if warm is not None else None
    try:
        prepared = prepare_in_memory(loaded, split=split, periods=periods, base_spec=base)  # type: ignore[arg-type]
    except SpecMismatch as e:
        if warm is None:
            raise
        refuse_or_fall_back(warm, str(e), warm_start_fallback)
        prepared, warm = prepare_in_memory(loaded, split=split, periods=periods), None  # type: ignore[arg-type]
    return prepared, warm


def _read_prepared(path: Path, config: Any) -> tuple[Any, Any]:
    """Prepared data from ``path``: valid/test in memory; train in memory, or streamed when the config says so.

    When streaming, ``PreparedData.train`` holds only a bounded sample (the first rows), which budget fitting
    and a miner fitted here use; training reads every row from the stream.
    """
    import pandas as pd

    from mdctr.data.encode import FeatureSpec
    from mdctr.data.prepare import SPEC_FILE, PreparedData, read_prepared
    from mdctr.data.stream import ParquetStream, parquet_rows
    from mdctr.data.tensors import TensorData
    from mdctr.training.distributed import context

    train_file = path / "train.parquet"
    if not config.wants_streaming(parquet_rows(train_file)):
        return read_prepared(path), None
    spec = FeatureSpec.load(path / SPEC_FILE)
    ctx = context(config.resolve_device())
    stream = ParquetStream(
        train_file,
        spec.schema,
        batch_size=config.batch_size,
        window_rows=config.stream_window_rows,
        seed=config.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    valid, test = (
        TensorData.from_frame(pd.read_parquet(path / f"{k}.parquet"), spec.schema) for k in ("valid", "test")
    )
    return PreparedData(spec, stream.head(65536), valid, test), stream


def _training_data(
    dataset: str | None,
    source: Path | None,
    prepared_dir: Path | None,
    config: Any,
    *,
    split: str | None,
    periods: Any,
    warm_start: str,
    warm_start_fallback: str,
) -> tuple[Any, Any, Any]:
    """(prepared data, the train stream or None, the warm source or None) for ``mdctr train``: from
    ``--prepared`` (re-encoded onto the warm source's vocabularies) or from ``--dataset`` (split with the
    periods, encoded with the merged vocabularies)."""
    if prepared_dir is None:
        split = split or ("time" if (periods.train_window or periods.eval_period) else "random")
        prepared, warm = _load_prepared(
            str(dataset),
            source,
            split,
            periods=periods,
            warm_start=warm_start,
            warm_start_fallback=warm_start_fallback,
        )
        return prepared, None, warm
    if split is not None or periods.train_window or periods.eval_period:
        raise typer.BadParameter(
            "--split, --train-window and --eval-period apply to --dataset; --prepared data was split already"
        )
    prepared, train_stream = _read_prepared(prepared_dir, config)
    warm = _warm_prepared(prepared, warm_start, warm_start_fallback, train_stream)
    if warm is not None:
        prepared = _extend(prepared, warm, warm_start_fallback)
    return prepared, train_stream, warm


def _warm_prepared(prepared: Any, warm_start: str, fallback: str, train_stream: Any) -> Any:
    """The warm source for ``--prepared`` data (None without ``--warm-start``); refuses streaming, whose batches
    would bypass the re-encoding onto the source's vocabularies."""
    from mdctr.steps.train_model import load_warm_source

    if warm_start and train_stream is not None:
        raise typer.BadParameter("--warm-start re-encodes the train split in memory: use --streaming off")
    return load_warm_source(
        warm_start, tracking_uri=None, schema_name=prepared.spec.schema.name, fallback=fallback
    )


def _extend(prepared: Any, warm: Any, fallback: str) -> Any:
    """``prepared`` re-encoded onto ``warm``'s vocabularies (or as is, when they differ and ``fallback`` is cold)."""
    from mdctr.training.warm import extend_data, refuse_or_fall_back

    extended, why = extend_data(warm, prepared)
    if why is not None:
        refuse_or_fall_back(warm, why, fallback)
    return extended


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _write_result(out: Path, summary: dict[str, Any], model: Any) -> None:
    import torch

    from mdctr.io import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    torch.save(model.state_dict(), out / "model.pt")


TrainDatasetOpt = typer.Option(
    None, "--dataset", "-d", help="Registered dataset name (e.g. ml-1m, synthetic); or --prepared."
)
TrainSplitOpt = typer.Option(
    None,
    "--split",
    help="random (seeded 80/10/10) or time (needs a time column); default: time with "
    "--train-window/--eval-period, else random.",
)
ModelOpt = typer.Option(..., "--model", "-m", help="Registered model (see `mdctr models list`).")
DomainsOpt = typer.Option(
    "handcrafted", "--domains", help="handcrafted | mined | mined-joint | none | random | binned (controls)."
)
TrainEpochsOpt = typer.Option(
    MAX_EPOCHS,
    "--max-epochs",
    "--epochs",
    min=1,
    help="Maximum epochs; early stopping (--patience, --early-stop-metric) ends a run sooner.",
)
SeedOpt = typer.Option(0, help="Seeds initialisation, shuffling and dropout.")
BatchSizeOpt = typer.Option(4096, help="Rows per step.")
BudgetOpt = typer.Option(None, help="Fit the width to a FLOP budget: 'model:dnn' or a number.")
WidthOpt = typer.Option(1.0, help="Width multiplier (ignored with --budget).")
MinerOpt = typer.Option(None, "--miner", help="Saved miner for --domains mined.")
CheckpointOpt = typer.Option(None, help="Per-epoch checkpoints; resumes if present.")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")
PreparedOpt = typer.Option(
    None, "--prepared", help="Train on prepared data (train/valid/test.parquet) instead of --dataset."
)
StreamingOpt = typer.Option(
    "off", help="off | on | auto: stream the train split from --prepared's parquet (bounded memory)."
)
TrainOutOpt = typer.Option(None, "--out", help="Write summary.json and model.pt here (rank 0).")
WarmStartOpt = typer.Option(
    "",
    "--warm-start",
    help="champion (the dataset's registered champion, $MLFLOW_TRACKING_URI) or a bundle directory: start "
    "from its weights; vocabularies merged, its width and dense scalers kept (--width is ignored).",
)
WarmStartFallbackOpt = typer.Option(
    "error",
    "--warm-start-fallback",
    help="error | cold: what to do when the warm start cannot be carried (another model, width, …).",
)


@dataclass(frozen=True)
class TrainOptions:
    """``mdctr train``'s options as given on the command line (checked by :func:`_train_settings`)."""

    dataset: str | None
    source: Path | None
    split: str | None
    train_window: str | None
    eval_period: str | None
    model: str
    domains: str
    epochs: int
    patience: int
    early_stop_metric: str
    calibrate: str
    seed: int
    batch_size: int
    budget: str | None
    width: float
    miner_dir: Path | None
    checkpoint_dir: Path | None
    as_json: bool
    prepared_dir: Path | None
    streaming: str
    out: Path | None
    warm_start: str
    warm_start_fallback: str


def train(
    dataset: str | None = TrainDatasetOpt,
    source: Path | None = SourceOpt,
    split: str | None = TrainSplitOpt,
    train_window: str | None = TrainWindowOpt,
    eval_period: str | None = EvalPeriodOpt,
    model: str = ModelOpt,
    domains: str = DomainsOpt,
    epochs: int = TrainEpochsOpt,
    patience: int = patience_option(),
    early_stop_metric: str = early_stop_option(),
    calibrate: str = calibrate_option(),
    seed: int = SeedOpt,
    batch_size: int = BatchSizeOpt,
    budget: str | None = BudgetOpt,
    width: float = WidthOpt,
    miner_dir: Path | None = MinerOpt,
    checkpoint_dir: Path | None = CheckpointOpt,
    as_json: bool = JsonOpt,
    prepared_dir: Path | None = PreparedOpt,
    streaming: str = StreamingOpt,
    out: Path | None = TrainOutOpt,
    warm_start: str = WarmStartOpt,
    warm_start_fallback: str = WarmStartFallbackOpt,
) -> None:
    """Train one model and print test AUC/logloss, per-domain AUC, FLOPs, params, throughput, wall time.

    Under ``torchrun --nproc-per-node N`` every process trains on its share of each batch (DDP); rank 0 alone
    checkpoints, prints and writes ``--out``.
    """
    _train(
        TrainOptions(
            dataset=dataset,
            source=source,
            split=split,
            train_window=train_window,
            eval_period=eval_period,
            model=model,
            domains=domains,
            epochs=epochs,
            patience=patience,
            early_stop_metric=early_stop_metric,
            calibrate=calibrate,
            seed=seed,
            batch_size=batch_size,
            budget=budget,
            width=width,
            miner_dir=miner_dir,
            checkpoint_dir=checkpoint_dir,
            as_json=as_json,
            prepared_dir=prepared_dir,
            streaming=streaming,
            out=out,
            warm_start=warm_start,
            warm_start_fallback=warm_start_fallback,
        )
    )


def _train(opts: TrainOptions) -> None:
    """Check the options, load the data (and a miner when the routing needs one), train; on rank 0 write
    ``--out`` and print the result."""
    from mdctr.routing import DomainRouting
    from mdctr.training import train_model

    with _errors():
        periods, routing, config = _train_settings(opts)
        prepared, train_stream, warm = _training_data(
            opts.dataset,
            opts.source,
            opts.prepared_dir,
            config,
            split=opts.split,
            periods=periods,
            warm_start=opts.warm_start,
            warm_start_fallback=opts.warm_start_fallback,
        )
        miner = _miner(routing, opts, prepared, warm)
        if train_stream is not None:
            train_stream.domain_fn = DomainRouting.for_model(opts.model, opts.domains, miner=miner).domains
        result = train_model(
            prepared,
            opts.model,
            opts.domains,
            width=opts.width,
            miner=miner,
            config=config,
            budget=opts.budget,
            train_stream=train_stream,
            warm=warm,
            warm_fallback=opts.warm_start_fallback,
        )
    summary = result.summary()
    if not _is_rank0():
        return
    if opts.out is not None:
        _write_result(opts.out, summary, result.model)
    if opts.as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, opts)


def _train_settings(opts: TrainOptions) -> tuple[Any, Any, Any]:
    """(periods, routing, train config) of ``opts``; the first option that cannot work is a user error."""
    from mdctr.data.prepare import Periods
    from mdctr.routing import DomainRouting
    from mdctr.training import TrainConfig

    if opts.warm_start_fallback not in ("error", "cold"):
        raise typer.BadParameter(
            f"--warm-start-fallback must be error or cold; got {opts.warm_start_fallback!r}"
        )
    periods = Periods(opts.train_window, opts.eval_period)
    routing = DomainRouting.for_model(opts.model, opts.domains)
    if opts.streaming not in ("off", "on", "auto"):
        raise typer.BadParameter(f"--streaming must be off, on or auto; got {opts.streaming!r}")
    if opts.streaming != "off" and opts.prepared_dir is None:
        raise typer.BadParameter("--streaming reads parquet shards: give --prepared DIR")
    config = TrainConfig(
        epochs=opts.epochs,
        seed=opts.seed,
        batch_size=opts.batch_size,
        patience=opts.patience,
        early_stop_metric=opts.early_stop_metric,
        calibrate=opts.calibrate,
        checkpoint_dir=str(opts.checkpoint_dir) if opts.checkpoint_dir else None,
        streaming={"off": False, "on": True, "auto": "auto"}[opts.streaming],
    )
    if (opts.dataset is None) == (opts.prepared_dir is None):
        raise typer.BadParameter("give exactly one of --dataset and --prepared")
    if opts.miner_dir is not None and opts.warm_start:
        raise typer.BadParameter("--warm-start carries the champion's miner: drop --miner")
    return periods, routing, config


def _miner(routing: Any, opts: TrainOptions, prepared: Any, warm: Any) -> Any:
    """The domain miner the routing needs (``--miner``, else one fitted on the train split, grown from the
    warm source's), or None."""
    if not routing.needs_miner:
        return None
    from mdctr.domains.miner import DomainMiner, MinerConfig, fit_miner
    from mdctr.routing import model_inputs

    if opts.miner_dir:
        return DomainMiner.load(opts.miner_dir)
    init = warm.miner if warm is not None else None  # a warm miner grows from the champion's
    return fit_miner(prepared.train, model_inputs(prepared, 1), MinerConfig(seed=opts.seed), init=init)


def _print_summary(summary: dict[str, Any], opts: TrainOptions) -> None:
    typer.echo(
        f"{opts.model} / {opts.domains} on {opts.dataset or opts.prepared_dir} "
        f"(seed {opts.seed}, width {summary['width']:.4g})"
    )
    typer.echo(f"  test AUC      {_fmt(summary['test_auc'])}")
    typer.echo(f"  test logloss  {_fmt(summary['test_logloss'])}")
    typer.echo(f"  base-rate logloss {_fmt(summary['base_rate_logloss'])} (train positive rate, same rows)")
    for name, auc in summary["domain_auc"].items():
        typer.echo(f"  AUC {name:<10}{_fmt(auc)}")
    typer.echo(f"  FLOPs/sample  {summary['flops_per_sample']:,.0f}")
    typer.echo(f"  dense params  {summary['dense_params']:,}")
    typer.echo(f"  train samples/s {summary['train_samples_per_s']:,.0f}")
    typer.echo(f"  wall time     {summary['wall_s']:.1f}s (best epoch {summary['best_epoch']})")
    if summary.get("warm_started"):
        typer.echo(f"  warm start    {summary['warm_started']}")


ModelsOpt = typer.Option("", help="Comma-separated models (default: all registered).")
DomainSourcesOpt = typer.Option(
    "handcrafted,mined,none", help="Comma-separated domain sources (also: random, binned)."
)
GridBudgetOpt = typer.Option("", help="FLOP budget (default: the configured FLOP_BUDGET_DEFAULT).")
SeedsOpt = typer.Option(3, help="Seeds 0..N-1 per entry.")
GridEpochsOpt = typer.Option(
    MAX_EPOCHS,
    "--max-epochs",
    "--epochs",
    min=1,
    help="Maximum epochs per run; early stopping (--patience, --early-stop-metric) ends a run sooner.",
)
ThreadsOpt = typer.Option(None, help="CPU threads for torch (default: torch's choice).")
GridOutOpt = typer.Option(Path("runs/benchmark"), "--out", "-o", help="Output directory.")
ModelConfigOpt = typer.Option(
    "", help='Config overrides per model, as JSON: \'{"adaptive2": {"backbone": "star"}}\'.'
)
WorkersOpt = typer.Option(1, min=1, help="Processes training at once (1: this process).")
NoResumeOpt = typer.Option(
    False,
    "--no-resume",
    help="Train every run again (default: read back the runs finished in --out with the same settings).",
)
DeadlineOpt = typer.Option(
    float("inf"), "--deadline-s", help="Start no run after this many seconds; the rest are listed."
)
SplitSeedOpt = typer.Option(
    "0",
    help="The random split every seed trains on, or 'seed': seed s trains on the split drawn with s.",
)


def benchmark(
    dataset: str = DatasetOpt,
    source: Path | None = SourceOpt,
    split: str = SplitOpt,
    models: str = ModelsOpt,
    domains: str = DomainSourcesOpt,
    budget: str = GridBudgetOpt,
    seeds: int = SeedsOpt,
    epochs: int = GridEpochsOpt,
    patience: int = patience_option(),
    early_stop_metric: str = early_stop_option(),
    calibrate: str = calibrate_option(),
    batch_size: int = BatchSizeOpt,
    threads: int | None = ThreadsOpt,
    out: Path = GridOutOpt,
    model_config: str = ModelConfigOpt,
    workers: int = WorkersOpt,
    no_resume: bool = NoResumeOpt,
    deadline_s: float = DeadlineOpt,
    split_seed: str = SplitSeedOpt,
) -> None:
    """FLOP-matched leaderboard over models × domain sources × seeds (Markdown, CSV, JSON, PNG)."""
    import shlex
    import sys

    from mdctr.routing import FLOP_BUDGET_DEFAULT
    from mdctr.steps.grid import GridConfig
    from mdctr.training import TrainConfig

    with _errors():
        configs = _model_configs(model_config)
        config = GridConfig(
            dataset=dataset,
            out=out,
            models=[m for m in models.split(",") if m],
            domain_sources=[d for d in domains.split(",") if d],
            seeds=seeds,
            budget=budget or FLOP_BUDGET_DEFAULT,
            variants={m: [c] for m, c in configs.items()},
            source_dir=source or datasets_dir(),
            split=split,
            split_seed=split_seed,
            train=TrainConfig(
                epochs=epochs,
                batch_size=batch_size,
                num_threads=threads,
                patience=patience,
                early_stop_metric=early_stop_metric,
                calibrate=calibrate,
            ),
            workers=workers,
            deadline_s=deadline_s,
            resume=not no_resume,
            command=shlex.join(["mdctr", *sys.argv[1:]]),
        )
    _benchmark(config)


def _benchmark(config: Any) -> None:
    """Run the grid of ``config`` (a :class:`mdctr.steps.grid.GridConfig`) and print its leaderboard, the runs
    the deadline left unstarted and the failed ones (exit 1 when any failed)."""
    from mdctr.evaluation.leaderboard import to_markdown
    from mdctr.steps.grid_run import run_grid

    with _errors():
        result = run_grid(config)
    df = result.leaderboard
    if df is not None:  # names the schema (ml-100k), not the adapter (table)
        typer.echo(to_markdown(df, df.attrs["title"]))
    if result.skipped_by_deadline:
        typer.echo(f"deadline: {len(result.skipped_by_deadline)} run(s) not started (listed in grid.json)")
    for failure in result.failed:
        typer.secho(f"failed: {failure['task']}: {failure['error']}", fg=typer.colors.RED, err=True)
    typer.echo(f"wrote {config.out}")
    if result.failed:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    """Add ``train`` and ``benchmark`` to the root app."""
    root.command("train")(train)
    root.command("benchmark")(benchmark)
