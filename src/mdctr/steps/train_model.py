"""Step: train one (model, domain source, seed) entry at the FLOP budget; write the bundle and its results.

Three stages, each its own function: :func:`prepare_entry` (configs, prepared data, warm source, miner),
:func:`train_entry` (fit the width to the budget, train, evaluate on test → an
:class:`~mdctr.training.entry_result.EntryResult`) and :func:`write_entry` (bundle, MLflow run, results).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdctr.io import atomic_dir
from mdctr.steps.common import parse_options, tracking_uri_or_none
from mdctr.steps.mine_domains import MINER_DIR
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE
from mdctr.steps.train_config import TRAIN_BACKENDS, TrainStepConfig, TrainStepOutput, is_main_rank
from mdctr.training.entry_result import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    EntryKey,
    EntryMetrics,
    EntryResult,
    per_domain_metrics,
    write_predictions,
)

log = logging.getLogger(__name__)

# re-exported: the step's interface is importable from the step's module, as components and tests do
__all__ = [
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "TRAIN_BACKENDS",
    "EntryInputs",
    "TrainStepConfig",
    "TrainStepOutput",
    "is_main_rank",
    "load_warm_source",
    "prepare_entry",
    "train_entry",
    "train_model",
    "warm_miner",
    "write_entry",
]


@dataclass(frozen=True)
class EntryInputs:
    """What an entry trains from, read and checked before anything trains.

    Attributes:
        prepared: the prepared splits (:class:`mdctr.data.prepare.PreparedData`).
        train_config: the :class:`~mdctr.training.TrainConfig` (``train_options`` + seed + epochs).
        model_config: the model's config overrides (``{}``: defaults).
        warm: the warm start's :class:`~mdctr.training.warm.WarmSource`, or None (cold).
        miner: the pre-trained domain miner when the routing needs one (warm-started when ``warm`` has one).
    """

    prepared: Any
    train_config: Any
    model_config: dict[str, Any]
    warm: Any
    miner: Any


def _open_training_run(config: TrainStepConfig, inputs: EntryInputs) -> Any:
    """Open the entry's MLflow run under the parent: every effective setting as params (trainer, model and miner
    config after defaults), the git commit, and the three splits as dataset inputs with the data version."""
    from mdctr import tracking
    from mdctr.models.base import model_config
    from mdctr.steps.common import git_sha
    from mdctr.tracking.runs import DatasetRef, TrainingRun

    prepared, miner = inputs.prepared, inputs.miner
    entry = {"model": config.model_name, "domain_source": config.domain_source, "seed": config.seed}
    names = tracking.names
    uri = tracking_uri_or_none(config.tracking_uri)
    parent_tags = tracking.setup.client(uri).get_run(config.parent_run_id).data.tags
    md5 = parent_tags.get(names.TAG_DATA_DVC_MD5) or parent_tags.get(names.TAG_DATA_MD5, "")
    source = {
        "dataset": prepared.spec.schema.name,
        "rev": parent_tags.get(names.TAG_DATA_REV, ""),
        "md5": parent_tags.get(names.TAG_DATA_MD5, ""),
        "dvc_md5": parent_tags.get(names.TAG_DATA_DVC_MD5, ""),
    }
    datasets = [
        # one name per split: MLflow keeps one input per (name, digest), and all three share the data's md5
        DatasetRef(ctx, f"{source['dataset']}.{split_name}", len(split), {**source, "split": split_name}, md5)
        for ctx, split_name, split in (
            ("train", "train", prepared.train),
            ("validation", "valid", prepared.valid),
            ("test", "test", prepared.test),
        )
    ]
    params: dict[str, Any] = {
        **entry,
        # how the data was split (random/time and its seed): the prepared spec's record of it
        "split": prepared.spec.meta.get("split"),
        "split_seed": prepared.spec.meta.get("seed"),
        "flop_budget": config.flop_budget,
        "warm_start": config.warm_start or "cold",
        "train": dataclasses.asdict(inputs.train_config),
        "model_config": dataclasses.asdict(model_config(config.model_name, inputs.model_config or None)),
    }
    if miner is not None:
        params["miner"] = dataclasses.asdict(miner.config)
    return TrainingRun(
        uri,
        config.parent_run_id,
        run_name=f"{config.model_name}/{config.domain_source}/seed{config.seed}",
        params=params,
        tags={
            names.TAG_BUNDLE_MODEL: config.model_name,
            names.TAG_DOMAIN_SOURCE: config.domain_source,
            names.TAG_GIT_SHA: git_sha() or None,
            names.TAG_DATA_REV: source["rev"] or None,
            names.TAG_DATA_MD5: source["md5"] or None,
        },
        datasets=datasets,
    )


def load_warm_source(
    warm_start: str, *, tracking_uri: str | None, schema_name: str, fallback: str = "error"
) -> Any:
    """The :class:`mdctr.training.warm.WarmSource` that ``warm_start`` names: ``"champion"`` (the champion of
    the dataset's registered model, loaded only through :func:`mdctr.tracking.load_registered`, which refuses
    anything executable) or a local bundle directory (JSON + ``weights_only`` tensors). ``""`` → None.

    No champion yet: :class:`~mdctr.training.warm.WarmStartError`, or None (cold) with ``fallback="cold"``.
    """
    from mdctr.serving.bundle import Predictor, bundle_dir_of
    from mdctr.training.warm import WarmSource, WarmStartError

    if not warm_start:
        return None
    if warm_start != "champion":
        try:
            bundle = bundle_dir_of(warm_start)
        except FileNotFoundError as e:
            raise WarmStartError(f"--warm-start {warm_start}: {e}") from None
        return WarmSource.from_predictor(Predictor.load(bundle), label=f"bundle {warm_start}")
    from mdctr import tracking

    name = tracking.registered_model_name(schema_name)
    version = tracking.alias_version(tracking_uri, tracking.CHAMPION, name=name)
    if version is None:
        why = f"--warm-start champion: registered model {name!r} has no {tracking.CHAMPION!r} alias yet"
        if fallback == "cold":
            log.warning("%s; training from scratch (fallback cold)", why)
            return None
        raise WarmStartError(f"{why}; train the first period cold, or pass --warm-start-fallback cold")
    loaded = tracking.load_registered(tracking_uri, name, version)
    return WarmSource.from_predictor(loaded.predictor, label=f"{name} v{version} ({tracking.CHAMPION})")


def warm_miner(prepared: Any, warm: Any, cold: Any, *, seed: int, fallback: str) -> tuple[Any, Any]:
    """For a warm start that needs a pre-trained miner: (the miner warm-started from ``warm``'s external miner on
    the train split re-encoded onto ``warm``'s vocabularies, ``warm``).

    The mine task's miner (``cold``) was fitted on this run's own encoding, and that task is cached on the data
    and options only, so it cannot depend on which version is the champion; the warm miner is fitted here, with
    the source's VQ settings, ``cold``'s epochs and lr, and seed ``seed``. When the source has no external miner
    (it held its miner inside its weights, or was routed otherwise) or its spec does not fit: refused, or with
    ``fallback="cold"`` → (``cold``, None): the entry trains cold on its own encoding, matching ``cold``.
    """
    from mdctr.domains.miner import fit_miner
    from mdctr.routing import model_inputs
    from mdctr.training.warm import extend_data, refuse_or_fall_back

    extended, why = extend_data(warm, prepared)
    if why is None and warm.miner is None:
        why = "it has no external domain miner to carry (its miner is in its weights, or it was routed otherwise)"
    if why is not None:
        refuse_or_fall_back(warm, why, fallback)
        return cold, None
    config = dataclasses.replace(cold.config, seed=seed)
    miner = fit_miner(extended.train, model_inputs(extended, 1), config, init=warm.miner)
    return miner, warm


def prepare_entry(
    config: TrainStepConfig, *, prepared_dir: Path | str, domains_dir: Path | str | None
) -> EntryInputs:
    """Check the entry, read the prepared data and the miner, and load the warm start's source."""
    from mdctr.config import from_dict
    from mdctr.data.prepare import read_prepared
    from mdctr.routing import DomainRouting, check_domain_source
    from mdctr.training import TrainConfig

    check_domain_source(config.model_name, config.domain_source)
    prepared = read_prepared(prepared_dir)
    train_opts = {**parse_options(config.train_options, what="train_options")}
    train_opts.update(seed=config.seed, epochs=config.epochs)
    train_cfg = from_dict(TrainConfig, train_opts, where="train_options")
    model_cfg = parse_options(config.model_options, what="model_options")
    warm = load_warm_source(
        config.warm_start,
        tracking_uri=tracking_uri_or_none(config.tracking_uri),
        schema_name=prepared.spec.schema.name,
        fallback=config.warm_start_fallback,
    )
    miner = None
    if DomainRouting.for_model(
        config.model_name, config.domain_source, model_overrides=model_cfg
    ).needs_miner:
        if domains_dir is None:
            raise FileNotFoundError("domain source 'mined' needs the mine_domains output (domains_dir)")
        from mdctr.domains.miner import DomainMiner

        miner = DomainMiner.load(Path(domains_dir) / MINER_DIR)
        if warm is not None:
            miner, warm = warm_miner(
                prepared, warm, miner, seed=config.seed, fallback=config.warm_start_fallback
            )
    return EntryInputs(prepared, train_cfg, model_cfg, warm, miner)


def train_entry(
    config: TrainStepConfig, inputs: EntryInputs, *, on_epoch: Callable[..., Any] | None = None
) -> tuple[Any, EntryResult]:
    """Fit the width to the budget, train and evaluate on test → (the
    :class:`~mdctr.training.TrainedModel`, its record; ``run_id`` still ``""``). ``on_epoch`` gets each epoch's
    history entry (the MLflow run's curves)."""
    from mdctr.training import train_model as fit_entry

    trained = fit_entry(
        inputs.prepared,
        config.model_name,
        config.domain_source,
        model_config=inputs.model_config or None,
        miner=inputs.miner,
        config=inputs.train_config,
        budget=config.flop_budget,
        on_epoch=on_epoch,
        warm=inputs.warm,
        warm_fallback=config.warm_start_fallback,
    )
    fit = trained.fit
    overall = EntryMetrics(
        auc=trained.metrics["auc"],
        logloss=trained.metrics["logloss"],
        flops_per_sample=trained.flops,
        dense_params=trained.dense_params,
        width=trained.width,
        train_samples_per_s=fit.train_samples_per_s,
        best_valid_auc=fit.best_valid_auc,
        # of the returned model (calibrated when calibrate is set), beside the uncalibrated best epoch's
        valid_logloss=trained.valid_logloss,
        best_valid_logloss=fit.best_valid_logloss,
        # the train positive rate predicted for every test row: the logloss a useful model must beat
        base_rate_logloss=trained.base_rate.get("logloss", math.nan),
        train_positive_rate=trained.base_rate.get("positive_rate", math.nan),
        train_wall_s=fit.wall_s,
        epochs_run=len(fit.history),
    )
    result = EntryResult(
        entry=EntryKey(config.model_name, config.domain_source, config.seed),
        run_id="",
        overall=overall,
        per_domain=per_domain_metrics(trained.metrics, inputs.prepared.spec.schema.domain_names),
        budget=trained.extra,
        history=fit.history,
        num_routing_domains=trained.inputs.num_domains,
        early_stop_metric=fit.early_stop_metric,
        warm_started=trained.warm_started,
        calibration=trained.calibration.to_dict() if trained.calibration is not None else None,
        # the step's settings, so evaluate can put the pipeline's parameters on the parent run
        settings={
            "flop_budget": config.flop_budget,
            "epochs": config.epochs,
            "train_options": config.train_options,
            "model_options": config.model_options,
            "warm_start": config.warm_start,
            "warm_start_fallback": config.warm_start_fallback,
        },
    )
    return trained, result


def _save_bundle(
    bundle_dir: Path, config: TrainStepConfig, inputs: EntryInputs, trained: Any, result: EntryResult
) -> None:
    """The serving bundle (miner, control routing state and calibration included where the entry has them)."""
    from mdctr.serving.bundle import save_bundle

    save_bundle(
        bundle_dir,
        model=trained.model,
        model_name=config.model_name,
        model_config=inputs.model_config,
        width=trained.width,
        spec=trained.spec or inputs.prepared.spec,  # a warm start's extended vocabularies
        domain_source=config.domain_source,
        miner=trained.routing.serving_miner(trained.model),
        routing_state=trained.control.to_dict() if trained.control is not None else None,
        calibration=result.calibration,
        metrics={
            "overall": result.overall.finite(),
            "per_domain": [d.to_dict() for d in result.per_domain],
        },
    )


def write_entry(
    result: EntryResult,
    trained: Any,
    inputs: EntryInputs,
    *,
    results_dir: Path,
    prepared_dir: Path | str,
    run: Any = None,
) -> EntryResult:
    """Finish the entry's MLflow ``run`` (if any: width and budget as params, the results as metrics), then
    write ``results_dir`` atomically: ``metrics.json`` (``result`` with the run id), ``predictions.npz`` and
    the serving example. Returns the record as written."""
    if run is not None:
        with run:
            run.log_params(
                {
                    "width": trained.width,
                    **{k: v for k, v in trained.extra.items() if not isinstance(v, dict)},
                }
            )
            run.log_results(
                metrics=result.overall.finite(), per_domain=[d.to_dict() for d in result.per_domain]
            )
        result = dataclasses.replace(result, run_id=run.run_id)
    with atomic_dir(results_dir) as tmp:
        result.write(tmp)
        write_predictions(
            tmp,
            labels=trained.labels,
            probs=trained.predictions,
            domains=inputs.prepared.test.handcrafted.numpy(),
        )
        example = Path(prepared_dir) / SERVING_EXAMPLE_FILE
        if example.is_file():
            shutil.copyfile(example, tmp / SERVING_EXAMPLE_FILE)
    return result


def train_model(
    *,
    prepared_dir: Path | str,
    domains_dir: Path | str | None,
    bundle_dir: Path | str,
    results_dir: Path | str,
    config: TrainStepConfig,
    prepared_uri: str = "",
    domains_uri: str = "",
    results_uri: str = "",
) -> TrainStepOutput:
    """Fit the width to the budget, train, evaluate on test, and write:

    * ``bundle_dir``: the serving bundle (:func:`mdctr.serving.save_bundle`, miner included for ``mined``);
    * ``results_dir``: ``metrics.json`` (:class:`~mdctr.training.entry_result.EntryResult`: entry, overall +
      per-domain metrics, FLOPs, dense params, width, samples/s, run id), ``predictions.npz`` (test
      labels/probabilities/domains) and the serving example;

    and log a nested MLflow run under ``config.parent_run_id``. Under ``torchrun`` only rank 0 logs and writes.

    With ``config.train_backend == "trainjob"`` the training runs in a TrainJob instead: ``prepared_uri``,
    ``domains_uri`` and ``results_uri`` are the same artifacts as the job's pods see them (an ``s3://`` URI
    or a shared path; default: the local paths); the job writes under ``<results_uri>.trainjob/`` and both
    directories are copied back here (:func:`mdctr.steps.trainjob_task.train_in_trainjob`).
    """
    bundle_dir, results_dir = Path(bundle_dir), Path(results_dir)
    if config.train_backend == "trainjob":
        from mdctr.steps.trainjob_task import train_in_trainjob

        return train_in_trainjob(
            prepared_uri=prepared_uri or str(Path(prepared_dir).resolve()),
            domains_uri=domains_uri or (str(Path(domains_dir).resolve()) if domains_dir else ""),
            results_uri=results_uri or str(results_dir.resolve()),
            bundle_dir=bundle_dir,
            results_dir=results_dir,
            config=config,
        )
    inputs = prepare_entry(config, prepared_dir=prepared_dir, domains_dir=domains_dir)
    main_rank = is_main_rank()
    run = None
    if config.parent_run_id and main_rank:
        # opened before training, so the run's duration, system metrics and epoch curves are the training's
        run = _open_training_run(config, inputs)
    try:
        trained, result = train_entry(config, inputs, on_epoch=run.log_epoch if run is not None else None)
        if not main_rank:  # another DDP rank: rank 0 writes the bundle and results
            return TrainStepOutput.of(result, bundle_dir=bundle_dir, results_dir=results_dir)
        _save_bundle(bundle_dir, config, inputs, trained, result)
    except BaseException:
        if run is not None:
            run.end("FAILED")
        raise
    result = write_entry(result, trained, inputs, results_dir=results_dir, prepared_dir=prepared_dir, run=run)
    entry = dataclasses.asdict(result.entry)
    log.info(
        "%s: auc %.5f, %.0f FLOPs/sample, width %.4g", entry, result.overall.auc, result.flops, result.width
    )
    return TrainStepOutput.of(result, bundle_dir=bundle_dir, results_dir=results_dir)
