"""The benchmark grid: every model × domain source × config variant × seed at one FLOP budget → a leaderboard.

The one grid runner behind ``mdctr benchmark`` and ``benchmarks/grid.py``. This module plans the grid and keeps
its run files; :mod:`mdctr.steps.grid_run` trains it (worker processes, a deadline) and writes the leaderboard.

Files under ``GridConfig.out``:

- ``runs/TAG.json``: the run's summary; ``runs/TAG.test_probs.npy``: its test predictions;
  ``runs/TAG.record.json``: its leaderboard record, the settings it ran with and the device, written last, so
  its presence marks the run complete. A later grid with the same settings reads the run back instead of
  training it again; one with other settings (the grid's options, the model's whole config with its defaults,
  the trainer's result-changing settings, the pre-trained miner's codes) is refused, not silently mixed in.
- ``miner/splitS/``: the miner pre-trained on split ``S``'s train rows (one per split, when an entry needs one).
- ``leaderboard.{md,json,csv}`` and plots (:func:`mdctr.evaluation.leaderboard.write_leaderboard`),
  ``skipped.json`` (the pairs a model does not accept, with why) and ``grid.json`` (settings, machine, wall
  time, runs trained, read back, skipped by the deadline, failed).

``GridConfig.records`` keeps the runs (without predictions) in one JSON-lines file to commit, so that a grid can
be finished in another session or on another machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdctr.config import ConfigError
from mdctr.training.config import TrainConfig

#: ``split_seed`` value that gives every model seed its own split
PER_SEED = "seed"

#: the grid's settings a resumed run must share with this grid (the device may differ: it is recorded per run)
RESUME_KEYS = ("dataset", "budget", "epochs", "patience", "batch_size")

#: the trainer's settings that change a run's result and are not the grid's own options
TRAIN_KEYS = ("lr", "weight_decay", "aux_loss_weight")


class StaleRunsError(ConfigError):
    """Finished runs made with other settings than this grid's (the message names each)."""


def variant_name(model: str, model_config: Mapping[str, Any] | None) -> str:
    """Leaderboard name of a model run with config overrides: ``adaptive2[backbone=star]``."""
    if not model_config:
        return model
    return f"{model}[{','.join(f'{k}={v}' for k, v in model_config.items())}]"


@dataclass(frozen=True)
class GridConfig:
    """What to train and where.

    Attributes:
        dataset, source_dir, dataset_options: the adapter, its source directory and keyword options.
        out: the output directory (see the module docstring).
        models: registered models (empty: all); ``domain_sources``: requested sources (:func:`plan_grid`).
        seeds: model seeds ``0..seeds-1`` per entry.
        budget: FLOP budget spec (``model:dnn``, a number) or ``none`` (default sizes, width 1).
        variants: model → list of config overrides, each its own entry named by them (default: ``[{}]``).
        split: ``random`` or ``time``; ``split_seed``: :data:`PER_SEED` (model seed s trains on the split drawn
            with seed s) or an integer as a string (that one split for every seed).
        train: the trainer's settings (its ``seed`` is set per run; a ``checkpoint_dir`` gets a folder per run).
        miner: the miner's settings (a :class:`mdctr.domains.miner.MinerConfig`; None: its defaults).
        workers: processes training at once (1: this process); ``deadline_s``: no run starts after this.
        resume: read finished runs back (False: train every run again); ``rerun_stale``: train again the runs
            made with other settings instead of refusing them.
        records: the JSON-lines store of finished runs (read back, then rewritten), or None.
        command: the command line, recorded in ``grid.json``.
    """

    dataset: str
    out: Path
    models: Sequence[str] = ()
    domain_sources: Sequence[str] = ("handcrafted", "mined", "none")
    seeds: int = 1
    budget: str = "model:dnn"
    variants: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    source_dir: Path | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    split: str = "random"
    split_seed: str = PER_SEED
    train: TrainConfig = field(default_factory=TrainConfig)
    miner: Any | None = None
    workers: int = 1
    deadline_s: float = math.inf
    resume: bool = True
    rerun_stale: bool = False
    records: Path | None = None
    command: str = ""

    def __post_init__(self) -> None:
        if self.split_seed != PER_SEED and not self.split_seed.isdigit():
            raise ConfigError(
                f"--split-seed: expected '{PER_SEED}' or an integer >= 0, found {self.split_seed!r}"
            )
        if self.seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {self.seeds}")

    @property
    def no_cap(self) -> bool:
        """``budget none``: every entry at its default sizes (width 1, no FLOP fitting)."""
        return self.budget.strip().lower() == "none"

    def split_seed_of(self, seed: int) -> int:
        """The split model seed ``seed`` trains on."""
        return seed if self.split_seed == PER_SEED else int(self.split_seed)


@dataclass(frozen=True)
class Entry:
    """One leaderboard entry: a ``model`` with its config ``overrides`` (as JSON, the key order given), routed
    by ``source``."""

    model: str
    overrides_json: str
    source: str

    @property
    def overrides(self) -> dict[str, Any]:
        return json.loads(self.overrides_json)

    @property
    def name(self) -> str:
        """The leaderboard row: ``hamur[adapter_per_domain=False]/handcrafted``."""
        return f"{variant_name(self.model, self.overrides)}/{self.source}"

    def routing(self, miner: Any | None = None) -> Any:
        from mdctr.routing import DomainRouting

        return DomainRouting.for_model(
            self.model, self.source, miner=miner, model_overrides=self.overrides or None
        )


#: one run: (model seed, entry)
Task = tuple[int, Entry]


