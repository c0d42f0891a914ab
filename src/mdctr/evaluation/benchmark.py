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
from mdctr.evaluation.budget import fit_width, mines_own_domains, parse_budget, resolve_budget
from mdctr.evaluation.flops import count_batch
from mdctr.evaluation.leaderboard import RunRecord, build_leaderboard, write_leaderboard
from mdctr.io import write_json_atomic
from mdctr.models.base import model_class, plan_pairs
from mdctr.training.config import TrainConfig
from mdctr.training.domains import apply_domain_source
from mdctr.training.run import model_inputs, train_model

log = logging.getLogger(__name__)


def variant_name(model: str, model_config: Mapping[str, Any] | None) -> str:
    """Leaderboard name of a model run with config overrides: ``adaptive2[backbone=star]``."""
    if not model_config:
        return model
    return f"{model}[{','.join(f'{k}={v}' for k, v in model_config.items())}]"


def budget_flops(prepared: PreparedData, spec: str, miner: Any | None) -> float:
    parsed = parse_budget(spec)
    if parsed.model is None:
        return float(parsed.flops)  # type: ignore[arg-type]
    accepted = model_class(parsed.model).domain_sources
    source = next(s for s in ("none", "handcrafted", "mined") if s in accepted)
    routed, num = apply_domain_source(prepared, source, miner, model_name=parsed.model)
    return resolve_budget(parsed, model_inputs(prepared, num), count_batch(routed.valid))


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
    with ``miner_config``) is pre-trained once when some model routes by mined codes without its own VQ-VAE.
    ``model_configs`` maps a model name to overrides of its config, used for every entry of that model (an
    ``adaptive2`` with ``miner="pretrained"`` gets the pre-trained miner); its entries are named
    ``model[key=value,…]/source``. Per-run summaries (with the overrides) go to ``out_dir/runs/``; the
    leaderboard files to ``out_dir``.

    Returns:
        the leaderboard (see :func:`build_leaderboard`).
    """
    out = Path(out_dir)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    configs = dict(model_configs or {})
    if unknown := sorted(set(configs) - set(models)):
        raise ConfigError(f"model configs given for {unknown}, which are not among the models {list(models)}")
    if prepared is None:
        loaded = load_dataset(dataset, source_dir or ".", **(dataset_options or {}))
        prepared = prepare_in_memory(loaded)

    plan, unsupported = plan_pairs(models, domain_sources)
    skipped: list[dict[str, str]] = []
    for name, source in unsupported:
        reason = f"accepts only {list(model_class(name).domain_sources)}"
        log.info("not training %s with domain source %s: %s", name, source, reason)
        skipped.append({"model": name, "domain_source": source, "reason": reason})
    if not plan:
        raise ValueError(f"no model accepts any of the domain sources {list(domain_sources)}")

    def needs_miner(name: str) -> bool:  # routed from outside, or holding a pre-trained miner
        return not mines_own_domains(name) or configs.get(name, {}).get("miner") == "pretrained"

    miner = None
    if any(s == "mined" and needs_miner(m) for m, s in plan):
        from mdctr.domains.miner import MinerConfig, fit_miner

        miner = fit_miner(prepared.train, model_inputs(prepared, 1), miner_config or MinerConfig())
        miner.save(out / "miner")
    budget = budget_flops(prepared, str(budget_spec), miner)
    log.info(
        "benchmark %s: budget %s = %.0f FLOPs/sample, %d entries × %d seeds",
        dataset,
        budget_spec,
        budget,
        len(plan),
        len(seed_list),
    )

    records: list[RunRecord] = []
    for name, source in plan:
        run_miner = miner if source == "mined" else None
        router = None if mines_own_domains(name) else run_miner  # routes from outside the model
        routed, num = apply_domain_source(prepared, source, router, model_name=name)
        model_config = configs.get(name)
        fitted = fit_width(
            name,
            model_inputs(prepared, num),
            budget,
            count_batch(routed.valid),
            model_config=model_config,
            miner=run_miner,
        )
        for seed in seed_list:
            tag = f"{name}-{source}-seed{seed}"
            config = dataclasses.replace(
                train_config,
                seed=seed,
                checkpoint_dir=str(Path(train_config.checkpoint_dir) / tag)
                if train_config.checkpoint_dir
                else None,
            )
            trained = train_model(
                prepared,
                name,
                source,
                width=fitted.width,
                model_config=model_config,
                miner=run_miner,
                config=config,
            )
            record = RunRecord.from_trained(trained)
            if model_config:  # a variant gets its own leaderboard entry, named by its overrides
                record = dataclasses.replace(record, model=variant_name(name, model_config))
            records.append(record)
            summary = trained.summary() | {
                "budget": str(budget_spec),
                "budget_flops": budget,
                "model_config": model_config or {},
            }
            write_json_atomic(out / "runs" / f"{tag}.json", summary)
            np.save(out / "runs" / f"{tag}.test_probs.npy", trained.predictions.astype(np.float32))

    df = build_leaderboard(records)
    df.attrs["budget"] = str(budget_spec)
    df.attrs["budget_flops"] = budget
    df.attrs["dataset"] = dataset
    write_leaderboard(df, out, title=f"FLOP-matched leaderboard: {dataset}")
    write_json_atomic(out / "skipped.json", skipped)
    return df
