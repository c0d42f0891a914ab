"""What goes into a ``train_model`` entry and what comes out: :class:`TrainStepConfig`, :class:`TrainStepOutput`.

Its own module so that the step (:mod:`mdctr.steps.train_model`) and the TrainJob task
(:mod:`mdctr.steps.trainjob_task`), which the step hands an entry to, share them without importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mdctr.training.entry_result import EntryResult

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
            TrainJob of ``train_nodes`` pods (DDP, :mod:`mdctr.steps.trainjob_task`) and reads its results back.
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

    @classmethod
    def of(cls, result: EntryResult, *, bundle_dir: Path, results_dir: Path) -> TrainStepOutput:
        """The step's output for the entry ``result`` written to ``bundle_dir`` and ``results_dir``."""
        return cls(
            bundle_dir=bundle_dir,
            results_dir=results_dir,
            run_id=result.run_id,
            metrics=result.scalars(),
            flops=result.flops,
            width=result.width,
        )


def is_main_rank() -> bool:
    """Rank 0 of a ``torchrun`` job (``RANK`` unset: a plain process): the one that logs and writes."""
    return int(os.environ.get("RANK", "0")) == 0
