"""Step: train one (model, domain source, seed) entry at the FLOP budget; write the bundle and its results."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdctr.io import atomic_dir, write_json_atomic
from mdctr.steps.common import parse_options, tracking_uri_or_none
from mdctr.steps.mine_domains import MINER_DIR
from mdctr.steps.prepare_data import SERVING_EXAMPLE_FILE

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
#: test labels, probabilities and hand-crafted domains: what paired significance tests need
PREDICTIONS_FILE = "predictions.npz"
#: where an entry trains: in the task's own process, or as a Kubeflow Trainer TrainJob on ``train_nodes`` pods
TRAIN_BACKENDS = ("task", "trainjob")


@dataclass(frozen=True)
class TrainStepConfig:
    """One training entry.

    Attributes:
        model_name: registered model; ``domain_source``: ``none``/``handcrafted``/``mined`` or a control
            source (``random``/``binned``, see :mod:`mdctr.routing`); ``seed``.
        flop_budget: budget spec (``"model:dnn"``, ``"model:dnn@2"`` or FLOPs per sample): the width is fitted.
        epochs: maximum training epochs (overrides ``train_options``); early stopping on validation AUC or
            logloss (``patience``, ``early_stop_metric`` in ``train_options``) normally ends the run first;
            ``calibrate`` there (``"temperature"``) fits per-domain calibration on validation (in the bundle).
        train_options: JSON object of further :class:`~mdctr.training.TrainConfig` fields (strict).
        model_options: JSON object of the model's config overrides (strict).
        tracking_uri: MLflow URI (``""``: environment/default); ``parent_run_id``: the pipeline's parent run
            (``""`` skips MLflow logging, e.g. for a standalone call).
        train_backend: ``task`` trains in this process; ``trainjob`` runs the entry as a Kubeflow Trainer
            TrainJob of ``train_nodes`` pods (DDP, :mod:`mdctr.steps.train_remote`) and reads its results back.
        warm_start: ``""`` (cold), ``"champion"`` (the dataset's registered champion, loaded through
            :func:`mdctr.tracking.load_registered`) or a local bundle directory: start from its weights
            (:mod:`mdctr.training.warm`); ``warm_start_fallback``: ``error`` refuses what cannot be carried,
            ``cold`` trains from scratch instead.
    """

    model_name: str
    domain_source: str
    seed: int = 0
    flop_budget: str = "model:dnn"
    epochs: int = 20
    train_options: str = "{}"
    model_options: str = "{}"
    tracking_uri: str = ""
    parent_run_id: str = ""
    train_backend: str = "task"
    train_nodes: int = 1
    warm_start: str = ""
    warm_start_fallback: str = "error"

    def __post_init__(self) -> None:
        if self.warm_start_fallback not in ("error", "cold"):
            raise ValueError(f"warm_start_fallback must be error or cold; got {self.warm_start_fallback!r}")
        if self.warm_start and self.train_backend != "task":
            raise ValueError("warm_start runs in the task's own process: use train_backend 'task'")
        if self.train_backend not in TRAIN_BACKENDS:
            raise ValueError(f"train_backend must be one of {TRAIN_BACKENDS}; got {self.train_backend!r}")
        if self.train_nodes < 1:
            raise ValueError(f"train_nodes must be >= 1; got {self.train_nodes}")


@dataclass(frozen=True)
class TrainStepOutput:
    """Attributes: the nested MLflow ``run_id`` (``""`` if not logged), finite scalar ``metrics`` (``auc``,
    ``logloss``, ``flops_per_sample``, ``dense_params``, ``width``, ``train_samples_per_s``,
    ``domain.<id>.auc`` …), ``flops`` per sample and fitted ``width``."""

    bundle_dir: Path
    results_dir: Path
    run_id: str
    metrics: dict[str, float]
    flops: float
    width: float


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def per_domain_entries(metrics: dict[str, Any], domain_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """``evaluate_predictions`` per-domain dict (keyed by name) → list keyed by hand-crafted domain id."""
    out = []
    for i, name in enumerate(domain_names):
        values = metrics["domains"].get(str(name), {})
        entry: dict[str, Any] = {"domain": i, "name": str(name)}
        entry.update({k: values[k] for k in ("rows", "positive_rate", "auc", "logloss") if k in values})
        out.append(entry)
    return out


def _open_training_run(
    config: TrainStepConfig,
    *,
    entry: dict[str, Any],
    train_cfg: Any,
    model_cfg: dict[str, Any],
    miner: Any,
    prepared: Any,
) -> Any:
    """Open the entry's MLflow run under the parent: every effective setting as params (trainer, model and miner
    config after defaults), the git commit, and the three splits as dataset inputs with the data version."""
    from mdctr import tracking
    from mdctr.models.base import model_config
    from mdctr.steps.common import git_sha
    from mdctr.tracking.runs import DatasetRef, TrainingRun

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
        "train": dataclasses.asdict(train_cfg),
        "model_config": dataclasses.asdict(model_config(config.model_name, model_cfg or None)),
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


def is_main_rank() -> bool:
    """Rank 0 of a ``torchrun`` job (``RANK`` unset: a plain process): the one that logs and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def scalar_metrics(overall: dict[str, Any], per_domain: list[dict[str, Any]]) -> dict[str, float]:
    """The finite overall metrics plus ``domain.<id>.auc``/``logloss``: what the KFP Metrics artifact shows."""
    scalars = {k: float(v) for k, v in overall.items() if _finite(v) is not None}
    for entry_d in per_domain:
        for key in ("auc", "logloss"):
            if _finite(entry_d.get(key)) is not None:
                scalars[f"domain.{entry_d['domain']}.{key}"] = float(entry_d[key])
    return scalars


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
    * ``results_dir``: ``metrics.json`` (entry, overall + per-domain metrics, FLOPs, dense params, width,
      samples/s, run id), ``predictions.npz`` (test labels/probabilities/domains) and the serving example;

    and log a nested MLflow run under ``config.parent_run_id``. Under ``torchrun`` only rank 0 logs and writes.

    With ``config.train_backend == "trainjob"`` the training runs in a TrainJob instead: ``prepared_uri``,
    ``domains_uri`` and ``results_uri`` are the same artifacts as the job's pods see them (an ``s3://`` URI
    or a shared path; default: the local paths); the job writes under ``<results_uri>.trainjob/`` and both
    directories are copied back here (:func:`mdctr.steps.train_remote.train_in_trainjob`).
    """
    if config.train_backend == "trainjob":
        from mdctr.steps.train_remote import train_in_trainjob

        return train_in_trainjob(
            prepared_uri=prepared_uri or str(Path(prepared_dir).resolve()),
            domains_uri=domains_uri or (str(Path(domains_dir).resolve()) if domains_dir else ""),
            results_uri=results_uri or str(Path(results_dir).resolve()),
            bundle_dir=Path(bundle_dir),
            results_dir=Path(results_dir),
            config=config,
        )
    from mdctr.config import from_dict
    from mdctr.data.prepare import read_prepared
    from mdctr.routing import DomainRouting, check_domain_source
    from mdctr.serving.bundle import save_bundle
    from mdctr.training import TrainConfig
    from mdctr.training import train_model as fit_entry

    bundle_dir, results_dir = Path(bundle_dir), Path(results_dir)
    check_domain_source(config.model_name, config.domain_source)
    prepared = read_prepared(prepared_dir)
    schema = prepared.spec.schema
    train_opts = {**parse_options(config.train_options, what="train_options")}
    train_opts.update(seed=config.seed, epochs=config.epochs)
    train_cfg = from_dict(TrainConfig, train_opts, where="train_options")
    model_cfg = parse_options(config.model_options, what="model_options")
    warm = load_warm_source(
        config.warm_start,
        tracking_uri=tracking_uri_or_none(config.tracking_uri),
        schema_name=schema.name,
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
    entry = {"model": config.model_name, "domain_source": config.domain_source, "seed": config.seed}
    run = None
    main_rank = is_main_rank()
    if config.parent_run_id and main_rank:
        # opened before training, so the run's duration, system metrics and epoch curves are the training's
        run = _open_training_run(
            config, entry=entry, train_cfg=train_cfg, model_cfg=model_cfg, miner=miner, prepared=prepared
        )
    try:
        trained = fit_entry(
            prepared,
            config.model_name,
            config.domain_source,
            model_config=model_cfg or None,
            miner=miner,
            config=train_cfg,
            budget=config.flop_budget,
            on_epoch=run.log_epoch if run is not None else None,
            warm=warm,
            warm_fallback=config.warm_start_fallback,
        )
        m = trained.metrics
        per_domain = per_domain_entries(m, schema.domain_names)
        overall = {
            "auc": m["auc"],
            "logloss": m["logloss"],
            "flops_per_sample": trained.flops,
            "dense_params": trained.dense_params,
            "width": trained.width,
            "train_samples_per_s": trained.fit.train_samples_per_s,
            "best_valid_auc": trained.fit.best_valid_auc,
            # of the returned model (calibrated when calibrate is set), beside the uncalibrated best epoch's
            "valid_logloss": trained.valid_logloss,
            "best_valid_logloss": trained.fit.best_valid_logloss,
            # the train positive rate predicted for every test row: the logloss a useful model must beat
            "base_rate_logloss": trained.base_rate.get("logloss", math.nan),
            "train_positive_rate": trained.base_rate.get("positive_rate", math.nan),
            "train_wall_s": trained.fit.wall_s,
            "epochs_run": len(trained.fit.history),
        }
        if not main_rank:  # another DDP rank: rank 0 writes the bundle and results
            scalars = scalar_metrics(overall, per_domain)
            return TrainStepOutput(
                bundle_dir, results_dir, "", scalars, float(trained.flops), float(trained.width)
            )
        save_bundle(
            bundle_dir,
            model=trained.model,
            model_name=config.model_name,
            model_config=model_cfg,
            width=trained.width,
            spec=trained.spec or prepared.spec,  # a warm start's extended vocabularies
            domain_source=config.domain_source,
            miner=trained.routing.serving_miner(trained.model),
            routing_state=trained.control.to_dict() if trained.control is not None else None,
            calibration=trained.calibration.to_dict() if trained.calibration is not None else None,
            metrics={
                "overall": {k: v for k, v in overall.items() if _finite(v) is not None},
                "per_domain": per_domain,
            },
        )
    except BaseException:
        if run is not None:
            run.end("FAILED")
        raise
    run_id = ""
    if run is not None:
        with run:
            run.log_params(
                {
                    "width": trained.width,
                    **{k: v for k, v in trained.extra.items() if not isinstance(v, dict)},
                }
            )
            run.log_results(
                metrics={k: v for k, v in overall.items() if _finite(v) is not None}, per_domain=per_domain
            )
        run_id = run.run_id
    summary = {
        "entry": entry,
        "run_id": run_id,
        "overall": overall,
        "per_domain": per_domain,
        "budget": trained.extra,
        "history": trained.fit.history,
        "num_routing_domains": trained.inputs.num_domains,
        "early_stop_metric": trained.fit.early_stop_metric,
        "warm_started": trained.warm_started,
        "calibration": trained.calibration.to_dict() if trained.calibration is not None else None,
        # the step's settings, so evaluate can put the pipeline's parameters on the parent run
        "settings": {
            "flop_budget": config.flop_budget,
            "epochs": config.epochs,
            "train_options": config.train_options,
            "model_options": config.model_options,
            "warm_start": config.warm_start,
            "warm_start_fallback": config.warm_start_fallback,
        },
    }
    with atomic_dir(results_dir) as tmp:
        write_json_atomic(tmp / METRICS_FILE, summary)
        np.savez(
            tmp / PREDICTIONS_FILE,
            labels=trained.labels,
            probs=trained.predictions,
            domains=prepared.test.handcrafted.numpy(),
        )
        example = Path(prepared_dir) / SERVING_EXAMPLE_FILE
        if example.is_file():
            shutil.copyfile(example, tmp / SERVING_EXAMPLE_FILE)
    scalars = scalar_metrics(overall, per_domain)
    log.info("%s: auc %.5f, %.0f FLOPs/sample, width %.4g", entry, m["auc"], trained.flops, trained.width)
    return TrainStepOutput(
        bundle_dir=bundle_dir,
        results_dir=results_dir,
        run_id=run_id,
        metrics=scalars,
        flops=float(trained.flops),
        width=float(trained.width),
    )
