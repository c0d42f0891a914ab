"""Run the FLOP-matched benchmark: every model × domain source × seed at one FLOP budget → leaderboard."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mdctr.config import ConfigError
from mdctr.data import load_dataset
from mdctr.data.prepare import PreparedData, prepare_in_memory
from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, write_leaderboard
from mdctr.io import write_json_atomic
from mdctr.models.base import model_class, plan_pairs
from mdctr.routing import DomainRouting, budget_for_data, count_batch, fit_width, model_inputs
from mdctr.training.config import TrainConfig
from mdctr.training.run import train_model

log = logging.getLogger(__name__)


def variant_name(model: str, model_config: Mapping[str, Any] | None) -> str:
    """Leaderboard name of a model run with config overrides: ``adaptive2[backbone=star]``."""
    if not model_config:
        return model
    return f"{model}[{','.join(f'{k}={v}' for k, v in model_config.items())}]"


def run_benchmark(
    dataset: str,
    source_dir: Path | str | None,
    models: Sequence[str],
    domain_sources: Sequence[str],
    budget_spec: str | float,
    seeds: int | Sequence[int],
    out_dir: Path | str,
    train_config: TrainConfig,
    miner_config: Any | None = None,
    *,
    dataset_options: dict[str, Any] | None = None,
    prepared: PreparedData | None = None,
    model_configs: Mapping[str, dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Train and evaluate every accepted (model, domain source) at the budget for every seed.

    Widths are fitted once per (model, source) on the first validation rows; a pair the model does not accept
    is skipped with a log line and listed in ``skipped.json``. A separate miner (``mdctr.domains.fit_miner``
    with ``miner_config``) is pre-trained once when some entry's routing needs one (routing by mined codes
    from outside the model, or a model holding a pre-trained miner). ``model_configs`` maps a model name to
    overrides of its config, used for every entry of that model; its entries are named
    ``model[key=value,…]/source``. Per-run summaries (with the overrides) go to ``out_dir/runs/``; the
    leaderboard files to ``out_dir``.

    Returns:
        the leaderboard (see :func:`build_leaderboard`); ``attrs`` also hold ``dataset`` (the schema's name)
        and ``title`` (the leaderboard's, with that name).
    """
    out = Path(out_dir)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    configs = dict(model_configs or {})
    if unknown := sorted(set(configs) - set(models)):
        raise ConfigError(f"model configs given for {unknown}, which are not among the models {list(models)}")
    if prepared is None:
        prepared = prepare_in_memory(load_dataset(dataset, source_dir or ".", **(dataset_options or {})))

    plan, skipped = _plan(models, domain_sources)
    routings = [
        DomainRouting.for_model(name, source, model_overrides=configs.get(name)) for name, source in plan
    ]
    miner = _fit_miner_if_needed(routings, prepared, miner_config, out)
    routings = [dataclasses.replace(r, miner=miner) if r.needs_miner else r for r in routings]
    budget = budget_for_data(prepared, str(budget_spec), miner)
    log.info(
        "benchmark %s: budget %s = %.0f FLOPs/sample, %d entries × %d seeds",
        dataset,
        budget_spec,
        budget,
        len(plan),
        len(seed_list),
    )
    records: list[RunRecord] = []
    for routing in routings:
        records += _run_entry(
            routing, prepared, budget, seed_list, train_config, out, budget_spec=str(budget_spec)
        )
    df = build_leaderboard(records)
    # the schema's name (`ml-1m`, a table's `name:`), not the adapter's (`table`, which every table shares)
    name = prepared.spec.schema.name
    title = f"FLOP-matched leaderboard: {name}"
    df.attrs.update(budget=str(budget_spec), budget_flops=budget, dataset=name, title=title)
    write_leaderboard(df, out, title=title)
    write_json_atomic(out / "skipped.json", skipped)
    return df


def _plan(models: Sequence[str], domain_sources: Sequence[str]) -> tuple[list[tuple[str, str]], list[dict]]:
    """The (model, source) pairs to train and the skipped ones (with why), logged."""
    plan, unsupported = plan_pairs(models, domain_sources)
    skipped: list[dict[str, str]] = []
    for name, source in unsupported:
        reason = f"accepts only {list(model_class(name).domain_sources)}"
        log.info("not training %s with domain source %s: %s", name, source, reason)
        skipped.append({"model": name, "domain_source": source, "reason": reason})
    if not plan:
        raise ValueError(f"no model accepts any of the domain sources {list(domain_sources)}")
    return plan, skipped


def _fit_miner_if_needed(
    routings: Sequence[DomainRouting], prepared: PreparedData, miner_config: Any | None, out: Path
) -> Any | None:
    """Pre-train the one miner every entry that needs one shares (saved to ``out/miner``), or None."""
    if not any(r.needs_miner for r in routings):
        return None
    from mdctr.domains.miner import MinerConfig, fit_miner

    miner = fit_miner(prepared.train, model_inputs(prepared, 1), miner_config or MinerConfig())
    miner.save(out / "miner")
    return miner


def _run_entry(
    routing: DomainRouting,
    prepared: PreparedData,
    budget: float,
    seeds: Sequence[int],
    train_config: TrainConfig,
    out: Path,
    *,
    budget_spec: str,
) -> list[RunRecord]:
    """Fit one entry's width to the budget, then train and evaluate it once per seed (summaries to
    ``out/runs/``)."""
    name, source, model_config = routing.model_name, routing.source, routing.model_overrides
    assert name is not None
    routed = routing.route(prepared)
    fitted = fit_width(name, routed.inputs, budget, count_batch(routed.data.valid), model_config, routing)
    records = []
    for seed in seeds:
        tag = f"{name}-{source}-seed{seed}"
        checkpoints = Path(train_config.checkpoint_dir) / tag if train_config.checkpoint_dir else None
        config = dataclasses.replace(
            train_config, seed=seed, checkpoint_dir=str(checkpoints) if checkpoints else None
        )
        trained = train_model(
            prepared,
            name,
            source,
            width=fitted.width,
            model_config=model_config,
            miner=routing.miner,
            config=config,
        )
        record = RunRecord.from_trained(trained)
        if model_config:  # a variant gets its own leaderboard entry, named by its overrides
            record = dataclasses.replace(record, model=variant_name(name, model_config))
        records.append(record)
        summary = trained.summary() | {
            "budget": budget_spec,
            "budget_flops": budget,
            "model_config": model_config or {},
        }
        write_json_atomic(out / "runs" / f"{tag}.json", summary)
        np.save(out / "runs" / f"{tag}.test_probs.npy", trained.predictions.astype(np.float32))
    return records