@dataclass(frozen=True)
class GridPlan:
    """Attributes: ``entries`` (pair-major, then variants), ``seeds`` and ``skipped`` (the requested pairs a
    model does not accept: dicts with ``model``, ``domain_source`` and ``reason``)."""

    entries: tuple[Entry, ...]
    seeds: tuple[int, ...]
    skipped: tuple[dict[str, str], ...]

    @property
    def tasks(self) -> list[Task]:
        """Every run, seed-major: a grid cut short by its deadline has whole seeds."""
        return [(seed, entry) for seed in self.seeds for entry in self.entries]

    @property
    def names(self) -> list[str]:
        return sorted(e.name for e in self.entries)


def plan_grid(config: GridConfig) -> GridPlan:
    """The grid's entries: every accepted (model, domain source) pair (:func:`mdctr.steps.plan_runs.plan_pairs_or_fail`)
    × the model's variants; nothing is read or trained.

    Raises:
        ConfigError: variants of a model that is not in the grid.
    """
    from mdctr.models import model_names
    from mdctr.steps.plan_runs import plan_pairs_or_fail, skip_reason

    models = list(config.models) or model_names()
    if unknown := sorted(set(config.variants) - set(models)):
        raise ConfigError(f"model configs given for {unknown}, which are not among the models {models}")
    pairs, unsupported = plan_pairs_or_fail(models, config.domain_sources)
    entries = tuple(
        Entry(model, json.dumps(dict(overrides)), source)
        for model, source in pairs
        for overrides in config.variants.get(model) or [{}]
    )
    skipped = tuple(
        {"model": model, "domain_source": source, "reason": skip_reason(model)}
        for model, source in unsupported
    )
    return GridPlan(entries, tuple(range(config.seeds)), skipped)


def run_tag(seed: int, entry: Entry) -> str:
    """File-name stem of one run: ``hamur-handcrafted-seed0``, ``adaptive2[data_init=True]-mined-seed0``."""
    label = variant_name(entry.model, entry.overrides)
    return re.sub(r"[^A-Za-z0-9_.,=\[\]-]", "_", f"{label}-{entry.source}-seed{seed}")


def grid_settings(config: GridConfig) -> dict[str, Any]:
    """The grid's settings every one of its runs records (JSON values)."""
    train = config.train
    settings: dict[str, Any] = {
        "dataset": config.dataset,
        "budget": config.budget,
        "epochs": train.epochs,
        "patience": train.patience,
        "batch_size": train.batch_size,
    }
    # each only when it differs from what grids ran with before the option existed (no dataset options, one
    # random split drawn with seed 0, early stopping on AUC, no calibration), so older stores still read back
    if config.dataset_options:
        settings["dataset_options"] = dict(config.dataset_options)
    if config.split_seed != "0":
        settings["split_seed"] = config.split_seed
    if config.split != "random":
        settings["split"] = config.split
    if train.early_stop_metric != "auc":
        settings["early_stop_metric"] = train.early_stop_metric
    if train.calibrate != "none":
        settings["calibrate"] = train.calibrate
    return json.loads(json.dumps(settings))


def resolved_config(entry: Entry, train: TrainConfig) -> dict[str, Any]:
    """The model's whole config (its defaults with the overrides) and the trainer's result-changing settings, as
    JSON values: a stored run is read back only while these are what the code would train with now, so a
    default changed between sessions cannot mix old runs into a new grid."""
    from mdctr.models.base import model_config

    model = dataclasses.asdict(model_config(entry.model, entry.overrides or None))
    trainer = {k: getattr(train, k) for k in TRAIN_KEYS}
    return json.loads(json.dumps({"model_config": model, "train_config": trainer}, default=str))


def check_settings(saved: dict[str, Any], settings: dict[str, Any], where: str) -> None:
    """Refuse a run made with other settings (mixing them in one leaderboard would be wrong).

    Raises:
        ValueError: naming ``where`` and each differing setting.
    """
    differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise ValueError(f"{where} ran with other settings ({detail})")


def record_path(out: Path, tag: str) -> Path:
    return out / "runs" / f"{tag}.record.json"


def probs_path(out: Path, tag: str) -> Path:
    return out / "runs" / f"{tag}.test_probs.npy"


def read_back(out: Path, tag: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The finished run ``tag`` from an earlier grid in ``out`` (its record with its ``tag``), or None when it is
    not (completely) there.

    Raises:
        ValueError: it ran with other settings.
    """
    path = record_path(out, tag)
    if not (path.is_file() and probs_path(out, tag).is_file()):
        return None
    saved = json.loads(path.read_text())
    check_settings(saved["settings"], settings, str(path))
    return saved["record"] | {"tag": tag}


def stale_message(stale: Sequence[str]) -> str:
    return (
        f"{len(stale)} finished run(s) ran with other settings than this command's and cannot be mixed into one "
        "leaderboard:\n  " + "\n  ".join(stale) + "\nUse another output directory or records store, or train "
        "them again (benchmarks/grid.py --rerun-stale, mdctr benchmark --no-resume): their stored results are "
        "replaced."
    )


def store_lines(out: Path, store: Mapping[str, dict[str, Any]], records: Sequence[dict[str, Any]]) -> str:
    """The records store rewritten: its runs (of other models or seeds too) plus this grid's, one JSON line each,
    sorted by tag."""
    rows = dict(store)
    for rec in records:
        if rec["tag"] not in store:
            rows[rec["tag"]] = json.loads(record_path(out, rec["tag"]).read_text())
    lines = [
        json.dumps({"tag": tag, **{k: row[k] for k in ("record", "settings", "device")}})
        for tag, row in sorted(rows.items())
    ]
    return "\n".join(lines) + "\n"
